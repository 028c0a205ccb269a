"""On PostgreSQL too, an older database, once migrated, has exactly the schema of a fresh one.

The old database comes from tests/data/schema_m007_postgresql.sql: the schema at migration m007 as
pg_dump wrote it, frozen, with m001-m007 recorded. `autopack migrate` must run every later migration
on the real server (so a migration written in SQLite's dialect fails here) and end where a fresh
database starts.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from autopack.errors import MigrationNeeded
from autopack.store import migrate, migrations, open_store
from autopack.store.location import PostgresUrl
from pgserver import database_url

SCHEMA_M007 = Path(__file__).parent / "data" / "schema_m007_postgresql.sql"
AFTER_M007 = tuple(name for name, _ in migrations.MIGRATIONS[7:])
_names = itertools.count(1)


def schema(url: str) -> dict[str, set]:
    """Columns (type, nullability, default), indexes (their definitions) and constraints, per kind;
    column order aside (ALTER TABLE appends)."""
    import psycopg

    with psycopg.connect(url) as conn:
        return {
            "columns": set(conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public'").fetchall()),
            "indexes": set(conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'").fetchall()),
            "constraints": set(conn.execute(
                "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'").fetchall()),
        }


def differences(old: dict[str, set], new: dict[str, set]) -> list[str]:
    return sorted([f"{kind}: upgraded only {item}" for kind in old for item in old[kind] - new[kind]]
                  + [f"{kind}: fresh only {item}" for kind in new for item in new[kind] - old[kind]])


@pytest.fixture
def another_database(pg_server: str):
    import psycopg

    name = f"autopack_fresh_{next(_names)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield database_url(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_m007_database_is_refused_until_migrated_then_matches_a_fresh_one(pg_url: str,
                                                                            another_database: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SCHEMA_M007.read_text())
    migrate(PostgresUrl(another_database))
    fresh = schema(another_database)
    assert differences(schema(pg_url), fresh) == [  # what m008-m010 add: the comparison sees them
        "columns: fresh only ('attempts', 'patch', 'character varying', 'YES', None)",
        "columns: fresh only ('attempts', 'patch_bytes', 'integer', 'YES', None)",
        "columns: fresh only ('test_run_files', 'junit', 'bytea', 'YES', None)",
        "columns: fresh only ('test_run_files', 'junit_bytes', 'integer', 'NO', None)",
        "columns: fresh only ('test_run_files', 'log', 'bytea', 'YES', None)",
        "columns: fresh only ('test_run_files', 'log_bytes', 'integer', 'NO', None)",
        "columns: fresh only ('test_run_files', 'test_run_id', 'integer', 'NO', None)",
        "constraints: fresh only ('test_run_files', 'test_run_files_pkey', 'PRIMARY KEY (test_run_id)')",
        "constraints: fresh only ('test_run_files', 'test_run_files_test_run_id_fkey', "
        "'FOREIGN KEY (test_run_id) REFERENCES test_runs(id)')",
        "indexes: fresh only ('executors', 'ix_executors_live', 'CREATE INDEX ix_executors_live ON "
        "public.executors USING btree (run_id, started_at) WHERE (stopped_at IS NULL)')",
        "indexes: fresh only ('test_run_files', 'test_run_files_pkey', 'CREATE UNIQUE INDEX test_run_files_pkey ON "
        "public.test_run_files USING btree (test_run_id)')"]
    with pytest.raises(MigrationNeeded, match="autopack migrate"):
        open_store(PostgresUrl(pg_url))

    result = migrate(PostgresUrl(pg_url))

    assert result.applied == AFTER_M007 and result.backup is None  # on PostgreSQL: pg_dump first
    assert differences(schema(pg_url), fresh) == []
    open_store(PostgresUrl(pg_url)).close()
    assert migrate(PostgresUrl(pg_url)).applied == ()
