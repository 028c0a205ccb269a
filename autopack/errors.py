"""Errors that reach the user: each has an exit code and a one-line message.

Library modules raise these; the CLI prints ``str(error)`` as one stderr line and
exits with ``error.exit_code`` (contract 4 in DESIGN.md).
"""

from autopack.text import MESSAGE_MAX_CHARS, head_tail

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 4
EXIT_BUSY = 75
EXIT_INTERRUPTED = 130


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


class EnvironmentProblem(AutopackError):
    """Something outside the input is wrong: database version, git, API key (exit 4)."""

    exit_code = EXIT_ENVIRONMENT


class MigrationNeeded(EnvironmentProblem):
    """The database must be migrated before this command can use it."""


class Busy(AutopackError):
    """Another executor holds the lock for this run (exit 75: try later)."""

    exit_code = EXIT_BUSY


class Interrupted(AutopackError):
    """Stopped by SIGINT/SIGTERM (exit 130)."""

    exit_code = EXIT_INTERRUPTED
