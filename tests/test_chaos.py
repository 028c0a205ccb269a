"""Crash consistency: SIGKILL `autopack run` and `autopack drain` at 50+ moments, then check nothing was lost.

Each cycle records a fresh run (drainkit: a generated cassette and a ~50 ms non-pytest
suite), starts one command on it and SIGKILLs that command's whole session, either at a
named kill point (the child kills itself right before or after the named call: the moment
the database shows that step) or after a random delay. The next command, alternating
between `run` and `drain`, must then finish the run. At the end, over every run: no
attempt is left `running`, every phase is complete with exactly one commit carrying its
`Autopack-Phase` trailer (and that commit is the one recorded), attempt numbers have no
gaps or duplicates, every worktree is clean and `PRAGMA integrity_check` is ok.

Commands run in forked children of this process (tests/hostile/forkcli.py) so that 100+
commands fit in the time budget; the last completion uses the real `python -m autopack`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from drainkit import PhaseScript, Workbench
from conftest import chosen_seed, git, rows, suite_of_a_sigkilled_autopack
from hostile import forkcli

SEED = chosen_seed(20261122)
TARGET_KILLS = 52
MAX_CYCLES = 90
LEASE_S = 2
OK = ("ok",) * 10


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _git_dir_of(worktree: Path) -> Path:
    out = subprocess.run(["git", "-C", str(worktree), "rev-parse", "--absolute-git-dir"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


@dataclass(frozen=True)
class KillPoint:
    """Kill the child right ``when`` ("before"/"after") the ``nth`` matching call of ``owner.attr``."""

    name: str
    owner: str  # dotted module path, optionally ":Class"
    attr: str
    when: str = "after"
    matches: Callable[[tuple, dict, Any], bool] = lambda args, kwargs, result: True
    nths: tuple[int, ...] = (1,)

    def arm(self, nth: int) -> Callable[[], None]:
        def prepare() -> None:
            import importlib

            module_name, _, class_name = self.owner.partition(":")
            target: Any = importlib.import_module(module_name)
            if class_name:
                target = getattr(target, class_name)
            original = getattr(target, self.attr)
            seen = [0]

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if self.when == "before" and self.matches(args, kwargs, None):
                    seen[0] += 1
                    if seen[0] == nth:
                        if self.name == "git commit in flight":
                            (_git_dir_of(Path(args[0])) / "index.lock").write_text("")  # what a killed git leaves
                        _die()
                result = original(*args, **kwargs)
                if self.when == "after" and self.matches(args, kwargs, result):
                    seen[0] += 1
                    if seen[0] == nth:
                        _die()
                return result

            setattr(target, self.attr, wrapper)

        return prepare


STORE = "autopack.store.runs:Store"
KILL_POINTS = (
    KillPoint("executor registered", STORE, "register_executor"),
    KillPoint("claim rescued", STORE, "rescue_run", matches=lambda a, k, r: bool(r)),
    KillPoint("worktree reset", "autopack.workspace:Workspace", "reset_clean", when="before", nths=(1, 2)),
    KillPoint("phase claimed", STORE, "_claim", matches=lambda a, k, r: r is not None),
    KillPoint("attempt started", STORE, "start_attempt"),
    KillPoint("baseline saved", STORE, "save_baseline"),
    KillPoint("suite running", "autopack.testrun", "_pump", when="before"),
    KillPoint("test run recorded", STORE, "record_test_run", nths=(1, 2)),
    KillPoint("builder answered", "autopack.llm.builder:ClaudeBuilder", "build"),
    KillPoint("llm calls recorded", STORE, "record_calls"),
    KillPoint("edits applied", "autopack.engine.tools", "apply_edits"),
    KillPoint("changes staged", "autopack.workspace:Workspace", "stage_all"),
    KillPoint("decision stored", STORE, "update_attempt", matches=lambda a, k, r: "decision" in k),
    KillPoint("git commit in flight", "autopack.workspace", "_git", when="before",
              matches=lambda a, k, r: len(a) > 1 and a[1] == "commit"),
    KillPoint("committed", "autopack.workspace:Workspace", "commit_staged"),
    KillPoint("attempt completed", STORE, "finish_attempt", matches=lambda a, k, r: a[2] == "complete"),
    KillPoint("phase completed", STORE, "complete_phase"),
    KillPoint("failure patch saved", "autopack.runner", "_save_patch"),
    KillPoint("attempt failed", STORE, "finish_attempt", matches=lambda a, k, r: a[2] == "failed"),
    KillPoint("doctor advised", "autopack.runner", "advise"),
    KillPoint("phase failed", STORE, "fail_phase"),
    KillPoint("failed phase claimed for a new pass (drain)", STORE, "_claim",
              matches=lambda a, k, r: r is not None and a[1] == "claim_new_pass"),
    KillPoint("failed phases requeued (run)", STORE, "requeue_failed", matches=lambda a, k, r: bool(r)),
    KillPoint("dependents skipped", STORE, "skip_blocked"),
)
ATTEMPT_STARTED = next(p for p in KILL_POINTS if p.name == "attempt started")
SUITE_RUNNING = next(p for p in KILL_POINTS if p.name == "suite running")
# Points only a run with a failed phase reaches.
NEEDS_FAILED = {"failed phase claimed for a new pass (drain)", "failed phases requeued (run)"}
# Points only an attempt that fails (and is retried in its pass) reaches.
NEEDS_RETRY = {"failure patch saved", "attempt failed", "doctor advised"}
# A point only recovery reaches: the victim first inherits a claim from a killed predecessor.
NEEDS_DEAD_CLAIM = {"claim rescued"}


def shape(point: KillPoint | None) -> tuple[list[PhaseScript], bool]:
    """The run a kill point needs: its phases, and whether a first pass must fail one before the kill."""
    if point is None:  # a random moment: two phases, the second depending on the first
        return [PhaseScript("a", OK, max_attempts=3), PhaseScript("c", OK, depends_on=("a",), max_attempts=3)], False
    if point.name in NEEDS_FAILED:
        return [PhaseScript("f", ("break",) + OK)], True
    if point.name == "phase failed":
        return [PhaseScript("f", ("break",) + OK)], False
    if point.name in NEEDS_RETRY:
        return [PhaseScript("b", ("break",) + OK, max_attempts=3)], False
    return [PhaseScript("a", OK, max_attempts=3)], False


def command(kind: str, wb: Workbench, run_id: str) -> list[str]:
    return {
        "run --run-id": ["run", "--run-id", run_id, "--retry-failed"],
        "run PLAN": ["run", str(wb.plans / f"{run_id}.toml"), "--retry-failed"],
        "drain --run-id": ["drain", "--run-id", run_id],
        "drain": ["drain"],
    }[kind]


def query(db: Path | str, sql: str, *params: object) -> list[tuple]:
    return rows(db, sql, *params)


def where_it_died(db: Path, run_id: str) -> str:
    """For a kill after a random delay: the step the database shows."""
    running = query(db, "SELECT step FROM attempts WHERE run_id = ? AND state = 'running'", run_id)
    if running:
        return f"random delay: {running[0][0]}"
    active = query(db, "SELECT count(*) FROM phases WHERE run_id = ? AND state IN "
                       "('executing', 'ci_running', 'gate')", run_id)[0][0]
    return "random delay: between attempts" if active else "random delay: outside a claim"


def wait_until_rescuable(wb: Workbench, run_id: str) -> None:
    """A plain `drain` takes a dead executor's claim only once its lease expired (documented)."""
    from autopack.store.drainable import drainable_phases
    from autopack.store.drains import stale_claims

    deadline = time.monotonic() + 30
    with wb.open_store() as store:
        while True:
            active = [p for p in store.phases(run_id) if p.state in ("executing", "ci_running", "gate")]
            if not active or drainable_phases(store, run_id) or stale_claims(store, store.now(), LEASE_S):
                return
            assert time.monotonic() < deadline, "the dead executor's lease never expired"
            time.sleep(0.1)


def check_run(wb: Workbench, run_id: str) -> None:
    """Every phase complete, exactly one commit each (the recorded one), no gaps, a clean worktree."""
    phases = query(wb.db, "SELECT pk, phase_id, state, attempts, \"commit\" FROM phases WHERE run_id = ?", run_id)
    commits = wb.commits(run_id)
    shas = git(wb.repo, "log", "--reverse", "--format=%H", f"autopack/{run_id}", "^main", env=wb.env).split()
    assert len(shas) == len(commits) == len(phases), (run_id, commits)
    by_phase = dict(zip([phase for phase, _ in commits], zip(shas, [int(n) for _, n in commits])))
    for pk, phase_id, state, attempts, commit in phases:
        assert state == "complete", (run_id, phase_id, state)
        numbers = query(wb.db, "SELECT number, state FROM attempts WHERE phase_pk = ? ORDER BY number", pk)
        assert [n for n, _ in numbers] == list(range(1, attempts + 1)), (run_id, phase_id, numbers)
        assert [n for n, s in numbers if s == "complete"] == [by_phase[phase_id][1]], (run_id, phase_id, numbers)
        assert all(s in ("complete", "failed", "abandoned", "interrupted") for _, s in numbers), numbers
        assert commit == by_phase[phase_id][0], (run_id, phase_id)
    worktree = wb.state_dir / "worktrees" / run_id
    assert git(worktree, "status", "--porcelain", "--untracked-files=all", env=wb.env) == ""


def test_sigkill_at_50_moments_loses_nothing_and_runs_nothing_twice(tmp_path: Path, store_db: str) -> None:
    rng = random.Random(SEED)
    wb = Workbench(tmp_path, settings={"AUTOPACK_LEASE_S": str(LEASE_S), "AUTOPACK_HEARTBEAT_S": "1"},
                   store_db=store_db)
    logs = tmp_path / "logs"
    kills: Counter[str] = Counter()
    recovered_by: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    run_ids: list[str] = []
    started = time.monotonic()

    def fork(args: list[str], prepare: Callable[[], None] | None = None) -> forkcli.Forked:
        return forkcli.spawn(args, cwd=wb.root, env=wb.env, logs=logs, prepare=prepare)

    for cycle in range(MAX_CYCLES):
        if sum(kills.values()) >= TARGET_KILLS:
            break
        # The first cycles take every kill point in turn; then random points and random moments.
        if cycle < len(KILL_POINTS):
            point = KILL_POINTS[cycle]
        else:
            point = None if rng.random() < 0.5 else rng.choice(KILL_POINTS)
        run_id = f"r{cycle:03d}"
        run_ids.append(run_id)
        phases, prefail = shape(point)
        wb.queue(run_id, phases)
        if prefail:
            setup = fork(command("run --run-id", wb, run_id)[:3]).wait()  # no --retry-failed: the pass fails
            assert setup.code == 1 and wb.phase_states(run_id)["f"] == "failed", setup.output
        if point is not None and point.name in NEEDS_DEAD_CLAIM:
            assert fork(command("run --run-id", wb, run_id), ATTEMPT_STARTED.arm(1)).wait().killed
            kills[ATTEMPT_STARTED.name] += 1

        victim_kind = rng.choice(["run --run-id", "run PLAN"] if cycle % 2 == 0 else ["drain --run-id", "drain"])
        if victim_kind == "drain":
            wait_until_rescuable(wb, run_id)
        if point is None:
            victim = fork(command(victim_kind, wb, run_id))
            deadline = time.monotonic() + rng.uniform(0.0, 1.0)
            while time.monotonic() < deadline and not victim.poll():
                time.sleep(0.005)
            victim.kill()
        else:
            victim = fork(command(victim_kind, wb, run_id), point.arm(rng.choice(point.nths)))
        ended = victim.wait()
        if ended.killed:
            label = point.name if point is not None else where_it_died(wb.db, run_id)
            kills[label] += 1
        else:
            label = point.name if point is not None else "random delay"
            assert "Traceback" not in ended.output, ended.output
            missed[label] += 1

        recovery = rng.choice(["run --run-id", "run PLAN"] if cycle % 2 else ["drain --run-id", "drain"])
        if recovery == "drain":
            wait_until_rescuable(wb, run_id)
        done = fork(command(recovery, wb, run_id)).wait()
        recovered_by[recovery] += 1
        what = f"seed {SEED}, cycle {cycle}: {victim_kind} killed at {label}, then {recovery}"
        assert done.code == 0, f"{what}: exit {done.code}\n{done.output}"
        assert "Traceback" not in done.output and "database is locked" not in done.output, f"{what}\n{done.output}"
        check_run(wb, run_id)

    # One more run, killed mid-suite, finished by the real console entry point (not a fork).
    run_id = "real-cli"
    run_ids.append(run_id)
    wb.queue(run_id, [PhaseScript("a", OK, max_attempts=3)])
    victim = fork(command("run --run-id", wb, run_id), SUITE_RUNNING.arm(1))
    assert victim.wait().killed
    kills[SUITE_RUNNING.name] += 1
    real = wb.cli("run", "--run-id", run_id)
    assert real.returncode == 0, real.stdout + real.stderr
    check_run(wb, run_id)

    total = sum(kills.values())
    elapsed = time.monotonic() - started
    print(f"\nchaos (seed {SEED}): {total} SIGKILLs over {len(run_ids)} runs in {elapsed:.0f} s")
    for label, n in sorted(kills.items()):
        print(f"  {n:3d}  {label}")
    print(f"  recoveries by command: {dict(recovered_by)}; commands that finished before their kill: "
          f"{dict(missed)}")

    assert total >= 50
    assert len([k for k in kills if not k.startswith("random")]) >= 20  # nearly every named kill point fired
    if isinstance(wb.db, Path):
        assert query(wb.db, "PRAGMA integrity_check") == [("ok",)]
        assert query(wb.db, "PRAGMA foreign_key_check") == []
    assert query(wb.db, "SELECT count(*) FROM attempts WHERE state = 'running'") == [(0,)]
    assert query(wb.db, "SELECT count(*) FROM phases WHERE state != 'complete'") == [(0,)]
    assert query(wb.db, "SELECT phase_pk, number FROM attempts GROUP BY phase_pk, number HAVING count(*) > 1") == []
    for run_id in run_ids:
        check_run(wb, run_id)


def test_a_forked_command_killed_at_once_still_has_its_output_files(tmp_path: Path) -> None:
    """The harness itself: a SIGKILL that lands before the child ran a single line (the chaos
    test's random delay may be 0) leaves empty output files, never a missing one."""
    for _ in range(20):
        victim = forkcli.spawn(["--version"], cwd=tmp_path, env=dict(os.environ), logs=tmp_path / "logs")
        victim.kill()
        ended = victim.wait()
        assert ended.killed or ended.code == 0, ended


def test_a_suite_orphaned_by_sigkill_is_stopped_before_the_next_suite_starts(tmp_path: Path) -> None:
    """SIGKILL gives autopack no chance to stop its suite (a session of its own); the next
    suite run of the run finds the recorded process group and kills it first."""
    from autopack.orphans import SUITE_PIDFILE

    stray = Path(__file__).resolve().parent / "hostile" / "code" / "stray_processes.py"
    pids_file, logs = tmp_path / "pids", tmp_path / "logs"
    suite = suite_of_a_sigkilled_autopack(
        tmp_path, f"python {stray} {pids_file} --hang",
        lambda: pids_file.exists() and len(pids_file.read_text().split()) >= 51, "the suite never started its processes")
    orphans = [int(p) for p in pids_file.read_text().split()]
    alive = lambda: [p for p in orphans if Path(f"/proc/{p}").exists()  # noqa: E731
                     and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    try:
        assert len(alive()) == len(orphans) and (logs / SUITE_PIDFILE).exists()
        report = suite("true")  # the next suite of this run
        assert report.exit_code == 0
        assert alive() == []  # gone before the next suite started
        assert not (logs / SUITE_PIDFILE).exists()
    finally:
        for orphan in orphans:
            try:
                os.kill(orphan, signal.SIGKILL)
            except ProcessLookupError:
                pass
