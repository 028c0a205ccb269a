"""The error boundary's last resort: an unexpected error is a bug in autopack, reported in one line.

The full traceback goes to a crash log, ``<state dir>/crash/<UTC time>-<pid>.log`` when this
invocation's state directory exists (it is git-ignored), else the same name under the system's
temporary directory; the line names it. Exit code: errors.EXIT_INTERNAL_ERROR.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

from autopack import __version__


def report_crash(exc: BaseException, state_dir: Path | None) -> None:
    """Write ``exc``'s crash log and say where it is, in one stderr line (the traceback follows the
    line only when no log could be written)."""
    what = f"internal error ({type(exc).__name__}): this is a bug in autopack, not a problem with your input"
    try:
        log = write_crash_log(exc, state_dir)
    except OSError as error:
        print(f"autopack: error: {what}; the traceback could not be saved ({error.strerror or error}):",
              file=sys.stderr)
        traceback.print_exception(exc)
        return
    print(f"autopack: error: {what}; the traceback is in {log}; please report it with that file", file=sys.stderr)


def write_crash_log(exc: BaseException, state_dir: Path | None) -> Path:
    """The log: the command, versions and the traceback; under ``state_dir`` when it exists."""
    now = datetime.now(timezone.utc)
    base = state_dir if state_dir is not None and state_dir.is_dir() else Path(tempfile.gettempdir()) / "autopack"
    path = base / "crash" / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"autopack {__version__} crashed at {now.isoformat()}",
              f"command: {' '.join(['autopack', *sys.argv[1:]])}",
              f"python {platform.python_version()} on {platform.platform()}", ""]
    body = "".join(traceback.format_exception(exc))
    path.write_text("\n".join(header) + body, encoding="utf-8", errors="backslashreplace")
    return path
