"""Cron's worst minute: 20 real `autopack` processes started within one second over one store.

A mix of `drain`, `run --run-id`, `status --json` and `migrate`, as overlapping crontab
lines and impatient users produce. Every process must end with a documented exit code
(0, 1 or 75), print no traceback and never surface "database is locked"; the store must
hold no duplicate attempt, no phase with two complete attempts, and exactly one commit
per complete phase. A second test races the very creation of the store.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from pathlib import Path

from conftest import chosen_seed, rows
from drainkit import PhaseScript, Workbench

OK = ("ok",) * 10
DOCUMENTED = {0, 1, 75}


def start_within_one_second(wb: Workbench, commands: list[list[str]], seed: int) -> list[tuple[list[str], subprocess.Popen]]:
    """Start every command at a random offset in [0, 1) s, in a random order.

    A loaded machine may stretch the schedule; that changes the overlap, not the verdict, so
    the spread is printed (with the seed that replays the order), not asserted.
    """
    rng = random.Random(seed)
    schedule = sorted((rng.random(), n) for n in range(len(commands)))
    t0 = time.monotonic()
    started = []
    for offset, n in schedule:
        time.sleep(max(0.0, t0 + offset - time.monotonic()))
        started.append((commands[n], wb.spawn(*commands[n])))
    print(f"\nseed {seed}: {len(started)} commands started within {time.monotonic() - t0:.2f} s")
    return started


def finish(started: list[tuple[list[str], subprocess.Popen]]) -> list[tuple[list[str], int, str]]:
    results = []
    for args, proc in started:
        out, err = proc.communicate(timeout=300)
        results.append((args, proc.returncode, out + err))
    return results


def assert_clean_exits(results: list[tuple[list[str], int, str]]) -> None:
    for args, code, output in results:
        assert code in DOCUMENTED, f"autopack {' '.join(args)} exited {code}:\n{output}"
        assert "Traceback" not in output, f"autopack {' '.join(args)}:\n{output}"
        assert "database is locked" not in output, f"autopack {' '.join(args)}:\n{output}"
        if code == 75:
            assert "is being executed by pid" in output, output


def test_twenty_invocations_in_one_second_never_duplicate_work(tmp_path: Path, store_db: str) -> None:
    wb = Workbench(tmp_path, store_db=store_db)
    runs = {
        "alpha": [PhaseScript("a", OK), PhaseScript("b", OK, depends_on=("a",))],
        "beta": [PhaseScript("a", ("break",) + OK, max_attempts=2), PhaseScript("b", OK)],
        "gamma": [PhaseScript("a", OK), PhaseScript("b", ("break",) + OK), PhaseScript("c", OK)],
        "delta": [PhaseScript("a", OK), PhaseScript("b", OK), PhaseScript("c", OK, depends_on=("b",))],
        "epsilon": [PhaseScript("a", OK)],
    }
    wb.queue_many(runs)
    commands = (
        [["drain", "--json", "--quiet"]] * 6
        + [["drain", "--run-id", "beta", "--json", "--quiet"], ["drain", "--run-id", "gamma", "--json", "--quiet"]]
        + [["run", "--run-id", run_id] for run_id in ("alpha", "beta", "gamma", "delta", "epsilon", "alpha")]
        + [["status", "--json"], ["status", "alpha", "--json"], ["status", "--stats", "--json"], ["status"]]
        + [["migrate"], ["migrate", "--list"]]
    )
    assert len(commands) == 20
    results = finish(start_within_one_second(wb, commands, seed=chosen_seed(7)))
    assert_clean_exits(results)
    codes = sorted(code for _, code, _ in results)
    print(f"\n20 invocations within 1 s: exit codes {codes}")
    for args, code, output in results:
        if args[0] in ("status", "migrate"):
            assert code == 0, output
        if args[:2] == ["status", "--json"]:
            assert json.loads(output)["schema"] == 1

    # Whatever the overlap left queued or failed, one more drain finishes: nothing was lost.
    final = wb.cli("drain", "--json")
    assert final.returncode == 0, final.stdout + final.stderr
    assert rows(wb.db, "SELECT phase_pk, number FROM attempts GROUP BY phase_pk, number HAVING count(*) > 1") == []
    assert rows(wb.db, "SELECT phase_pk FROM attempts WHERE state = 'complete' GROUP BY phase_pk "
                       "HAVING count(*) > 1") == []
    assert rows(wb.db, "SELECT count(*) FROM attempts WHERE state = 'running'") == [(0,)]
    if isinstance(wb.db, Path):
        assert rows(wb.db, "PRAGMA integrity_check") == [("ok",)]
    for run_id, phases in runs.items():
        assert set(wb.phase_states(run_id).values()) == {"complete"}, run_id
        assert sorted(phase for phase, _ in wb.commits(run_id)) == sorted(p.id for p in phases)


def test_processes_racing_to_create_the_store(tmp_path: Path) -> None:
    """No database yet: `migrate` and `run PLAN --queue-only` all create it at once."""
    wb = Workbench(tmp_path)
    plans = [wb.add_run(f"new{n}", [PhaseScript("a", OK)]) for n in range(4)]
    assert not wb.db.parent.exists()
    commands = [["migrate"]] * 3 + [["run", str(plan), "--queue-only"] for plan in plans]
    results = finish(start_within_one_second(wb, commands, seed=chosen_seed(11)))
    for args, code, output in results:
        assert code == 0, f"autopack {' '.join(args)} exited {code}:\n{output}"
        assert "Traceback" not in output and "database is locked" not in output, output
    with sqlite3.connect(wb.db) as db:
        assert sorted(r[0] for r in db.execute("SELECT id FROM runs")) == [f"new{n}" for n in range(4)]
        assert db.execute("SELECT count(*) FROM phases WHERE state = 'queued'").fetchone() == (4,)
        assert db.execute("SELECT name, count(*) FROM _migrations GROUP BY name HAVING count(*) > 1").fetchall() == []
