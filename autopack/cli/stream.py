"""The ``--events FILE|-`` option of the executing commands: where the JSON Lines event stream goes."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import IO, Annotated, Optional

import typer

from autopack.errors import UsageError
from autopack.text import shown

EventsOption = Annotated[Optional[str], typer.Option(
    "--events", metavar="FILE|-",
    help="Write every progress event as one JSON object per line (flushed) to FILE, or to stdout with '-' "
         "(the progress view then goes to stderr).", show_default=False)]


def open_events(target: str | None) -> IO[str] | None:
    """The stream for ``--events``: stdout for '-', else FILE created or truncated; a path that cannot be
    written is a usage error naming it (raised before anything is recorded)."""
    if target is None:
        return None
    if target == "-":
        return sys.stdout
    from autopack.userfiles import open_output

    try:
        return io.TextIOWrapper(open_output(Path(target)), encoding="utf-8", line_buffering=True)
    except OSError as error:
        raise UsageError(f"--events {shown(target, quote=False)}: cannot write the event stream: "
                         f"{error.strerror or error}") from None


def refuse_events(target: str | None, why: str) -> None:
    """A usage error when ``--events`` is given with an option it cannot work with."""
    if target is not None:
        raise UsageError(f"--events {shown(target, quote=False)}: {why}")
