"""A database made by an older autopack, once migrated, has exactly the schema of a fresh one."""

import sqlite3

import pytest

from autopack.errors import MigrationNeeded
from autopack.store import migrate, open_store

M002_COLUMNS = [("phases", "parked_reason"), ("phases", "escalated_budget"),
                ("llm_calls", "predicted_tokens"), ("llm_calls", "http_status"),
                ("attempts", "budget"), ("attempts", "budget_source")]
M003_INDEXES = ["ix_llm_calls_run_role_usage", "ix_llm_calls_attempt_id", "ix_attempts_executor_id"]
M004_COLUMNS = [("runs", "builder"), ("attempts", "builder")]


def schema(path):
    """Per table: its columns, and its indexes with their uniqueness and columns in order."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: {"columns": sorted((c[1], c[2], c[3]) for c in conn.execute(f"PRAGMA table_info({t})")),
                    "indexes": sorted((i[1], i[2], tuple(c[2] for c in conn.execute(f"PRAGMA index_info({i[1]})")))
                                      for i in conn.execute(f"PRAGMA index_list({t})"))}
                for t in tables}
    finally:
        conn.close()


def make_m001_database(path):
    """Fresh database, then undo m004, m003 and m002 by hand: what autopack 0.1.0's first release wrote."""
    migrate(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE transcript_turns")
    for table, column in M004_COLUMNS:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    for index in M003_INDEXES:
        conn.execute(f"DROP INDEX {index}")
    conn.execute("CREATE INDEX ix_llm_calls_run_role ON llm_calls (run_id, role)")
    for table, column in M002_COLUMNS:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("DELETE FROM _migrations WHERE name IN ('m002_parking_budgets_and_ledger_detail', "
                 "'m003_read_path_indexes', 'm004_builder_modes_and_transcripts')")
    conn.commit()
    conn.close()


def test_old_database_is_refused_until_migrated_then_matches_fresh(tmp_path):
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    migrate(fresh)
    make_m001_database(old)
    with pytest.raises(MigrationNeeded, match="autopack migrate"):
        open_store(old)
    result = migrate(old)
    assert result.applied == ("m002_parking_budgets_and_ledger_detail", "m003_read_path_indexes",
                              "m004_builder_modes_and_transcripts")
    assert result.backup is not None and result.backup.exists()
    assert "parked_reason" not in {c[0] for c in schema(result.backup)["phases"]["columns"]}
    assert schema(old) == schema(fresh)
    open_store(old).close()


def test_read_path_indexes_exist_after_migrating(tmp_path):
    old = tmp_path / "old.db"
    make_m001_database(old)
    migrate(old)
    indexes = {name for table in schema(old).values() for name, _, _ in table["indexes"]}
    assert set(M003_INDEXES) <= indexes
    assert "ix_llm_calls_run_role" not in indexes
