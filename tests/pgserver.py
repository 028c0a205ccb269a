"""A real PostgreSQL server for the tests: started once per session by scripts/pg-server, one
fresh database per test.

Where no server can be started the PostgreSQL cases are skipped with the reason, except under
``AUTOPACK_CI=1``, where they fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-server"
_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a throwaway server's ``postgres`` database (unix socket, trust authentication)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        _unavailable(started.stderr.strip() or f"scripts/pg-server exited {started.returncode}")
    url = started.stdout.strip()
    try:
        yield url
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", server_dir(url)], capture_output=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A URL to a new, empty database on the session's server; dropped after the test."""
    import psycopg

    name = f"autopack_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(pg_server, name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(server_url: str, name: str) -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def server_dir(url: str) -> str:
    return url.split("host=", 1)[1].split("&", 1)[0]


def _unavailable(reason: str) -> None:
    message = f"no PostgreSQL server for the tests: {reason}"
    if os.environ.get("AUTOPACK_CI") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
