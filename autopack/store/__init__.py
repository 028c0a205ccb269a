"""The state store: one SQLite file holding runs, phases, attempts, test runs and the LLM ledger.

The only package that imports sqlmodel/sqlalchemy. Importing it is deferred by callers
(the CLI imports it inside commands) because SQLAlchemy takes ~0.3 s to load.
"""

from __future__ import annotations

from pathlib import Path

from autopack.store.migrations import check_current, inspect_database, migrate
from autopack.store.runs import Store


def open_store(path: Path, *, create: bool = True) -> Store | None:
    """Open the database at ``path``, creating it at the latest schema when missing and ``create``.

    Returns None when it does not exist and ``create`` is False (read commands on no data).
    Raises MigrationNeeded / EnvironmentProblem (exit 4) for a database that needs
    migrating or was written by a newer autopack.
    """
    status = inspect_database(path)
    if status.fresh:
        if not create:
            return None
        migrate(path)
    else:
        check_current(path, status)
    return Store(path)


__all__ = ["Store", "open_store", "migrate", "inspect_database"]
