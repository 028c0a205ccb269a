"""Options shared by every command, the settings they resolve to, and the checks of option values.

``number_option`` is every numeric option (its range in --help, a value outside it a usage
error naming the option and the range); ``ID`` checks every option that names a run or a
phase (an empty one is an unset variable, never "all runs").
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from autopack.bounds import Bounds
from autopack.plan_checks import ID_RULE, RUN_ID_PATTERN
from autopack.text import shown

DbOption = Annotated[
    Optional[str],
    typer.Option("--db", help="SQLite state file (default: .autopack/autopack.db at the git repository root), "
                 "or a postgresql:// URL.", show_default=False),
]
SandboxOption = Annotated[
    Optional[str],
    typer.Option("--sandbox", metavar="none|bwrap", show_default=False,
                 help='Run every test command unconfined ("none") or in a bubblewrap sandbox ("bwrap"); '
                      "overrides the sandbox setting (a plan's run.sandbox may still tighten it)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (contract 4).")]

COST_USD = Bounds(0, 1_000_000, integer=False)  # --max-cost
MINUTES = Bounds(0, 366 * 24 * 60, integer=False)  # a year
COUNT = Bounds(1, 1_000_000)
_ID = re.compile(RUN_ID_PATTERN)


def number_option(*names: str, bounds: Bounds, help: str, **options: Any) -> Any:
    """A typer option taking a number within ``bounds``, its range appended to ``help``."""

    def parse(text: object) -> int | float:
        try:
            return bounds.parse(text)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from None

    metavar = "INT" if bounds.integer else "NUMBER"
    return typer.Option(*names, parser=parse, metavar=metavar, help=f"{help} Range: {bounds.span}.", **options)


def ids(separator: str | None = None) -> Callable[[str], str]:
    """A parser for an option naming runs or phases: ``text`` (each part, with ``separator``) must be an id."""

    def parse(text: str) -> str:
        if not text.strip():
            raise typer.BadParameter("is empty (an unset variable?); give the id")
        for part in text.split(separator) if separator else [text]:
            part = part.strip() if separator else part
            if not part:
                raise typer.BadParameter(f"{shown(text)} has an empty id (an unset variable?)")
            if not _ID.fullmatch(part):
                raise typer.BadParameter(f"{shown(part)} is not an id ({ID_RULE})")
        return text

    return parse


ID = ids()


_STATE_DIRS: list[Path] = []  # where this invocation's database lives, once its settings are loaded


def load(db: str | Path | None, **overrides: Any) -> Any:
    """Settings for this invocation: flags > AUTOPACK_* env > autopack.toml > defaults.

    A database path that is not a regular file is refused here, before anything else.
    """
    from autopack.config import load_settings
    from autopack.store import check_database_path

    settings = load_settings(Path.cwd(), {"db": str(db) if db else None, **overrides})
    source = settings.sources["db"]
    label = {"flag": f"--db {settings.db}", "env": f"AUTOPACK_DB={settings.db}",
             "default": str(settings.db)}.get(source, f"{source}: db = {settings.db}")
    if isinstance(settings.db, Path):
        check_database_path(settings.db, label)
    _STATE_DIRS.append(settings.state_dir)
    return settings


def state_dir() -> Path | None:
    """This invocation's state directory (the database's), once known: where a crash log goes."""
    return _STATE_DIRS[-1] if _STATE_DIRS else None
