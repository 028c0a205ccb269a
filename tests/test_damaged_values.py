"""A database whose values have the wrong type (an integer decision, text that is not JSON, a JSON list
where an object belongs, a timestamp that is not one) is a damaged database: every command that reads
the value exits 4 with one line naming the table and column and the way out, through the read side
(sqlite3, the read commands) and the ORM (the commands that execute), and changes nothing.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from drainkit import PhaseScript, Workbench

DONE, BROKEN = "done", "broken"
EVENT = ("INSERT INTO events (run_id, kind, data, created_at) VALUES "
         "('broken', 'doctor_skipped', '{oops', '2026-01-01 00:00:00.000000')")
# case -> (the damaging statement, the table.column the error must name, read commands that read it)
CASES = {
    "decision-an-integer": ("UPDATE phases SET decision = 5", "phases.decision", [("status", DONE, "--json")]),
    "decision-truncated-json": ("UPDATE phases SET decision = '{\"verdict\": '", "phases.decision",
                                [("status", BROKEN, "--json")]),
    "spec-a-json-list": ("UPDATE phases SET spec = '[1, 2]'", "phases.spec", [("status", DONE, "--json")]),
    "flags-not-json": ("UPDATE runs SET flags = 'garbage'", "runs.flags",
                       [("status", DONE, "--json"), ("ab-test", "--pair", f"{DONE}:{BROKEN}")]),
    "plan-a-blob": ("UPDATE runs SET plan = x'00ff'", "runs.plan",
                    [("pick-next",), ("ab-test", "--pair", f"{DONE}:{BROKEN}")]),
    "created-at-not-a-time": ("UPDATE runs SET created_at = 'yesterday'", "runs.created_at",
                              [("status", "--json"), ("status", DONE, "--json"), ("drain", "--dry-run"),
                               ("pick-next",)]),
    "updated-at-an-integer": ("UPDATE phases SET updated_at = 12", "phases.updated_at",
                              [("status", "--json"), ("status", BROKEN, "--json"), ("drain", "--dry-run")]),
    "event-data-not-json": (EVENT, "events.data", [("status", "--stats")]),
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    """Two runs: one complete, one whose phase failed (drainable)."""
    wb = Workbench(tmp_path_factory.mktemp("damaged"))
    wb.queue(DONE, [PhaseScript("a")])
    wb.queue(BROKEN, [PhaseScript("b", ("outside",))])
    assert wb.cli("run", "--run-id", DONE).returncode == 0
    assert wb.cli("run", "--run-id", BROKEN).returncode == 1
    with closing(sqlite3.connect(wb.db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return wb


def damaged_copy(wb: Workbench, case: str, directory: Path) -> Path:
    target = directory / "autopack.db"
    shutil.copyfile(wb.db, target)
    with closing(sqlite3.connect(target)) as conn:
        conn.execute(CASES[case][0])
        conn.commit()
    return target


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def one_line_error(done, column: str, db: Path) -> str:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode == 4, output
    [line] = done.stderr.splitlines()
    assert line.startswith(f"autopack: error: {db}: the database is damaged: {column} (rowid "), line
    assert "sqlite3" in line and len(line) < 500, line
    return line


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_value_of_the_wrong_type_is_a_damaged_database_for_every_read_command(recorded: Workbench, case: str,
                                                                                tmp_path: Path) -> None:
    _, column, commands = CASES[case]
    db = damaged_copy(recorded, case, tmp_path)
    before = digest(db)
    for command in commands:
        one_line_error(recorded.cli(*command, "--db", str(db)), column, db)
    assert digest(db) == before


@pytest.mark.parametrize("case", ["decision-an-integer", "spec-a-json-list", "plan-a-blob", "flags-not-json",
                                  "created-at-not-a-time", "updated-at-an-integer"])
def test_the_orm_reading_the_same_values_says_the_same(recorded: Workbench, case: str, tmp_path: Path) -> None:
    """The commands that execute read the run and its phases through the ORM."""
    _, column, _ = CASES[case]
    db = damaged_copy(recorded, case, tmp_path)
    line = one_line_error(recorded.cli("run", "--run-id", DONE, "--retry-failed", "--db", str(db)), column, db)
    assert "restore a backup copy" in line


def test_the_backup_autopack_migrate_wrote_is_the_way_out(recorded: Workbench, tmp_path: Path) -> None:
    db = damaged_copy(recorded, "decision-an-integer", tmp_path)
    backup = db.with_name("autopack.db.backup-20260101T000000000000Z")
    shutil.copyfile(recorded.db, backup)
    line = one_line_error(recorded.cli("status", DONE, "--json", "--db", str(db)), "phases.decision", db)
    assert f"restore {backup} (the backup `autopack migrate` wrote)" in line


def test_a_migration_meeting_a_damaged_value_stops_in_one_line_and_names_the_backup(recorded: Workbench,
                                                                                     tmp_path: Path) -> None:
    db = damaged_copy(recorded, "plan-a-blob", tmp_path)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DELETE FROM _migrations WHERE name = 'm004_comparable_hash_without_cassette'")
        conn.commit()
    line = one_line_error(recorded.cli("migrate", "--db", str(db)), "runs.plan", db)
    [backup] = db.parent.glob("autopack.db.backup-*")
    assert f"restore {backup}" in line
    with closing(sqlite3.connect(db)) as conn:  # the migration was rolled back
        assert conn.execute("SELECT count(*) FROM _migrations WHERE name LIKE 'm004%'").fetchone() == (0,)
