"""Drains that overlap, die and get rescued: cron's reality.

Eight real `autopack drain` processes share one database and 200 phases; a drain is
SIGKILLed mid-suite and the next one rescues its phase; stale claims are found with an
injected clock.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from conftest import git
from drainkit import PhaseScript, Workbench

RUNS, PHASES_PER_RUN, PROCESSES = 20, 10, 8


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_eight_drains_started_together_complete_every_phase_exactly_once(tmp_path: Path, store_db: str) -> None:
    wb = Workbench(tmp_path, store_db=store_db)
    wb.queue_many({f"run{r:02d}": [PhaseScript(f"p{n}") for n in range(PHASES_PER_RUN)] for r in range(RUNS)})

    started, cpu_before = time.monotonic(), children_cpu_s()
    drains = [wb.spawn("drain", "--batch-size", "1000", "--json", "--quiet") for _ in range(PROCESSES)]
    outputs = [proc.communicate(timeout=600) for proc in drains]
    elapsed, cpu = time.monotonic() - started, children_cpu_s() - cpu_before

    summaries = []
    for proc, (out, err) in zip(drains, outputs):
        assert "database is locked" not in out + err
        assert proc.returncode == 0, f"{err}\n{out}"  # the summary names the failed phase or the run not entered
        summaries.append(json.loads(out))
    processed = [s["processed"] for s in summaries]
    print(f"\n{PROCESSES} drains over {RUNS * PHASES_PER_RUN} phases in {RUNS} runs took {elapsed:.1f} s "
          f"({cpu:.0f} CPU-s with their git and suite processes); "
          f"phases per drain: {processed}; busy runs skipped per drain: "
          f"{[len(s['busy_runs']) for s in summaries]}")

    drained = [(p["run_id"], p["phase_id"]) for s in summaries for p in s["phases"]]
    assert len(drained) == len(set(drained)) == RUNS * PHASES_PER_RUN
    assert all(s["stop_reason"] == "nothing left to drain" for s in summaries)
    for r in range(RUNS):
        run_id = f"run{r:02d}"
        status = wb.status(run_id)
        assert status["run"]["state"] == "complete"
        assert {(p["state"], p["attempts"]) for p in status["phases"]} == {("complete", 1)}
        assert sorted(wb.commits(run_id)) == [(f"p{n}", "1") for n in range(PHASES_PER_RUN)]
    if isinstance(wb.db, Path):
        with sqlite3.connect(wb.db) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def kill_a_drain_mid_suite(wb: Workbench) -> None:
    """Run "kill": phase warm completes, then a drain is SIGKILLed while victim's suite runs."""
    wb.queue("kill", [PhaseScript("warm"), PhaseScript("victim", ("ok", "ok"))])
    assert wb.cli("drain", "--batch-size", "1").returncode == 0
    assert wb.phase_states("kill") == {"warm": "complete", "victim": "queued"}

    wb.slow_marker.touch()
    doomed = wb.spawn("drain")
    suite_pid = int(wait_for(lambda: wb.suite_started.exists() and wb.suite_started.read_text(), "the suite"))
    assert wb.phase_states("kill")["victim"] == "ci_running"
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.communicate()
    wb.slow_marker.unlink()  # the orphaned suite finishes; wait so it cannot write into the next attempt
    wait_for(lambda: not Path(f"/proc/{suite_pid}").exists() or "zombie" in Path(f"/proc/{suite_pid}/status")
             .read_text().lower(), "the orphaned suite to exit")
    assert wb.phase_states("kill")["victim"] == "ci_running"


def assert_rescued_once(wb: Workbench, summary: dict) -> None:
    assert [(p["phase_id"], p["state"], p["attempts"]) for p in summary["phases"]] == [("victim", "complete", 2)]
    assert wb.commits("kill") == [("warm", "1"), ("victim", "2")]
    with wb.open_store() as store:
        victim = store.phase("kill", "victim")
        assert [(a.number, a.state) for a in store.attempts(victim.pk)] == [(1, "abandoned"), (2, "complete")]


def test_a_drain_killed_mid_suite_is_rescued_by_the_next_drain_once_its_lease_expires(tmp_path: Path,
                                                                                      store_db: str) -> None:
    from autopack.store.drains import stale_claims

    wb = Workbench(tmp_path, settings={"AUTOPACK_LEASE_S": "2", "AUTOPACK_HEARTBEAT_S": "1"}, store_db=store_db)
    kill_a_drain_mid_suite(wb)
    with wb.open_store() as store:
        wait_for(lambda: stale_claims(store, store.now(), 2), "the dead drain's lease to expire")

    done = wb.cli("drain", "--json")
    assert done.returncode == 0, done.stderr
    assert_rescued_once(wb, json.loads(done.stdout))


def test_drain_run_id_rescues_a_killed_drains_phase_at_once(tmp_path: Path, store_db: str) -> None:
    wb = Workbench(tmp_path, store_db=store_db)  # the default lease (minutes) has not expired: the free lock proves the death
    kill_a_drain_mid_suite(wb)

    done = wb.cli("drain", "--run-id", "kill", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["run"] == {"id": "kill", "state": "complete"}
    assert_rescued_once(wb, summary)


def test_sigterm_ends_the_attempt_cleanly_and_the_phase_is_drained_first_next_time(tmp_path: Path) -> None:
    wb = Workbench(tmp_path)
    wb.queue("term", [PhaseScript("warm"), PhaseScript("victim", ("ok", "ok"))])
    wb.queue("later", [PhaseScript("a")])
    assert wb.cli("drain", "--batch-size", "1").returncode == 0

    wb.slow_marker.touch()
    stopping = wb.spawn("drain")
    wait_for(wb.suite_started.exists, "the suite")
    assert wb.phase_states("term")["victim"] == "ci_running"
    stopping.send_signal(signal.SIGTERM)
    _, err = stopping.communicate(timeout=60)
    wb.slow_marker.unlink()
    assert stopping.returncode == 130, err
    assert "interrupted" in err

    victim = next(p for p in wb.status("term")["phases"] if p["id"] == "victim")
    assert (victim["state"], victim["attempts"], victim["last_failure"]["kind"]) == ("queued", 1, "interrupted")
    worktree = wb.db.parent / "worktrees" / "term"
    assert git(worktree, "status", "--porcelain", env=wb.env) == ""
    candidates = json.loads(wb.cli("drain", "--dry-run", "--json").stdout)["candidates"]
    assert [(c["run_id"], c["phase_id"], c["rank"]) for c in candidates] == [("term", "victim", 0), ("later", "a", 5)]

    done = wb.cli("drain", "--json", "--batch-size", "1")
    assert done.returncode == 0, done.stderr
    assert [(p["phase_id"], p["state"]) for p in json.loads(done.stdout)["phases"]] == [("victim", "complete")]
    assert wb.commits("term") == [("warm", "1"), ("victim", "2")]


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def notify(self, event: Any) -> None:
        self.events.append(event)


def test_stale_claims_and_their_rescue_follow_the_injected_clock(tmp_path: Path) -> None:
    from autopack.config import load_settings
    from autopack.drain import Drainer, DrainOptions
    from autopack.lock import RunLock
    from autopack.store.db import write_session
    from autopack.store.drains import stale_claims
    from autopack.store.models import Executor
    from autopack.store.runs import utcnow

    wb = Workbench(tmp_path, settings={"AUTOPACK_LEASE_S": "300"})
    wb.queue_many({run_id: [PhaseScript("a")] for run_id in ("dead", "live", "held", "leased")})
    settings = load_settings(tmp_path, environ=wb.env)
    t0 = utcnow()
    with wb.open_store() as store:
        dead = store.register_executor(1, "host", "killed drain", None)
        live = store.register_executor(2, "host", "running drain", None)
        with write_session(store.engine) as session:
            session.get(Executor, dead).heartbeat_at = t0 - timedelta(hours=1)  # silent since
        for run_id, executor_id, lease_s in (("dead", dead, 60), ("live", live, 60), ("held", dead, 60),
                                             ("leased", dead, 3600)):
            claimed = store.claim(run_id, "a", executor_id, lease_s)
            store.start_attempt(claimed.pk, executor_id, "model")

        now = t0 + timedelta(seconds=120)  # leases of 60 s have expired; the live heartbeat is 2 min old
        assert sorted(stale_claims(store, now, 300)) == [("dead", "a", dead), ("held", "a", dead)]
        assert stale_claims(store, t0, 300) == []  # nothing has expired yet

        recorder = Recorder()
        with RunLock(wb.db.parent / "locks", "held"):
            Drainer(store, settings, DrainOptions(), recorder).rescue_stale(now)

        states = {run_id: (store.phase(run_id, "a").state, store.phase(run_id, "a").claimed_by)
                  for run_id in ("dead", "live", "held", "leased")}
        assert states == {"dead": ("queued", None), "live": ("executing", live), "held": ("executing", dead),
                          "leased": ("executing", dead)}
        rescued = store.phase("dead", "a")
        assert [(a.number, a.state) for a in store.attempts(rescued.pk)] == [(1, "abandoned")]
        assert [(e.name, e.run_id, e.phase_id) for e in recorder.events] == [("recovered", "dead", "a")]


def test_workers_share_a_drain_and_run_id_drains_in_one_process(tmp_path: Path, store_db: str) -> None:
    wb = Workbench(tmp_path, store_db=store_db)
    wb.queue_many({"ci": [PhaseScript("a")], **{f"w{n}": [PhaseScript("a"), PhaseScript("b")] for n in range(3)}})

    ci = wb.cli("drain", "--run-id", "ci", "--workers", "3", "--json")
    assert ci.returncode == 0, ci.stderr
    assert json.loads(ci.stdout)["run"] == {"id": "ci", "state": "complete"}

    done = wb.cli("drain", "--workers", "3", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["workers"], summary["processed"], summary["completed"]) == (3, 6, 6)
    assert sorted((p["run_id"], p["phase_id"]) for p in summary["phases"]) == [
        (f"w{n}", phase) for n in range(3) for phase in ("a", "b")]
