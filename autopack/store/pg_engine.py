"""The PostgreSQL engine: connection settings, the database clock and error translation.

PostgreSQL specifics of the write side live here, as db.py holds SQLite's. There is no
``BEGIN IMMEDIATE``: a read-then-write transaction locks what it reads (``FOR UPDATE``,
``pg_advisory_xact_lock``); claims skip rows another executor has locked.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from autopack.errors import AutopackError, EnvironmentProblem
from autopack.store.location import PostgresUrl
from autopack.text import to_json

INSTALL = "install autopack[postgresql] (pip install 'autopack[postgresql]')"
# A dead peer is noticed within ~idle + interval * count seconds; a session idle this long is ended by the server
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
CONNECT_TIMEOUT_S = 10


def require_psycopg(url: PostgresUrl) -> None:
    """EnvironmentProblem (exit 4) naming the fix when the PostgreSQL driver is not installed."""
    import importlib

    try:
        importlib.import_module("psycopg")
    except ImportError:
        raise EnvironmentProblem(f"{url}: a PostgreSQL store needs psycopg; {INSTALL}") from None


def connect_args(role: str = "", options: str = "") -> dict[str, Any]:
    """libpq parameters of every autopack connection: who it is (pg_stat_activity shows
    ``autopack pid N on HOST``), keepalives, a connect timeout and UTC as the session's time zone."""
    name = f"autopack pid {os.getpid()} on {socket.gethostname()}{role}"
    return {"application_name": name[:63], "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c TimeZone=UTC {options}".strip(), **KEEPALIVES}


def make_pg_engine(url: PostgresUrl) -> Any:
    """A pooled engine (psycopg 3) for the database at ``url``."""
    require_psycopg(url)
    from sqlalchemy import create_engine

    return create_engine(url.sqlalchemy_url, json_serializer=to_json, pool_pre_ping=True, pool_size=2,
                         max_overflow=6, connect_args=connect_args())


def engine_location(engine: Any) -> PostgresUrl:
    """The location an engine of ``make_pg_engine`` connects to (``str()`` hides its password)."""
    from urllib.parse import unquote

    rendered = unquote(engine.url.render_as_string(hide_password=False))
    return PostgresUrl(rendered.replace("postgresql+psycopg://", "postgresql://", 1))


def connect(url: PostgresUrl, *, autocommit: bool = False, role: str = "", options: str = "") -> Any:
    """A psycopg connection of its own (not the pool's), with ``connect_args`` (and server ``options``,
    e.g. ``-c idle_session_timeout=60s``); errors translated."""
    require_psycopg(url)
    import psycopg

    with translate_pg_errors(url):
        return psycopg.connect(url.libpq_url, autocommit=autocommit, **connect_args(role, options))


def database_now(session: Any) -> datetime:
    """The database server's clock (its transaction's start), timezone-aware: leases and heartbeats
    of executors on several hosts are compared on one clock."""
    from sqlalchemy import func, select

    value = session.execute(select(func.now())).scalar_one()
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def advisory_key(text: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_*lock`` from a name (the same on every host and version)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def xact_lock(session: Any, name: str) -> None:
    """Hold ``pg_advisory_xact_lock`` on ``name`` until the transaction ends (serializes inserts of absent rows)."""
    from sqlalchemy import func, select

    session.execute(select(func.pg_advisory_xact_lock(advisory_key(name))))


@contextmanager
def translate_pg_errors(url: PostgresUrl | str) -> Iterator[None]:
    """Turn psycopg's failures (raw or wrapped by SQLAlchemy) into one-line errors naming the redacted URL."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    from autopack.store.sql import CorruptValue

    try:
        yield
    except CorruptValue as exc:
        raise EnvironmentProblem(f"{url}: the database is damaged: a value ({exc.value!r:.60}) is not what its "
                                 "column holds; restore a backup (pg_dump) or fix that value with psql") from None
    except DBAPIError as exc:
        if isinstance(exc.orig, psycopg.Error):
            raise pg_error(url, exc.orig) from None
        raise
    except psycopg.Error as exc:
        raise pg_error(url, exc) from None


def pg_error(url: PostgresUrl | str, exc: BaseException) -> AutopackError:
    """The one-line error for a PostgreSQL failure: the environment's (exit 4), or autopack's own bug."""
    import psycopg

    text = _first_line(exc, url)
    if isinstance(exc, psycopg.IntegrityError):  # autopack's own write broke a constraint; it was rolled back
        return AutopackError(f"{url}: a write was refused and rolled back ({text}); "
                             "this is a bug in autopack, please report it")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return EnvironmentProblem(f"{url}: cannot use the PostgreSQL server: {text}; check that it runs, that "
                                  "the URL's host, port, user, password and database are right, then run the "
                                  "command again")
    return EnvironmentProblem(f"{url}: {text}; is this an autopack database? (`autopack migrate --db URL` creates one)")


def _first_line(exc: BaseException, url: PostgresUrl | str) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    password = _password(url)
    return text.replace(password, "***") if password else text


def _password(url: PostgresUrl | str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url.url).password if isinstance(url, PostgresUrl) else None
