"""Ordered, named schema migrations, recorded in the ``_migrations`` table.

A new database is created at the latest schema with every migration recorded as
applied. An existing one gets its pending migrations in order, each in one
transaction together with its record, after a backup copy is written next to it
(a SQLite file; on PostgreSQL, under ``pg_advisory_xact_lock`` and without a backup).
Add a migration by appending a decorated function; never edit or reorder one that
has shipped.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from autopack.errors import EnvironmentProblem, MigrationNeeded, writing
from autopack.store import database_absent, make_state_dir
from autopack.store.location import PostgresUrl, StoreLocation
from autopack.store.sql import advice, connect_existing, stored_json

if TYPE_CHECKING:  # SQLAlchemy loads only to migrate: read commands check the schema without it
    from sqlalchemy import Connection
    from sqlalchemy.engine import Engine

MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = []


def migration(fn: Callable[[Connection], None]) -> Callable[[Connection], None]:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(conn: Connection) -> None:
    """The schema of autopack 0.1.0; every database starts here, so it has nothing to change."""


@migration
def m002_parking_budgets_and_ledger_detail(conn: Connection) -> None:
    """Parked phases, escalated budgets, each attempt's budget; predicted tokens and HTTP status per call."""
    for table, column, kind in (
        ("phases", "parked_reason", "VARCHAR"),
        ("phases", "escalated_budget", "INTEGER"),
        ("llm_calls", "predicted_tokens", "INTEGER"),
        ("llm_calls", "http_status", "INTEGER"),
        ("attempts", "budget", "INTEGER"),
        ("attempts", "budget_source", "VARCHAR"),
    ):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


@migration
def m003_read_path_indexes(conn: Connection) -> None:
    """Indexes for read commands on a large store: usage totals from a covering index, a drain's cost by executor."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_llm_calls_run_role")  # a prefix of the covering index
    for statement in (
        "CREATE INDEX IF NOT EXISTS ix_llm_calls_run_role_usage ON llm_calls (run_id, role, input_tokens, "
        "output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)",
        "CREATE INDEX IF NOT EXISTS ix_llm_calls_attempt_id ON llm_calls (attempt_id)",
        "CREATE INDEX IF NOT EXISTS ix_attempts_executor_id ON attempts (executor_id)",
    ):
        conn.exec_driver_sql(statement)


@migration
def m004_comparable_hash_without_cassette(conn: Connection) -> None:
    """ab-test pairs runs of one plan replayed from different cassettes: recompute each run's
    comparable hash from its recorded plan, without ``run.cassette`` (plan.NOT_PLAN_CONTENT)."""
    from autopack.plan import comparable_hash

    runs = conn.exec_driver_sql("SELECT id, plan FROM runs").fetchall()
    if runs:
        conn.exec_driver_sql("UPDATE runs SET comparable_hash = ? WHERE id = ?",
                             [(comparable_hash(stored_json(plan)), run_id) for run_id, plan in runs])


@migration
def m005_builder_modes_and_transcripts(conn: Connection) -> None:
    """The builder mode of each run and attempt (NULL: recorded before modes, so single), and every
    attempt's transcript, one row per model exchange."""
    for table in ("runs", "attempts"):
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN builder VARCHAR")
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS transcript_turns (id INTEGER NOT NULL, attempt_id INTEGER NOT NULL, "
        "turn INTEGER NOT NULL, max_tokens INTEGER NOT NULL, request JSON NOT NULL, response JSON NOT NULL, "
        "created_at DATETIME NOT NULL, PRIMARY KEY (id), FOREIGN KEY(attempt_id) REFERENCES attempts (id))")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_transcript_turns_attempt_id ON transcript_turns (attempt_id)")



@migration
def m006_landings(conn: Connection) -> None:
    """`autopack land`: each landing of a run's branch into its base, or its pull request."""
    conn.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS landings (id INTEGER NOT NULL, run_id VARCHAR NOT NULL, method VARCHAR NOT NULL, "
        "base_branch VARCHAR NOT NULL, base_before VARCHAR NOT NULL, landed_commit VARCHAR NOT NULL, "
        "partial BOOLEAN NOT NULL, remote VARCHAR, pr_url VARCHAR, details JSON, created_at DATETIME NOT NULL, "
        "PRIMARY KEY (id), FOREIGN KEY(run_id) REFERENCES runs (id))")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_landings_run_id ON landings (run_id)")


@migration
def m007_derived_state(conn: Connection) -> None:
    """State that follows from other rows is derived, not stored: a run's last update (its phases')
    and an attempt's test-run count (its test_runs rows); neither column was read."""
    conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN updated_at")
    conn.exec_driver_sql("ALTER TABLE attempts DROP COLUMN test_runs")


@migration
def m008_patches_in_the_store(conn: Connection) -> None:
    """Each attempt's diff (capped) in the store, so `show` and `report` on another machine, or after
    the worktree and the local patch file are gone, still show what the attempt changed."""
    conn.exec_driver_sql("ALTER TABLE attempts ADD COLUMN patch VARCHAR")
    conn.exec_driver_sql("ALTER TABLE attempts ADD COLUMN patch_bytes INTEGER")


@migration
def m009_live_executors_index(conn: Connection) -> None:
    """`status` asks for the executors still running, a handful among every one that ever ran."""
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_executors_live ON executors (run_id, started_at) "
                         "WHERE stopped_at IS NULL")



@migration
def m010_test_logs_in_the_store(conn: Connection) -> None:
    """Each test run's log and JUnit XML (capped, compressed) in the store, for `autopack logs` on a
    machine other than the one that ran the tests, or after its state directory is gone."""
    blob = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS test_run_files (test_run_id INTEGER NOT NULL, log {blob}, "
        f"log_bytes INTEGER NOT NULL, junit {blob}, junit_bytes INTEGER NOT NULL, PRIMARY KEY (test_run_id), "
        "FOREIGN KEY(test_run_id) REFERENCES test_runs (id))")

@dataclass(frozen=True)
class MigrationStatus:
    exists: bool
    applied: tuple[str, ...]
    pending: tuple[str, ...]
    unknown: tuple[str, ...]  # recorded, but not known to this autopack: a newer version wrote it

    @property
    def fresh(self) -> bool:
        return not self.applied


def inspect_database(path: StoreLocation) -> MigrationStatus:
    """What the file (or PostgreSQL database) at ``path`` has and needs, without changing it."""
    names = tuple(name for name, _ in MIGRATIONS)
    if isinstance(path, PostgresUrl):
        return _status(names, _pg_applied(path))
    if database_absent(path):
        return MigrationStatus(False, (), names, ())
    try:
        conn = connect_existing(path)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "_migrations" not in tables:
                if tables:
                    raise EnvironmentProblem(
                        f"{path}: not an autopack database (no _migrations table); "
                        "use --db to point at another file"
                    )
                return MigrationStatus(True, (), names, ())
            applied = tuple(row[0] for row in conn.execute("SELECT name FROM _migrations"))
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise EnvironmentProblem(f"{path}: cannot read the database: {exc}{advice(str(exc))}") from exc
    return _status(names, applied)


def _pg_applied(url: PostgresUrl) -> tuple[str, ...] | None:
    """The migrations recorded in a PostgreSQL database; None when it holds no tables yet."""
    from autopack.store.pg import PgReader

    with PgReader.open(url) as reader:
        return reader.migration_names()


def _status(names: tuple[str, ...], applied: tuple[str, ...] | None) -> MigrationStatus:
    if applied is None:
        return MigrationStatus(True, (), names, ())
    known = set(names)
    return MigrationStatus(
        True,
        tuple(n for n in names if n in applied),
        tuple(n for n in names if n not in applied),
        tuple(n for n in applied if n not in known),
    )


def check_current(path: StoreLocation, status: MigrationStatus) -> None:
    """Refuse a database from a newer autopack, or one that needs ``autopack migrate``."""
    if status.unknown:
        raise EnvironmentProblem(
            f"{path} was written by a newer autopack (unknown migrations: "
            f"{', '.join(status.unknown)}); upgrade autopack to use it"
        )
    if status.pending and not status.fresh:
        raise MigrationNeeded(
            f"{path} needs migrating ({len(status.pending)} pending); "
            f"run `autopack migrate --db {path}`" + ("" if isinstance(path, PostgresUrl) else " (a backup is written first)")
        )


@dataclass(frozen=True)
class MigrationResult:
    created: bool
    applied: tuple[str, ...]
    backup: Path | None


def migrate(path: StoreLocation) -> MigrationResult:
    """Bring the database at ``path`` to the latest schema; a no-op when it is current.

    On PostgreSQL no backup is written (use pg_dump); concurrent migrations wait for each other."""
    status = inspect_database(path)
    if status.unknown:
        check_current(path, status)
    current = status.exists and not status.fresh and not status.pending
    if isinstance(path, PostgresUrl):
        from autopack.store.pg_engine import make_pg_engine

        return MigrationResult(False, (), None) if current else MigrationResult(*_apply_with(make_pg_engine(path)), None)
    with writing(path.parent, "autopack's state directory"):
        make_state_dir(path.parent)  # even for a current database: puts back a missing .gitignore
    if current:
        return MigrationResult(False, (), None)
    backup = backup_database(path) if status.exists and not status.fresh else None
    from autopack.store.db import make_engine

    return MigrationResult(*_apply_with(make_engine(path)), backup)


def _apply_with(engine: Engine) -> tuple[bool, tuple[str, ...]]:
    """``_apply`` on a fresh engine, its errors translated, the engine disposed of after."""
    from autopack.store.db import translate_errors

    try:
        with translate_errors(engine):
            return _apply(engine)
    finally:
        engine.dispose()


def _serialized(conn: Connection) -> None:
    """On PostgreSQL, wait for any other migration of this database (SQLite's BEGIN IMMEDIATE already did)."""
    if conn.dialect.name == "postgresql":
        from autopack.store.pg_engine import xact_lock

        xact_lock(conn, "autopack migrate")


def _apply(engine: Engine) -> tuple[bool, tuple[str, ...]]:
    from sqlalchemy import inspect, insert, select
    from sqlmodel import SQLModel

    from autopack.store import models

    immediate = engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
    table = models.AppliedMigration.__table__
    with immediate.begin() as conn:
        _serialized(conn)
        if not inspect(conn).has_table("_migrations"):
            SQLModel.metadata.create_all(conn)
            now = datetime.now(timezone.utc)
            conn.execute(insert(table), [{"name": n, "applied_at": now} for n, _ in MIGRATIONS])
            return True, tuple(n for n, _ in MIGRATIONS)
    applied: list[str] = []
    for name, fn in MIGRATIONS:
        with immediate.begin() as conn:  # one transaction: the change and its record
            _serialized(conn)
            done = conn.execute(select(table.c.name).where(table.c.name == name)).first()
            if done:
                continue
            fn(conn)
            conn.execute(insert(table), [{"name": name, "applied_at": datetime.now(timezone.utc)}])
            applied.append(name)
    return False, tuple(applied)


def backup_database(path: Path) -> Path:
    """Copy the database (consistently, via SQLite's backup API) to a timestamped file beside it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.backup-{stamp}")
    source = sqlite3.connect(path, timeout=60)
    try:
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    return target
