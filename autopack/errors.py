"""Errors that reach the user: each has an exit code and a one-line message.

Library modules raise these; the CLI prints ``str(error)`` as one stderr line and
exits with ``error.exit_code`` (contract 4 in DESIGN.md). Any other exception is a bug
in autopack: the CLI says so in one line, names the log holding the traceback and exits
with EXIT_INTERNAL_ERROR.
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from autopack.text import MESSAGE_MAX_CHARS, head_tail

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 4
EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE (sysexits.h): an unexpected error, a bug in autopack
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130
# What the file system answers when it refuses a write for reasons outside autopack, and what to do.
_FREE_SPACE = "free disk space (or raise the file size limit)"
FILE_SYSTEM_REFUSALS = {errno.ENOSPC: _FREE_SPACE, errno.EDQUOT: _FREE_SPACE, errno.EFBIG: _FREE_SPACE,
                        errno.EIO: _FREE_SPACE, errno.EROFS: "make it writable", errno.EACCES: "make it writable",
                        errno.EPERM: "make it writable"}


class AutopackError(Exception):
    """Base class: a failure explained in one line (whitespace collapsed, at most MESSAGE_MAX_CHARS)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        super().__init__(head_tail(" ".join(str(message).split()), MESSAGE_MAX_CHARS, " … "))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(AutopackError):
    """Bad usage or invalid input: plan, cassette, config, flags (exit 2)."""

    exit_code = EXIT_USAGE


class PlanError(UsageError):
    """An invalid plan file."""


class ConfigError(UsageError):
    """An invalid setting in autopack.toml, pyproject.toml or the environment."""


class CassetteError(UsageError):
    """An unreadable or malformed cassette file."""


class NoSuchRun(UsageError):
    """A run id that the database does not hold (exit 2)."""

    def __init__(self, run_id: str, db: object):
        super().__init__(f"no run '{run_id}' in {db}; `autopack status` lists the runs")


class EnvironmentProblem(AutopackError):
    """Something outside the input is wrong: database version, git, API key (exit 4)."""

    exit_code = EXIT_ENVIRONMENT


class MigrationNeeded(EnvironmentProblem):
    """The database must be migrated before this command can use it."""


class Busy(AutopackError):
    """Another executor holds the lock for this run (exit 75: try later)."""

    exit_code = EXIT_BUSY


class TransitionRefused(AutopackError):
    """A phase or attempt was not in a state the change may leave: another executor (or command)
    changed it first. Nothing was written (exit 75: try again)."""

    exit_code = EXIT_BUSY


class Interrupted(AutopackError):
    """Stopped by SIGINT/SIGTERM (exit 130)."""

    exit_code = EXIT_INTERRUPTED


@contextmanager
def writing(path: Path | str, what: str) -> Iterator[None]:
    """While writing ``what`` (a log, a patch, a report) to ``path``: the file system refusing the write
    (disk full, file too large, read-only, no permission) is an EnvironmentProblem naming the file.
    Any other OSError (a missing directory, a wrong path) is autopack's bug and passes unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in FILE_SYSTEM_REFUSALS:
            raise
        raise EnvironmentProblem(f"{error.filename or path}: cannot write {what}: {error.strerror or error}; "
                                 f"{FILE_SYSTEM_REFUSALS[error.errno]} and run the command again (an attempt cut "
                                 "short is recovered by the next run or drain)") from None
