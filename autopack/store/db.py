"""The SQLite engine: pragmas, transaction modes and error translation (PostgreSQL's: store.pg_engine).

SQLite specifics live here and nowhere else. Write transactions start with
``BEGIN IMMEDIATE`` so two processes never both read-then-write the same rows;
read transactions use a plain ``BEGIN`` and never block writers under WAL.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import QueuePool
from sqlmodel import Session

from autopack.store.sql import CorruptValue, damaged_database, database_error
from autopack.text import to_json

BUSY_TIMEOUT_MS = 60_000


def make_engine(path: Path) -> Engine:
    """An engine for the database file at ``path`` with WAL, busy timeout and foreign keys.

    Connections are pooled (one per thread at a time; the heartbeat thread has its own):
    closing SQLite's last connection checkpoints the WAL and syncs the file, which a fresh
    connection per transaction paid every time (~40 % of a phase's wall time on a disk).
    """
    engine = create_engine(f"sqlite:///{path}", poolclass=QueuePool, pool_size=2, max_overflow=4,
                           connect_args={"check_same_thread": False}, json_serializer=to_json)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # read-only directory: stays in rollback-journal mode, reads still work
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "BEGIN")
        conn.exec_driver_sql(mode)

    return engine


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one ``BEGIN IMMEDIATE`` transaction, committed on success."""
    with translate_errors(engine), Session(
        engine.execution_options(sqlite_begin="BEGIN IMMEDIATE"), expire_on_commit=False
    ) as session:
        with session.begin():
            yield session


class Transactions:
    """Composable write transactions on one engine, like sqlite-utils' ``atomic()``: the outermost
    block of a thread is one ``BEGIN IMMEDIATE`` ... ``COMMIT``, a block inside it a ``SAVEPOINT``
    (an error rolls back to it, and the outer block may go on). Each thread has its own: the
    heartbeat thread's writes never join the main thread's transaction."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._local = threading.local()

    @contextmanager
    def atomic(self) -> Iterator[Session]:
        session = getattr(self._local, "session", None)
        if session is not None:
            with session.begin_nested():
                yield session
            return
        with write_session(self.engine) as session:
            self._local.session = session
            try:
                yield session
            finally:
                self._local.session = None


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reads; objects stay usable after it closes."""
    with translate_errors(engine), Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn SQLite's low-level failures, and stored values a column cannot hold, into one-line errors
    naming the file (on PostgreSQL: the URL, password hidden; see store.pg_engine)."""
    if engine.dialect.name == "postgresql":
        from autopack.store.pg_connect import translate_pg_errors
        from autopack.store.pg_engine import engine_location

        with translate_pg_errors(engine_location(engine)):
            yield
        return
    try:
        yield
    except DatabaseError as exc:
        raise database_error(engine.url.database, exc.orig or exc) from exc
    except CorruptValue as exc:
        raise damaged_database(engine.url.database, exc) from None
