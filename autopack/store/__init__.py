"""The state store: one SQLite file holding runs, phases, attempts, test runs and the LLM ledger.

The only package that imports sqlmodel/sqlalchemy, which take ~0.5 s to load: importing
this package does not load them; ``open_store`` does, and only when there is a database.
Read commands use ``open_reader``, which never loads them (see ``store.sql``).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopack.errors import EnvironmentProblem, UsageError
from autopack.text import shown

if TYPE_CHECKING:
    from autopack.store.runs import Store
    from autopack.store.sql import Reader

STATUS_SCHEMA = 1  # of `autopack status --json` (contract 4); fields are only ever added
ACTIVE_STATES = ("executing", "ci_running", "gate")  # a phase an executor is working on


def open_store(path: Path, *, create: bool = True) -> Store | None:
    """Open the database at ``path``, creating it at the latest schema when missing and ``create``.

    Returns None when it does not exist and ``create`` is False (read commands on no data).
    Raises MigrationNeeded / EnvironmentProblem (exit 4) for a database that needs
    migrating or was written by a newer autopack.
    """
    if not create and database_absent(Path(path)):
        return None
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


def open_reader(path: Path) -> Reader | None:
    """A read-only view of the database at ``path``; None when it does not exist yet.

    Refuses, as ``open_store`` does, a database that needs migrating or that a newer autopack wrote.
    """
    if database_absent(Path(path)):
        return None
    from autopack.store.migrations import check_current, inspect_database
    from autopack.store.sql import Reader

    status = inspect_database(path)
    if status.fresh:
        return None
    check_current(path, status)
    return Reader.open(path)


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
