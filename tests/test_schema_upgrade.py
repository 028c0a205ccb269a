"""A database made by autopack's first release, once migrated, has exactly the schema of a fresh one.

The old database comes from tests/data/schema_m001.sql: the schema the first release (migration
m001) wrote, frozen, not derived from today's models. A column, index or constraint added to a
model without a migration makes the upgraded schema differ from a fresh one, and the test fail.
"""

import sqlite3
from pathlib import Path

import pytest

from autopack.errors import MigrationNeeded
from autopack.store import migrate, migrations, open_store

SCHEMA_M001 = Path(__file__).parent / "data" / "schema_m001.sql"
AFTER_M001 = tuple(name for name, _ in migrations.MIGRATIONS[1:])


def schema(path):
    """Per table: columns (type, NOT NULL, default, primary key), indexes (unique, origin, partial,
    columns in order) and foreign keys; column order aside (ALTER TABLE appends)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: {"columns": sorted((c[1], c[2], c[3], c[4], c[5]) for c in conn.execute(f"PRAGMA table_info({t})")),
                    "indexes": sorted((i[1], i[2], i[3], i[4],
                                       tuple(c[2] for c in conn.execute(f"PRAGMA index_info('{i[1]}')")))
                                      for i in conn.execute(f"PRAGMA index_list({t})")),
                    "foreign_keys": sorted(tuple(f[2:5]) for f in conn.execute(f"PRAGMA foreign_key_list({t})"))}
                for t in tables}
    finally:
        conn.close()


def make_m001_database(path: Path) -> None:
    """What autopack's first release wrote: the frozen schema, with m001 recorded."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA_M001.read_text())
    finally:
        conn.close()


def differences(old: dict, new: dict) -> list[str]:
    """Readable differences between two ``schema()`` results, for the assertion message."""
    found = []
    for table in sorted(old.keys() | new.keys()):
        for part in ("columns", "indexes", "foreign_keys"):
            a, b = set(old.get(table, {}).get(part, ())), set(new.get(table, {}).get(part, ()))
            found += [f"{table} {part}: upgraded only {item}" for item in sorted(a - b, key=str)]
            found += [f"{table} {part}: fresh only {item}" for item in sorted(b - a, key=str)]
    return found


def test_first_release_database_is_refused_until_migrated_then_matches_fresh(tmp_path):
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    migrate(fresh)
    make_m001_database(old)
    with pytest.raises(MigrationNeeded, match="autopack migrate"):
        open_store(old)
    result = migrate(old)
    assert result.applied == AFTER_M001
    assert result.backup is not None and result.backup.exists()
    pristine = tmp_path / "pristine.db"
    make_m001_database(pristine)
    assert schema(result.backup) == schema(pristine)  # the backup is the database as it was
    upgraded = schema(old)
    assert differences(upgraded, schema(fresh)) == []
    assert upgraded == schema(fresh)
    open_store(old).close()


def test_the_comparison_sees_every_kind_of_schema_drift(tmp_path):
    """What a model change without a migration looks like: each one is a difference."""
    base = tmp_path / "base.db"
    migrate(base)
    reference = schema(base)
    drifts = {
        "a new column": "ALTER TABLE phases ADD COLUMN note VARCHAR",
        "a column's default": "ALTER TABLE runs ADD COLUMN z INTEGER DEFAULT 0",
        "a new index": "CREATE INDEX ix_phases_extra ON phases (phase_id)",
        "a unique index": "CREATE UNIQUE INDEX ix_runs_goal ON runs (goal)",
        "a new table": "CREATE TABLE extra (id INTEGER PRIMARY KEY)",
    }
    for name, statement in drifts.items():
        copy = tmp_path / f"{name}.db"
        copy.write_bytes(base.read_bytes())
        conn = sqlite3.connect(copy)
        conn.execute(statement)
        conn.commit()
        conn.close()
        assert differences(schema(copy), reference), name
    nullable = tmp_path / "nullable.db"
    conn = sqlite3.connect(nullable)
    conn.executescript(SCHEMA_M001.read_text().replace("subdir VARCHAR NOT NULL", "subdir VARCHAR"))
    conn.close()
    first = tmp_path / "first.db"
    make_m001_database(first)
    assert differences(schema(nullable), schema(first)) == [
        "runs columns: upgraded only ('subdir', 'VARCHAR', 0, None, 0)",
        "runs columns: fresh only ('subdir', 'VARCHAR', 1, None, 0)"]


def test_read_path_indexes_exist_after_migrating(tmp_path):
    old = tmp_path / "old.db"
    make_m001_database(old)
    migrate(old)
    indexes = {index[0] for table in schema(old).values() for index in table["indexes"]}
    assert {"ix_llm_calls_run_role_usage", "ix_llm_calls_attempt_id", "ix_attempts_executor_id"} <= indexes
    assert "ix_llm_calls_run_role" not in indexes
