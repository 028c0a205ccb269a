"""The PostgreSQL engine: the pool, the database clock and transaction locks (connections and error
translation: store.pg_connect).

PostgreSQL specifics of the write side live here, as db.py holds SQLite's. There is no
``BEGIN IMMEDIATE``: a read-then-write transaction locks what it reads (``FOR UPDATE``,
``pg_advisory_xact_lock``); claims skip rows another executor has locked.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from autopack.store.location import PostgresUrl
from autopack.store.pg_connect import CONNECT_TIMEOUT_S, connect_args, require_psycopg
from autopack.text import to_json


def make_pg_engine(url: PostgresUrl) -> Any:
    """A pooled engine (psycopg 3) for the database at ``url``."""
    require_psycopg(url)
    from sqlalchemy import create_engine

    return create_engine(url.sqlalchemy_url, json_serializer=to_json, pool_pre_ping=True, pool_size=2,
                         max_overflow=6,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S, **connect_args()})


def engine_location(engine: Any) -> PostgresUrl:
    """The location an engine of ``make_pg_engine`` connects to (``str()`` hides its password)."""
    from urllib.parse import unquote

    rendered = unquote(engine.url.render_as_string(hide_password=False))
    return PostgresUrl(rendered.replace("postgresql+psycopg://", "postgresql://", 1))


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
