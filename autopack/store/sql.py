"""The read side of the store: SQL over the standard library's sqlite3 (or psycopg), without SQLAlchemy.

Read commands (`status`, `pick-next`, `drain --dry-run`, `ab-test`) must answer within a
second on a large store, and loading SQLAlchemy and SQLModel alone took half of that. So
the read models (store.queries, .activity, .drainable, .metrics, .stats) are SQL text run on
a ``Readable``: a ``Reader`` (its own connection, for the read commands), a ``pg.PgReader``
(the same on PostgreSQL) or a ``Store`` (a connection from its pool, for a drain). Writes
stay in the ORM.

The read models' SQL is written once, for both databases, but for what this module supplies:
the connection, JSON fields (``json_field``, by the connection's ``dialect``) and timestamps,
stored by SQLAlchemy as naive UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``) on SQLite and read back
as datetimes from PostgreSQL (``py_time`` takes both).
"""

from __future__ import annotations

import json
import reprlib
import sqlite3
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol, Sequence

from autopack.errors import AutopackError, EnvironmentProblem

BUSY_TIMEOUT_S = 60
CHUNK = 500  # ids per IN (...) list, far under SQLite's bound-parameter limit
SUM_DIGITS = 9  # a sum of costs, rounded: the two databases add floats in different orders
SQLITE, POSTGRESQL = "sqlite", "postgresql"  # a read connection's ``dialect``


class ReadConn(Protocol):
    """What the read models use of a connection: sqlite3's ``execute``; a ``dialect`` attribute
    (absent on sqlite3's own connections, which are SQLite's)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


class Readable(Protocol):
    """Anything that lends a connection in a read transaction: a Reader, a PgReader or a Store."""

    def read(self) -> AbstractContextManager[ReadConn]: ...


def dialect(conn: ReadConn) -> str:
    """``SQLITE`` or ``POSTGRESQL``: which SQL ``conn`` takes where the two differ."""
    return getattr(conn, "dialect", SQLITE)


class Reader:
    """A read-only view of a database file: one sqlite3 connection in one read transaction, so
    everything a read command shows comes from the same snapshot. Meant to live for one command."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self.connection = connection

    @classmethod
    def open(cls, path: Path) -> "Reader":
        with translate_sqlite_errors(path):
            connection = connect_existing(path)
            try:
                connection.isolation_level = None  # the transaction is ours
                connection.execute("PRAGMA query_only=ON")
                connection.execute("BEGIN")
            except BaseException:
                connection.close()
                raise
        return cls(path, connection)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with translate_sqlite_errors(self.path):
            yield self.connection

    def close(self) -> None:
        self.connection.close()  # ends the read transaction; nothing was written

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_existing(path: Path) -> sqlite3.Connection:
    """A connection that never creates the file: read-write when allowed, so that closing it
    removes the -wal/-shm files a read opens; read-only for a file or directory we may not write."""
    conn = None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return conn
    except sqlite3.DatabaseError as problem:
        if conn is not None:
            conn.close()
        if not isinstance(problem, sqlite3.OperationalError):  # not a database: no second try
            raise
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)


@contextmanager
def translate_sqlite_errors(path: Path | str) -> Iterator[None]:
    """Turn sqlite3's failures, and stored values that cannot be decoded, into one-line errors naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise database_error(path, exc) from exc
    except CorruptValue as exc:
        raise damaged_database(path, exc) from None


def database_error(path: Path | str, exc: BaseException) -> AutopackError:
    """The one-line error for a SQLite failure: the environment's (exit 4), or autopack's own bug."""
    if isinstance(exc, sqlite3.OperationalError) and "malformed json" in str(exc).lower():
        return damaged_database(path, CorruptValue(None))  # a JSON function met a damaged column
    if isinstance(exc, sqlite3.OperationalError):
        return EnvironmentProblem(f"{path}: {first_line(exc)}{advice(str(exc))}")
    if isinstance(exc, sqlite3.IntegrityError):  # autopack's own write broke a constraint; it was rolled back
        return AutopackError(f"{path}: a write was refused and rolled back ({first_line(exc)}); "
                             "this is a bug in autopack, please report it")
    return EnvironmentProblem(f"{path}: {first_line(exc)}; is this an autopack database?")


_ADVICE = (
    (("disk i/o error", "disk is full"), "; free disk space (or raise the file size limit) and run the command "
     "again: an attempt cut short is recovered"),
    (("readonly database", "read-only"), "; make the database file and its directory writable"),
    (("unable to open database file",), "; SQLite must be able to create files beside the database: make its "
     "directory writable"),
)


def advice(error: str) -> str:
    """What to do about a SQLite failure that the environment causes ("" when there is no advice)."""
    lowered = error.lower()
    return next((text for needles, text in _ADVICE if any(n in lowered for n in needles)), "")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def db_time(when: datetime) -> str:
    """A timezone-aware datetime as stored: naive UTC text, comparable with the stored values (on
    PostgreSQL too, where the reader's session time zone is UTC)."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def py_time(stored: str | datetime | None) -> datetime | None:
    """A stored timestamp, timezone-aware UTC (None stays None): text from SQLite, a datetime from
    PostgreSQL (naive: UTC); CorruptValue when it is not one."""
    if stored is None:
        return None
    if isinstance(stored, datetime):
        return stored.replace(tzinfo=timezone.utc) if stored.tzinfo is None else stored.astimezone(timezone.utc)
    try:
        return datetime.fromisoformat(stored).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise CorruptValue(stored) from None


def stored_json(stored: str | dict[str, Any] | None, *, required: bool = True) -> dict[str, Any] | None:
    """A JSON column's object (autopack's JSON columns all hold objects): text from SQLite, decoded
    already by psycopg; None for SQL or JSON null unless ``required``; CorruptValue for anything else
    (not text, not JSON, another JSON type)."""
    if stored is None and not required:
        return None
    try:
        value = json.loads(stored) if isinstance(stored, str) else stored
    except (ValueError, RecursionError):
        value = stored
    if isinstance(value, dict) or (value is None and not required):
        return value
    raise CorruptValue(stored)


class CorruptValue(ValueError):
    """A stored value that is not what its column holds: the database is damaged."""

    def __init__(self, value: Any):
        super().__init__(value)
        self.value = value


def damaged_database(path: Path | str, exc: CorruptValue) -> EnvironmentProblem:
    """The one-line error for a damaged value: where it is (found by ``find_damaged_value``) and the way out."""
    where = find_damaged_value(path) or f"a value ({reprlib.repr(exc.value)}) that is not what its column holds"
    backups = sorted(Path(path).parent.glob(f"{Path(path).name}.backup-*"))
    restore = (f"restore {backups[-1]} (the backup `autopack migrate` wrote)" if backups
               else "restore a backup copy of it")
    return EnvironmentProblem(f"{path}: the database is damaged: {where}; {restore}, or fix that value with "
                              "sqlite3, then run the command again")


# What each declared column type must hold, as SQL true for a damaged value (CASE: evaluated in order,
# so json_type never meets text that is not JSON).
_DAMAGED = {
    "JSON": "CASE WHEN typeof({c}) != 'text' THEN 1 WHEN NOT json_valid({c}) THEN 1 "
            "WHEN json_type({c}) NOT IN ('object', 'null') THEN 1 ELSE 0 END",
    "DATETIME": "CASE WHEN typeof({c}) != 'text' THEN 1 WHEN datetime({c}) IS NULL THEN 1 ELSE 0 END",
}
_EXPECTED = {"JSON": "a JSON object", "DATETIME": "a timestamp"}


def find_damaged_value(path: Path | str) -> str | None:
    """The first stored value that its column's declared type (JSON, DATETIME) cannot hold, as
    ``table.column (rowid N) holds X, which is not ...``; None when there is none (or no way to look)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error:
        return None
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            for _, column, declared, *_ in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
                if declared.upper() in _DAMAGED:
                    test = _DAMAGED[declared.upper()].format(c=f'"{column}"')
                    row = conn.execute(f'SELECT rowid, "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL '
                                       f"AND {test} LIMIT 1").fetchone()
                    if row is not None:
                        return (f"{table}.{column} (rowid {row[0]}) holds {reprlib.repr(row[1])}, which is not "
                                f"{_EXPECTED[declared.upper()]}")
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return None


def json_field(conn: ReadConn, column: str, *path: str) -> str:
    """SQL for one scalar inside a JSON column, in ``conn``'s dialect, e.g. ``json_field(conn, "p.spec",
    "category")``. A text on PostgreSQL (``#>>`` takes json and jsonb: no cast, which would parse the whole
    value into jsonb first); keys are autopack's own names, never user input."""
    if dialect(conn) == POSTGRESQL:
        return f"({column} #>> '{{{','.join(path)}}}')"
    return f"json_extract({column}, '$.{'.'.join(path)}')"


def chunks(ids: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start:start + CHUNK])


def marks(values: Iterable[Any]) -> str:
    """``?, ?, ?`` for an IN (...) list of ``values``."""
    return ", ".join("?" for _ in values)
