"""The state store: one SQLite file holding runs, phases, attempts, test runs and the LLM ledger.

The only package that imports sqlmodel/sqlalchemy, which take ~0.5 s to load: importing
this package does not load them; ``open_store`` does, and only when there is a database.
Read commands use ``open_reader``, which never loads them (see ``store.sql``).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopack.domain.lifecycle import ACTIVE_STATES
from autopack.errors import EnvironmentProblem, UsageError
from autopack.store.location import PostgresUrl, StoreLocation
from autopack.text import shown

if TYPE_CHECKING:
    from autopack.store.runs import Store
    from autopack.store.pg import PgReader
    from autopack.store.sql import Reader

STATUS_SCHEMA = 1  # of `autopack status --json` (contract 4); fields are only ever added
CONFIRMED_TEST_RUN = "confirmed"  # a test run's kind: outcomes derived from a run and its re-runs, not executed
STATE_DIR_IGNORE = "# autopack's state: never committed\n*\n"
DEFAULT_STATE_DIR_NAME = ".autopack"  # config's default place for the database


def open_store(path: StoreLocation, *, create: bool = True) -> Store | None:
    """Open the database at ``path`` (a file, or a ``PostgresUrl``), creating it at the latest schema
    when missing and ``create``.

    Returns None when it does not exist and ``create`` is False (read commands on no data).
    Raises MigrationNeeded / EnvironmentProblem (exit 4) for a database that needs
    migrating or was written by a newer autopack, or a server that cannot be used.
    """
    if isinstance(path, PostgresUrl):
        return _open_pg_store(path, create)
    if not create and database_absent(Path(path)):
        return None
    repair_state_dir(Path(path).parent)
    from autopack.store.migrations import check_current, inspect_database, migrate
    from autopack.store.runs import Store

    status = inspect_database(path)
    if status.fresh:
        if not create:
            return None
        migrate(path)
    else:
        check_current(path, status)
    return Store(path)


def _open_pg_store(url: PostgresUrl, create: bool) -> Store | None:
    from autopack.store.migrations import check_current, inspect_database, migrate
    from autopack.store.runs import Store

    status = inspect_database(url)
    if status.fresh:
        if not create:
            return None
        migrate(url)
    else:
        check_current(url, status)
    return Store(url)


def open_reader(path: StoreLocation) -> Reader | PgReader | None:
    """A read-only view of the database at ``path`` (a file, or a PostgreSQL URL); None when it does
    not exist yet (no file; no autopack schema in the PostgreSQL database).

    Refuses, as ``open_store`` does, a database that needs migrating or that a newer autopack wrote.
    """
    if isinstance(path, PostgresUrl):
        from autopack.store.pg import open_pg_reader

        return open_pg_reader(path)
    if database_absent(Path(path)):
        return None
    repair_state_dir(Path(path).parent)
    from autopack.store.migrations import check_current, inspect_database
    from autopack.store.sql import Reader

    status = inspect_database(path)
    if status.fresh:
        return None
    check_current(path, status)
    return Reader.open(path)


def check_database_path(path: Path, label: str) -> None:
    """Refuse a database path that exists but is not a regular file (a directory, a device, a FIFO):
    SQLite's own error would read as a full disk. ``label`` names where the path came from."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing (created when needed) or unreachable: opening it says why
    if stat.S_ISREG(mode):
        return
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    raise UsageError(f"{label}: {kind}, not a regular file; give the path of a database file "
                     "(it is created when missing)")


def make_state_dir(directory: Path) -> None:
    """Create the directory for a new database, its .gitignore in it before anything else."""
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        repair_state_dir(directory)  # another process's, or what a kill left: perhaps no .gitignore yet
        return
    _write_ignore(directory)


def repair_state_dir(directory: Path) -> None:
    """Put back the .gitignore a kill (or a user) left missing or cut short, so the user's checkout
    never shows autopack's state as untracked. Only in a directory named .autopack, the default: a
    database elsewhere may share its directory with the user's files."""
    if directory.name != DEFAULT_STATE_DIR_NAME:
        return
    try:
        if (directory / ".gitignore").read_text(encoding="utf-8") == STATE_DIR_IGNORE:
            return
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: written again below
    try:
        _write_ignore(directory)
    except OSError:
        pass  # a read-only state directory: reading goes on, and the next command that can write repairs it


def _write_ignore(directory: Path) -> None:
    from autopack.edits import atomic_write  # a temp file renamed into place: never a partial .gitignore

    atomic_write(directory / ".gitignore", STATE_DIR_IGNORE.encode(), None)


def database_absent(path: Path) -> bool:
    """No database yet: no file, or an empty one (SQLite creates the schema in an empty file).

    A path that cannot name a file (too long, through a file, a symlink loop) is a usage error.
    """
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError as error:
        unusable = error.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP)
        raise (UsageError if unusable else EnvironmentProblem)(f"{shown(str(path), quote=False)}: cannot use this database path: {error.strerror}; "
                      "give --db (or the db setting) another path") from None


def __getattr__(name: str) -> Any:
    """``Store``, ``migrate`` and ``inspect_database``, loaded (with SQLAlchemy) on first use."""
    if name == "Store":
        from autopack.store.runs import Store

        return Store
    if name in ("migrate", "inspect_database"):
        from autopack.store import migrations

        return getattr(migrations, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ACTIVE_STATES", "STATUS_SCHEMA", "Store", "open_reader", "open_store", "migrate",
           "inspect_database"]
