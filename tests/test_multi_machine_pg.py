"""Two machines, one PostgreSQL store, four drains and SIGKILLs (contract 6; issue 17 part 6).

Machine A is the Workbench's repository, machine B a clone of the bare remote; each has its own
worktrees and state directory (``.autopack`` of the clone its drains run in). 10 runs of 10
chained phases are queued in the one PostgreSQL store; two `autopack drain` processes per machine
work them. Three drains are SIGKILLed: two at named points by a wrapper around autopack's git
(``GIT_PYTHON_GIT_EXECUTABLE``) that kills its caller once, one after the store shows a number of
complete phases (which live drain: from the seed). Replacements are started until every phase
is complete.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import chosen_seed, git, rows
from drainkit import PhaseScript
from test_multi_machine import Machines, _is_ancestor

RUNS, PHASES, PER_MACHINE = 10, 10, 2
ZERO = "0" * 40
# The named kill points: the drain that pushed run02/p3 dies right after the remote took it (before the
# store records it); the drain about to commit run05/p6 (its suite passed) dies before the commit.
PUSHED_UNRECORDED, BEFORE_COMMIT = ("run02", "p3"), ("run05", "p6")
WRAPPER = """\
#!/bin/sh
# autopack's git for this test: SIGKILL the calling drain ($PPID) at a named point, once per point.
real={real}
marks={marks}
for arg; do
  case "$arg" in
    *":refs/heads/autopack/{push_run}") pushed=${{arg%%:*}} ;;
    *"Autopack-Run: {commit_run}"*"Autopack-Phase: {commit_phase}"*) committing=yes ;;
  esac
done
if [ -n "$committing" ] && mkdir "$marks/before-commit" 2>/dev/null; then
  kill -KILL $PPID; exit 1
fi
"$real" "$@"
status=$?
if [ -n "$pushed" ] && [ $status = 0 ] && \\
   [ "$("$real" -C "$2" log -1 --format=%\\(trailers:key=Autopack-Phase,valueonly\\) "$pushed")" = "{push_phase}" ] && \\
   mkdir "$marks/pushed-unrecorded" 2>/dev/null; then
  kill -KILL $PPID
fi
exit $status
"""


@dataclass
class Drain:
    machine: str
    proc: subprocess.Popen[str]
    killed_by_test: bool = False
    output: tuple[str, str] = ("", "")

    @property
    def name(self) -> str:
        return f"{self.machine}:{self.proc.pid}"


@dataclass
class Fleet:
    """The drains of both machines: started, reaped and replaced."""

    machines: Machines
    env: dict[str, dict[str, str]]
    cwd: dict[str, Path]
    drains: list[Drain] = field(default_factory=list)

    def spawn(self, machine: str) -> Drain:
        proc = subprocess.Popen([sys.executable, "-m", "autopack", "drain", "--batch-size", "1000", "--quiet"],
                                cwd=self.cwd[machine], env=self.env[machine], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        drain = Drain(machine, proc)
        self.drains.append(drain)
        return drain

    def alive(self, machine: str | None = None) -> list[Drain]:
        return [d for d in self.drains if d.proc.poll() is None and machine in (None, d.machine)]

    def reap(self) -> None:
        for d in self.drains:
            if d.proc.poll() is not None and d.proc.stdout and not d.proc.stdout.closed:
                d.output = d.proc.communicate()

    def errors(self) -> set[str]:
        """The last stderr line of each drain that exited with one."""
        self.reap()
        return {d.output[1].strip().splitlines()[-1] for d in self.drains if d.output[1].strip()}

    def stop_all(self) -> None:
        for d in self.alive():
            d.proc.kill()
        for d in self.drains:
            if d.proc.stdout and not d.proc.stdout.closed:
                d.output = d.proc.communicate()


def complete_phases(db: str) -> int:
    return rows(db, "SELECT count(*) FROM phases WHERE state = 'complete'")[0][0]


def unfinished(db: str, fleet: Fleet) -> str:
    """The phases not complete (state, last failure) and the drains' last stderr lines: why the work is stuck."""
    left = rows(db, "SELECT run_id, phase_id, state, failure_kind FROM phases WHERE state != 'complete' "
                    "ORDER BY run_id, position")
    return f"{len(left)} phases not complete, first {left[:5]}; drains said {sorted(fleet.errors())[:5]}"


def git_wrapper(directory: Path) -> Path:
    marks = directory / "fired"
    marks.mkdir(parents=True)
    wrapper = directory / "git"
    wrapper.write_text(WRAPPER.format(real=shutil.which("git"), marks=marks, push_run=PUSHED_UNRECORDED[0],
                                      push_phase=PUSHED_UNRECORDED[1], commit_run=BEFORE_COMMIT[0],
                                      commit_phase=BEFORE_COMMIT[1]))
    wrapper.chmod(0o755)
    return marks


def test_four_drains_on_two_machines_complete_every_phase_once_through_sigkills(tmp_path: Path, pg_url: str):
    rng = random.Random(chosen_seed(17))
    kill_after = rng.randrange(25, 60)  # complete phases before the third kill
    settings = {"AUTOPACK_LEASE_S": "2", "AUTOPACK_HEARTBEAT_S": "1"}
    m = Machines(tmp_path, settings, store_db=pg_url)
    runs = {f"run{r:02d}": [PhaseScript(f"p{n}", ("ok",) * 3, depends_on=(f"p{n - 1}",) if n else ())
                            for n in range(PHASES)] for r in range(RUNS)}
    m.a.queue_many(runs)
    marks = git_wrapper(tmp_path / "faults")
    with_wrapper = {"GIT_PYTHON_GIT_EXECUTABLE": str(tmp_path / "faults" / "git")}
    fleet = Fleet(m, env={"a": m.a.env | with_wrapper, "b": m.b_env | with_wrapper},
                  cwd={"a": m.a.repo, "b": m.b_clone})  # each machine's drains run inside its own clone

    started = time.monotonic()
    deadline, spawn_limit, third_kill = started + 170, 60, None
    try:
        while complete_phases(pg_url) < RUNS * PHASES:
            assert time.monotonic() < deadline, f"at the deadline: {unfinished(pg_url, fleet)}"
            fleet.reap()
            if third_kill is None and complete_phases(pg_url) >= kill_after and fleet.alive():
                third_kill = rng.choice(sorted(fleet.alive(), key=lambda d: d.proc.pid))
                os.kill(third_kill.proc.pid, signal.SIGKILL)
                third_kill.killed_by_test = True
                third_kill.output = third_kill.proc.communicate()
            for machine in ("a", "b"):
                while len(fleet.alive(machine)) < PER_MACHINE:
                    started_drains = len(fleet.drains)
                    assert started_drains < spawn_limit, f"{started_drains} drains: {unfinished(pg_url, fleet)}"
                    fleet.spawn(machine)
            time.sleep(0.2)
        for d in fleet.alive():
            d.output = d.proc.communicate(timeout=60)
    finally:
        fleet.stop_all()
    elapsed = time.monotonic() - started

    killed = [d for d in fleet.drains if d.proc.returncode == -signal.SIGKILL]
    print(f"\n{len(fleet.drains)} drains ({len(killed)} SIGKILLed: {[d.name for d in killed]}) completed "
          f"{RUNS * PHASES} phases in {RUNS} runs on 2 machines in {elapsed:.1f} s; third kill after "
          f"{kill_after} complete phases")
    assert sorted(p.name for p in marks.iterdir()) == ["before-commit", "pushed-unrecorded"]
    assert third_kill is not None and len(killed) == 3, [(d.name, d.proc.returncode) for d in fleet.drains]
    for d in fleet.drains:
        assert "Traceback" not in d.output[1], (d.name, d.output[1])
        assert d in killed or d.proc.returncode == 0, (d.name, d.proc.returncode, d.output)
    assert {m for m in ("a", "b") if any(d.machine == m and d.proc.returncode == 0 for d in fleet.drains)} == {"a", "b"}

    # every phase complete, by exactly one complete attempt whose commit is the recorded one
    phases = rows(pg_url, "SELECT p.run_id, p.phase_id, p.state, p.commit, a.number, a.commit FROM phases p "
                          "JOIN attempts a ON a.phase_pk = p.pk AND a.state = 'complete' ORDER BY p.run_id, p.position")
    assert len(phases) == RUNS * PHASES and len({(r, p) for r, p, *_ in phases}) == RUNS * PHASES
    assert all(state == "complete" and commit == attempt_commit for _, _, state, commit, _, attempt_commit in phases)
    redone = {(r, p) for r, p, n in rows(pg_url, "SELECT run_id, phase_id, attempts FROM phases") if n > 1}
    assert {PUSHED_UNRECORDED, BEFORE_COMMIT} <= redone and len(redone) <= 3, redone
    recorded = {(r, p): (commit, number) for r, p, _, commit, number, _ in phases}

    for run_id in runs:
        branch = f"autopack/{run_id}"
        # one commit per phase on the remote branch, in plan order, each the recorded complete attempt's
        expected = [(f"p{n}", str(recorded[run_id, f"p{n}"][1])) for n in range(PHASES)]
        assert m.remote_phases(branch) == expected, run_id
        base = rows(pg_url, "SELECT base_commit FROM runs WHERE id = ?", run_id)[0][0]
        chain = [recorded[run_id, f"p{n}"][0] for n in range(PHASES)]
        assert git(m.remote, "rev-list", "--reverse", branch, f"^{base}", env=m.a.env).split() == chain, run_id
        assert m.remote_head(branch) == chain[-1]  # no recorded commit is lost
        # nothing pushed twice; the only rewinds replace a commit pushed but never recorded, by the record
        updates = m.remote_updates(branch)
        assert len({new for _, new in updates}) == len(updates), (run_id, updates)
        rewinds = [(old, new) for old, new in updates if old != ZERO and not _is_ancestor(m.remote, old, new)]
        for old, new in rewinds:
            phase = git(m.remote, "log", "-1", "--format=%(trailers:key=Autopack-Phase,valueonly)", old,
                        env=m.a.env).strip()
            assert old not in chain and new == recorded[run_id, phase][0], (run_id, old, new)
            assert git(m.remote, "rev-parse", f"{old}^", env=m.a.env) == git(m.remote, "rev-parse", f"{new}^",
                                                                               env=m.a.env)
        assert len(updates) == PHASES + len(rewinds), (run_id, updates)
        if run_id == PUSHED_UNRECORDED[0]:
            assert len(rewinds) >= 1 and any(recorded[PUSHED_UNRECORDED][0] == new for _, new in rewinds)
