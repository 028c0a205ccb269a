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

from autopack.errors import AutopackError, EnvironmentProblem
from autopack.store.location import PostgresUrl
from autopack.store.sql import POSTGRESQL, CorruptValue, first_line

CONNECT_TIMEOUT_S = 10  # unless the URL sets connect_timeout
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


def connect(url: PostgresUrl, **options: Any) -> Any:
    """A psycopg connection to ``url`` (session time zone UTC), or EnvironmentProblem (exit 4) saying
    why not and what to do; psycopg missing is one too."""
    try:
        import psycopg
    except ImportError:
        raise EnvironmentProblem(f"{url}: a PostgreSQL store needs psycopg; install autopack[postgresql] "
                                 "(pip install 'autopack[postgresql]')") from None
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url.libpq_url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        # UTC: timestamps compare with naive UTC text as on SQLite; no JIT: it costs more than short reads gain
        params["options"] = f"{params.get('options', '')} -c TimeZone=UTC -c jit=off".strip()
        return psycopg.connect(**params, **options)
    except psycopg.Error as error:
        raise EnvironmentProblem(f"{url}: cannot connect to the PostgreSQL server: {_reason(error)}; check the "
                                 "URL (--db, the db setting or AUTOPACK_DB) and that the server is running") from None


@contextmanager
def translate_pg_errors(url: PostgresUrl) -> Iterator[None]:
    """psycopg's failures, and stored values that cannot be decoded, as one-line errors naming the store."""
    import psycopg

    try:
        yield
    except psycopg.Error as error:
        raise pg_error(url, error) from None
    except CorruptValue as exc:
        raise EnvironmentProblem(f"{url}: the database is damaged: a value ({exc.value!r:.80}) is not what its "
                                 "column holds; restore a backup of the database, or fix that value with psql, "
                                 "then run the command again") from None


def pg_error(url: PostgresUrl, error: Exception) -> AutopackError:
    """The one-line error for a PostgreSQL failure: the environment's (exit 4), or autopack's own bug."""
    import psycopg.errors as pe

    if isinstance(error, pe.IntegrityError):
        return AutopackError(f"{url}: a write was refused and rolled back ({_reason(error)}); "
                             "this is a bug in autopack, please report it")
    if isinstance(error, (pe.UndefinedTable, pe.UndefinedColumn)):
        return EnvironmentProblem(f"{url}: {_reason(error)}; is this an autopack database? "
                                  f"`autopack migrate --db URL` creates or upgrades its schema")
    if isinstance(error, pe.InsufficientPrivilege):
        return EnvironmentProblem(f"{url}: {_reason(error)}; grant the user access to autopack's tables")
    return EnvironmentProblem(f"{url}: {_reason(error)}")


def _reason(error: Exception) -> str:
    return first_line(error).removeprefix("connection failed: ")


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


class PgReader:
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

    def close(self) -> None:
        self.connection.close()  # ends the read transaction; nothing was written

    def __enter__(self) -> "PgReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
