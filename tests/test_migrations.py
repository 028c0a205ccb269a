"""Schema migrations: fresh databases, no-op re-runs, newer/pending/foreign/corrupt files, races."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopack.errors import MigrationNeeded
from autopack.store import migrate, migrations, open_store

ALL = [name for name, _ in migrations.MIGRATIONS]


def recorded(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT name, applied_at FROM _migrations ORDER BY name").fetchall()
    finally:
        conn.close()


def assert_one_line_error(done, exit_code: int, *needles: str) -> str:
    assert done.returncode == exit_code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("autopack: error: ")
    for needle in needles:
        assert needle in line, line
    return line


def test_fresh_database_is_created_at_the_latest_schema(tmp_path, autopack):
    done = autopack("migrate", "--db", "state.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout
    listing = autopack("migrate", "--db", "state.db", "--list", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == {"db": str(tmp_path / "state.db"), "applied": ALL,
                                          "pending": [], "unknown": []}


def test_migrating_twice_is_a_no_op(tmp_path, autopack):
    db = tmp_path / "state.db"
    assert autopack("migrate", "--db", str(db), cwd=tmp_path).returncode == 0
    before = recorded(db)
    done = autopack("migrate", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    assert recorded(db) == before and [name for name, _ in before] == sorted(ALL)
    assert not list(tmp_path.glob("state.db.backup-*"))


def test_database_from_a_newer_autopack_is_refused_by_every_command(tmp_path, autopack):
    db = tmp_path / "state.db"
    migrate(db)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_from_the_future', '2031-01-01')")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    for command in (["status"], ["status", "some-run"], ["run", "--run-id", "x"], ["migrate"]):
        done = autopack(*command, "--db", str(db), cwd=tmp_path)
        assert_one_line_error(done, 4, "newer autopack", "m999_from_the_future")
    assert db.read_bytes() == before


def test_pending_migration_is_required_then_applied_after_a_backup(tmp_path, monkeypatch):
    db = tmp_path / "state.db"
    migrate(db)

    def m999_add_note(conn) -> None:
        conn.exec_driver_sql("ALTER TABLE runs ADD COLUMN note VARCHAR")

    monkeypatch.setattr(migrations, "MIGRATIONS", [*migrations.MIGRATIONS, ("m999_add_note", m999_add_note)])
    with pytest.raises(MigrationNeeded, match="autopack migrate"):
        open_store(db)

    result = migrate(db)
    assert (result.created, result.applied) == (False, ("m999_add_note",))
    assert result.backup is not None and result.backup.parent == tmp_path and result.backup.exists()
    assert [name for name, _ in recorded(result.backup)] == sorted(ALL)  # the copy from before
    assert [name for name, _ in recorded(db)] == sorted([*ALL, "m999_add_note"])
    columns = [row[1] for row in sqlite3.connect(db).execute("PRAGMA table_info(runs)")]
    assert "note" in columns
    open_store(db).close()  # current now
    assert migrate(db).applied == ()


def test_concurrent_migrations_of_a_fresh_state_dir_both_succeed(tmp_path, base_env):
    """Processes start `autopack migrate` at the same instant on a state dir that does not exist yet."""
    start_at = time.time() + 2
    code = ("import time; from autopack.cli import main; import autopack.config, autopack.store; "
            f"time.sleep(max(0.0, {start_at} - 0.1 - time.time()))\n"
            f"while time.time() < {start_at}: pass\n"  # spin: wake both within microseconds
            "main(['migrate'])")
    processes = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=base_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0] * 4, results
    db = tmp_path / ".autopack" / "autopack.db"
    assert [name for name, _ in recorded(db)] == sorted(ALL)
    assert (tmp_path / ".autopack" / ".gitignore").exists()


def test_foreign_sqlite_file_is_refused(tmp_path, autopack):
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = (tmp_path / "other.db").read_bytes()
    for command in (["status"], ["migrate"]):
        done = autopack(*command, "--db", "other.db", cwd=tmp_path)
        assert_one_line_error(done, 4, "other.db", "not an autopack database")
    assert (tmp_path / "other.db").read_bytes() == before


def test_corrupt_file_is_refused_in_one_line(tmp_path, autopack):
    (tmp_path / "bad.db").write_bytes(os.urandom(8192))
    for command in (["status"], ["migrate"], ["run", "--run-id", "x"]):
        done = autopack(*command, "--db", "bad.db", cwd=tmp_path)
        assert_one_line_error(done, 4, "bad.db")


@pytest.mark.parametrize("kind", ["character device", "directory", "named pipe"])
def test_a_database_path_that_is_not_a_regular_file_is_a_usage_error_naming_it(tmp_path, autopack, base_env, kind):
    path = {"character device": Path(os.devnull), "directory": tmp_path / "a-dir", "named pipe": tmp_path / "fifo"}[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "named pipe":
        os.mkfifo(path)
    commands = (["status"], ["status", "--json"], ["drain"], ["drain", "--dry-run"], ["pick-next"], ["migrate"],
                ["run", "--run-id", "x"], ["drain-one", "--run-id", "x", "--phase-id", "y"])
    for command in commands:
        done = autopack(*command, "--db", str(path), cwd=tmp_path)
        line = assert_one_line_error(done, 2, f"--db {path}: ", kind, "not a regular file")
        assert "disk" not in line
    done = autopack("status", cwd=tmp_path, env={**base_env, "AUTOPACK_DB": str(path)})
    assert_one_line_error(done, 2, f"AUTOPACK_DB={path}: ", kind)
    (tmp_path / "autopack.toml").write_text(f"db = {json.dumps(str(path))}\n")
    done = autopack("drain", cwd=tmp_path)
    assert_one_line_error(done, 2, f"autopack.toml: db = {path}: ", kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["autopack.toml", *(p.name for p in (path,) if p.parent == tmp_path)])
