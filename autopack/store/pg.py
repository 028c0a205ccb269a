"""PostgreSQL specifics for the read side: a psycopg connection that takes the read models' SQL.

The read models (store.queries, .activity, ...) write their SQL once, with ``?`` placeholders
as sqlite3 takes them; ``ReadConnection`` hands it to psycopg with ``%s`` instead, so one text
serves both drivers. psycopg is imported by whoever opens the connection, never here.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

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

    def __init__(self, connection: Any):
        self.connection = connection

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.connection.execute(pg_sql(sql), tuple(params))

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(pg_sql(sql), [tuple(p) for p in seq])
