"""Shared fixtures for the end-to-end tests: throwaway git projects and the real CLI.

Every CLI call is a real subprocess (``python -m autopack``) with a scrubbed environment:
no API key, no AUTOPACK_* settings, and an empty HOME so nothing depends on this
machine's git configuration.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "calc"
GIT_IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t")
SEED_VARIABLE = "AUTOPACK_TEST_SEED"
pytest_plugins = ["pgserver"]  # pg_server / pg_url: a real PostgreSQL server, one database per test


def chosen_seed(default: int) -> int:
    """The seed of a randomised schedule (chaos kills, cron start offsets): $AUTOPACK_TEST_SEED
    when set, to replay a failure or try another schedule, else the test's own ``default``."""
    value = os.environ.get(SEED_VARIABLE, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"{SEED_VARIABLE}={value!r}: expected an integer seed") from None


def pytest_report_header() -> str:
    return f"{SEED_VARIABLE}: {os.environ.get(SEED_VARIABLE) or 'unset (each test uses its own seed)'}"


def cli_env(home: Path) -> dict[str, str]:
    """os.environ without the API key or autopack settings, with HOME at an empty directory."""
    env = {name: value for name, value in os.environ.items()
           if name != "ANTHROPIC_API_KEY" and not name.startswith(("AUTOPACK_", "GIT_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), GIT_CONFIG_NOSYSTEM="1")
    return env


def rows(db: Path | str, sql: str, *params: Any) -> list[tuple]:
    """Query the store read-only, the way an outside tool would: a SQLite file, or a
    ``postgresql://`` URL (``?`` placeholders either way)."""
    if str(db).startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(str(db), autocommit=True) as pg:
            return [tuple(row) for row in pg.execute(sql.replace("?", "%s"), params).fetchall()]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in ``cwd`` (with a throwaway identity); return stdout stripped; raise on failure."""
    done = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``--db`` of a test that must hold on both stores: a SQLite file, then a database on a
    real PostgreSQL server (skipped, with the reason, only where none can be started; failed in CI)."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "autopack.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment every CLI call runs with."""
    return cli_env(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def make_git_project(base_env: dict[str, str]) -> Callable[[Path], Path]:
    """Turn a directory into a git repository on ``main`` with everything in one commit."""

    def make(directory: Path) -> Path:
        git(directory, "init", "-q", "-b", "main", env=base_env)
        git(directory, "add", "-A", env=base_env)
        git(directory, "commit", "-q", "-m", "initial", env=base_env)
        return directory

    return make


@pytest.fixture(scope="session")
def make_calc_project(make_git_project: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Copy examples/calc to ``<parent>/calc`` and make it a git repository; returns its path."""

    def make(parent: Path) -> Path:
        project = parent / "calc"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        return make_git_project(project)

    return make


@pytest.fixture
def calc_project(tmp_path: Path, make_calc_project: Callable[[Path], Path]) -> Path:
    """A fresh copy of the calc example as a git repository with one commit."""
    return make_calc_project(tmp_path)


@pytest.fixture(scope="session")
def autopack(base_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``autopack(*args, cwd=..., env=None, timeout=120)``: run the CLI, return the CompletedProcess."""

    def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "autopack", *args], cwd=cwd,
                              env=base_env if env is None else env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    return run


@pytest.fixture(scope="session")
def ran_calc_example(make_calc_project: Callable[[Path], Path],
                     autopack: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[[Path], Path]:
    """Make the calc example under ``parent`` and run its plan to the end (asserted); returns the project."""

    def make(parent: Path) -> Path:
        project = make_calc_project(parent)
        done = autopack("run", "plan.toml", cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
        return project

    return make


def git_killed_at(step: str, directory: Path, kill: str = "$PPID") -> dict[str, str]:
    """Environment variables that make git SIGKILL ``kill`` (a pid; "0": the whole process group)
    the moment it starts its sub-command ``step`` (e.g. ``git worktree add`` runs ``symbolic-ref``
    while the new worktree's HEAD is still detached, then ``reset`` to check it out), as a kill
    landing there would. Deterministic: git looks its sub-commands up in GIT_EXEC_PATH."""
    real = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    directory.mkdir(parents=True, exist_ok=True)
    fake = directory / "git"
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "{step}" ]; then kill -KILL {kill}; exit 1; fi\n'
                    f'exec "{real}/git" "$@"\n')
    fake.chmod(0o755)
    return {"GIT_EXEC_PATH": str(directory)}


def suite_of_a_sigkilled_autopack(tmp_path: Path, command: str, ready: Callable[[], bool], what: str) -> Callable[[str], Any]:
    """Run ``command`` as a test suite in a forked autopack (a session of its own) and SIGKILL that
    autopack once ``ready()`` holds; return ``suite(command)``, which runs the next suite of the same
    run (the same log directory) in this process."""
    import signal
    import time

    from autopack.testrun import run_tests

    project = tmp_path / "project"
    project.mkdir()

    def suite(command: str) -> Any:
        return run_tests(command, project, timeout_s=120, log_path=tmp_path / "logs" / "suite.log",
                         junit_path=tmp_path / "junit.xml")

    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            suite(command)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while not ready():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return suite
