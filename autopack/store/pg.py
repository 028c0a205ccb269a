"""PostgreSQL specifics for the read side: a psycopg connection that takes the read models' SQL,
and ``PgReader``, the read commands' snapshot of a PostgreSQL store.

The read models (store.queries, .activity, ...) write their SQL once, with ``?`` placeholders
as sqlite3 takes them; ``ReadConnection`` hands it to psycopg with ``%s`` instead, so one text
serves both drivers, and says ``dialect = "postgresql"`` where the SQL must differ
(``sql.json_field``). psycopg (~0.5 s to import) loads only when a PostgreSQL store is opened.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

from autopack.errors import EnvironmentProblem
from autopack.store.location import PostgresUrl
from autopack.store.pg_connect import connect, translate_pg_errors
from autopack.store.sql import POSTGRESQL, Snapshot

_TOKEN = re.compile(r"'(?:[^']|'')*'|\?|%")  # a quoted literal, a placeholder, a percent sign


def pg_sql(sql: str) -> str:
    """``sql`` with sqlite3's ``?`` placeholders as psycopg's ``%s``; every ``%`` doubled (psycopg reads
    them even inside quoted literals, where a ``?`` stays as it is)."""
    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        return "%s" if token == "?" else token.replace("%", "%%")
    return _TOKEN.sub(swap, sql)


class ReadConnection:
    """A psycopg connection with sqlite3's ``execute(sql, params)`` surface: what ``Readable.read()`` lends."""

    dialect = POSTGRESQL

    def __init__(self, connection: Any):
        self.connection = connection

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.connection.execute(pg_sql(sql), tuple(params))

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(pg_sql(sql), [tuple(p) for p in seq])


def applied_migrations(conn: Any) -> tuple[str, ...] | None:
    """The names in ``_migrations`` (None: no such table; ``()`` for a database without any table,
    EnvironmentProblem for one with tables of something else is the caller's: see ``inspect``)."""
    found = conn.execute("SELECT to_regclass('_migrations') IS NOT NULL").fetchone()[0]
    if not found:
        return None
    return tuple(row[0] for row in conn.execute("SELECT name FROM _migrations"))


def _has_tables(conn: Any) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
                        "WHERE schemaname = current_schema())").fetchone()[0]


def open_pg_reader(url: PostgresUrl) -> "PgReader | None":
    """``store.open_reader`` on PostgreSQL: None for a database autopack has not created its schema in,
    the refusal of ``migrations.check_current`` for one that needs migrating or a newer autopack wrote."""
    from autopack.store.migrations import MIGRATIONS, MigrationStatus, check_current

    reader = PgReader.open(url)
    try:
        applied = reader.migration_names()
        if not applied:
            reader.close()
            return None
        names = tuple(name for name, _ in MIGRATIONS)
        check_current(url, MigrationStatus(True, tuple(n for n in names if n in applied),  # type: ignore[arg-type]
                                           tuple(n for n in names if n not in applied),
                                           tuple(n for n in applied if n not in set(names))))
    except BaseException:
        reader.close()
        raise
    return reader


class PgReader(Snapshot):
    """A read-only view of a PostgreSQL store: one connection in one ``REPEATABLE READ READ ONLY``
    transaction, so everything a read command shows comes from one snapshot, as ``sql.Reader``
    does on SQLite. Meant to live for one command."""

    def __init__(self, url: PostgresUrl, connection: Any):
        self.url = url
        self.connection = connection
        self._lent = ReadConnection(connection)

    @classmethod
    def open(cls, url: PostgresUrl) -> "PgReader":
        connection = connect(url, autocommit=True)  # the transaction is ours
        try:
            with translate_pg_errors(url):
                connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except BaseException:
            connection.close()
            raise
        return cls(url, connection)

    @contextmanager
    def read(self) -> Iterator[ReadConnection]:
        with translate_pg_errors(self.url):
            yield self._lent

    def migration_names(self) -> tuple[str, ...] | None:
        """The applied migrations' names; None for an empty database (no tables: nothing stored yet).
        EnvironmentProblem for a database holding other tables but no ``_migrations``."""
        with self.read() as conn:
            names = applied_migrations(conn)
            if names is None and _has_tables(conn):
                raise EnvironmentProblem(f"{self.url}: not an autopack database (no _migrations table); "
                                         "use --db to point at another database")
        return names
