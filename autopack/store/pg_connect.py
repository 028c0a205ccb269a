"""Connections to a PostgreSQL store and its errors, for both sides: the read commands (store.pg) and
the engine (store.pg_engine). Loads no SQLAlchemy; psycopg (~0.5 s) only when a connection is made.

Every connection says who it is (``application_name`` = ``autopack pid N on HOST``, which
`pg_stat_activity` and the run lock's Busy message show), keeps TCP keepalives so a dead peer
is noticed, and works in UTC. Every error is one line naming the URL with its password hidden.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from typing import Any, Iterator

from autopack.errors import AutopackError, EnvironmentProblem
from autopack.store.location import PostgresUrl
from autopack.store.sql import CorruptValue, first_line

INSTALL = "install autopack[postgresql] (pip install 'autopack[postgresql]')"
# A silent peer is noticed within ~idle + interval * count seconds (keepalives unanswered), or when data
# sent to it stays unacknowledged for tcp_user_timeout ms (keepalives alone do not end a blocked send)
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
              "tcp_user_timeout": 25_000}
CONNECT_TIMEOUT_S = 10  # unless the URL sets connect_timeout


def require_psycopg(url: PostgresUrl) -> None:
    """EnvironmentProblem (exit 4) naming the fix when the PostgreSQL driver is not installed."""
    import importlib

    try:
        importlib.import_module("psycopg")
    except ImportError:
        raise EnvironmentProblem(f"{url}: a PostgreSQL store needs psycopg; {INSTALL}") from None


def connect_args(role: str = "", options: str = "") -> dict[str, Any]:
    """libpq parameters of every autopack connection: its name, keepalives, UTC as the session's time
    zone, no JIT (it costs short reads more than it gains) and any server ``options`` (``-c name=value``)."""
    name = f"autopack pid {os.getpid()} on {socket.gethostname()}{role}"
    return {"application_name": name[:63], "options": f"-c TimeZone=UTC -c jit=off {options}".strip(),
            **KEEPALIVES}


def connect(url: PostgresUrl, *, autocommit: bool = False, role: str = "", options: str = "") -> Any:
    """A psycopg connection of its own (not a pool's), or EnvironmentProblem (exit 4) saying why not."""
    require_psycopg(url)
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    with translate_pg_errors(url):
        params = conninfo_to_dict(url.libpq_url)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        ours = connect_args(role, options)
        ours["options"] = f"{params.pop('options', '')} {ours['options']}".strip()
        return psycopg.connect(**{**params, **ours}, autocommit=autocommit)


@contextmanager
def translate_pg_errors(url: PostgresUrl | str) -> Iterator[None]:
    """psycopg's failures (raw, or wrapped by SQLAlchemy as ``.orig``) and stored values that cannot be
    decoded, as one-line errors naming the store."""
    import psycopg

    try:
        yield
    except CorruptValue as exc:
        raise EnvironmentProblem(f"{url}: the database is damaged: a value ({exc.value!r:.80}) is not what its "
                                 "column holds; restore a backup of the database (pg_dump), or fix that value "
                                 "with psql, then run the command again") from None
    except Exception as exc:
        cause = exc if isinstance(exc, psycopg.Error) else getattr(exc, "orig", None)
        if isinstance(cause, psycopg.Error):
            raise pg_error(url, cause) from None
        raise


def pg_error(url: PostgresUrl | str, error: Exception) -> AutopackError:
    """The one-line error for a PostgreSQL failure: the environment's (exit 4), or autopack's own bug."""
    import psycopg.errors as pe

    reason = _reason(error, url)
    if isinstance(error, pe.IntegrityError):  # autopack's own write broke a constraint; it was rolled back
        return AutopackError(f"{url}: a write was refused and rolled back ({reason}); "
                             "this is a bug in autopack, please report it")
    if isinstance(error, (pe.UndefinedTable, pe.UndefinedColumn)):
        return EnvironmentProblem(f"{url}: {reason}; is this an autopack database? "
                                  "`autopack migrate --db URL` creates or upgrades its schema")
    if isinstance(error, pe.InsufficientPrivilege):
        return EnvironmentProblem(f"{url}: {reason}; grant the user access to autopack's tables")
    if isinstance(error, pe.ProgrammingError):  # SQL the server or the driver refused: autopack's own
        return AutopackError(f"{url}: a statement was refused ({reason}); this is a bug in autopack, please report it")
    if isinstance(error, (pe.OperationalError, pe.InterfaceError)):
        return EnvironmentProblem(f"{url}: cannot use the PostgreSQL server: {reason}; check that it runs and "
                                  "that the URL's host, port, user, password and database are right (--db, the "
                                  "db setting or AUTOPACK_DB), then run the command again")
    return EnvironmentProblem(f"{url}: {reason}")


def _reason(error: Exception, url: PostgresUrl | str) -> str:
    text = first_line(error).removeprefix("connection failed: ")
    password = url.password if isinstance(url, PostgresUrl) else None
    return text.replace(password, "***") if password else text
