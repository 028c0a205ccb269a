"""Several machines through one git remote (contract 6): two clones ("machines") of a project, each with
its own worktrees, one shared store and one bare repository as the remote of the run branch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import git
from drainkit import PhaseScript, Workbench

RUN = "mm"
BRANCH = f"autopack/{RUN}"
CHAIN = [PhaseScript("p1"), PhaseScript("p2", depends_on=("p1",)), PhaseScript("p3", depends_on=("p2",))]


class Machines:
    """Machine A: the Workbench's repository (it records the run); machine B: a clone of the remote."""

    def __init__(self, root: Path, settings: dict[str, str] | None = None, store_db: str = "") -> None:
        self.a = Workbench(root / "a", {"AUTOPACK_REMOTE": "origin",
                                        "AUTOPACK_WORKTREES_DIR": str(root / "a" / "worktrees"),
                                        **(settings or {})}, store_db=store_db)
        self.remote = root / "remote.git"
        git(root, "clone", "-q", "--bare", str(self.a.repo), str(self.remote), env=self.a.env)
        git(self.remote, "config", "core.logAllRefUpdates", "always", env=self.a.env)  # a reflog to audit
        git(self.a.repo, "remote", "add", "origin", str(self.remote), env=self.a.env)
        self.b_clone = root / "b" / "clone"
        git(root, "clone", "-q", str(self.remote), str(self.b_clone), env=self.a.env)
        self.b_env = self.a.env | {"AUTOPACK_WORKTREES_DIR": str(root / "b" / "worktrees")}

    def drain_a(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._cli(self.a.root, self.a.env, "drain", *args)

    def drain_b(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli_b("drain", *args)

    def cli_b(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._cli(self.b_clone, self.b_env, *args)

    def spawn_b(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "autopack", "drain", *args], cwd=self.b_clone,
                                env=self.b_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    @staticmethod
    def _cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "autopack", *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)

    def remote_head(self, branch: str = BRANCH) -> str | None:
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                               cwd=self.remote, capture_output=True, text=True)
        return found.stdout.strip() or None

    def remote_phases(self, branch: str = BRANCH) -> list[tuple[str, str]]:
        """(phase, attempt) of each commit on the remote's run branch, oldest first."""
        log = git(self.remote, "log", "--reverse", "--format=%(trailers:key=Autopack-Phase,valueonly)%x00"
                  "%(trailers:key=Autopack-Attempt,valueonly)%x01", branch, env=self.a.env)
        pairs = [entry.split("\0") for entry in log.split("\x01") if entry.strip()]
        return [(phase.strip(), attempt.strip()) for phase, attempt in pairs if phase.strip()]

    def remote_updates(self, branch: str = BRANCH) -> list[tuple[str, str]]:
        """(old, new) of every update of the remote's run branch, oldest first (from its reflog)."""
        log = (self.remote / "logs" / "refs" / "heads" / branch).read_text().splitlines()
        return [tuple(line.split()[:2]) for line in log]

    def fast_forwards_only(self) -> bool:
        zero = "0" * 40
        return all(old == zero or _is_ancestor(self.remote, old, new) for old, new in self.remote_updates())

    def foreign_commit(self, on: str, author: str = "someone") -> str:
        """A commit a person pushes to the run branch, on top of ``on``, from a third clone."""
        other = self.a.root.parent / f"other-{author}"
        if not other.exists():
            git(self.a.root.parent, "clone", "-q", str(self.remote), str(other), env=self.a.env)
        git(other, "fetch", "-q", "origin", env=self.a.env)
        git(other, "checkout", "-q", "-B", "work", on, env=self.a.env)
        (other / "NOTES.md").write_text(f"notes by {author}\n")
        git(other, "add", "NOTES.md", env=self.a.env)
        git(other, "commit", "-q", "-m", f"notes by {author}", env=self.a.env)
        git(other, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}", env=self.a.env)
        return git(other, "rev-parse", "HEAD", env=self.a.env)

    def recorded(self) -> dict[str, tuple[str, str | None]]:
        return {p["id"]: (p["state"], p["commit"]) for p in self.a.status(RUN)["phases"]}


def _is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=repo).returncode == 0


@pytest.fixture
def machines(tmp_path: Path, store_db: str) -> Machines:
    m = Machines(tmp_path, store_db=store_db)
    m.a.queue(RUN, CHAIN)
    return m


def test_machines_take_turns_and_each_continues_from_the_recorded_commit(machines: Machines):
    done = machines.drain_a("--batch-size", "1")
    assert done.returncode == 0, done.stderr
    assert [state for state, _ in machines.recorded().values()] == ["complete", "queued", "queued"]
    p1 = machines.recorded()["p1"][1]
    assert machines.remote_head() == p1  # pushed before it was recorded

    done = machines.drain_b("--batch-size", "1")  # B never had the branch: it starts from p1, not the base
    assert done.returncode == 0, done.stderr
    p2 = machines.recorded()["p2"][1]
    assert git(machines.b_clone, "rev-parse", f"{p2}^", env=machines.a.env) == p1
    assert git(machines.a.repo, "rev-parse", BRANCH, env=machines.a.env) == p1  # A's clone is behind now

    done = machines.drain_a()  # A catches up with the record before building p3
    assert done.returncode == 0, done.stderr
    recorded = machines.recorded()
    assert all(state == "complete" for state, _ in recorded.values()), recorded
    assert [p["attempts"] for p in machines.a.status(RUN)["phases"]] == [1, 1, 1]  # every phase once
    assert machines.remote_phases() == [("p1", "1"), ("p2", "1"), ("p3", "1")]  # one commit per phase, in order
    assert machines.remote_head() == recorded["p3"][1]
    assert machines.fast_forwards_only() and len(machines.remote_updates()) == 3  # each push moved it once
    # each machine worked in its own clone and worktree
    assert (machines.b_clone.parent / "worktrees" / RUN / "out" / "p2.txt").is_file()
    assert not (machines.b_clone.parent / "worktrees" / RUN / "out" / "p3.txt").exists()
    assert (machines.a.root / "worktrees" / RUN / "out" / "p3.txt").is_file()
    assert git(machines.a.repo, "rev-parse", BRANCH, env=machines.a.env) == recorded["p3"][1]


def test_a_phase_s_test_logs_are_read_on_a_machine_that_did_not_run_it(machines: Machines):
    """B reads the logs of A's attempt from the store once A's state directory is gone (issue 17 part 5)."""
    assert machines.drain_a("--batch-size", "1").returncode == 0
    state_dir = machines.a.db.parent if isinstance(machines.a.db, Path) else machines.a.root / ".autopack"
    logs_dir = state_dir / "runs" / RUN / "logs"
    originals = {path.name: path.read_text() for path in logs_dir.glob("*.log")}
    assert originals
    shutil.rmtree(state_dir / "runs")

    listed = machines.cli_b("logs", RUN, "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["test_runs"]
    assert {(e["phase"], e["log"], e["junit"]) for e in entries} == {("p1", "stored", "stored")}
    for entry in entries:
        done = machines.cli_b("logs", RUN, "p1", "--kind", entry["kind"])
        assert done.returncode == 0, done.stderr
        assert done.stdout == originals[Path(entry["log_path"]).name]
    done = machines.cli_b("logs", RUN, "p1", "--kind", "attempt", "--junit")
    assert done.returncode == 0 and "<testcase" in done.stdout, done.stderr


def test_a_refused_push_fails_the_attempt_and_overwrites_nothing(machines: Machines):
    assert machines.drain_a("--batch-size", "1").returncode == 0
    p1 = machines.recorded()["p1"][1]
    machines.a.slow_marker.write_text("")  # B's suites wait while it exists: the remote moves meanwhile
    drain = machines.spawn_b()
    try:
        deadline = time.monotonic() + 60
        while not machines.a.suite_started.exists():
            assert drain.poll() is None and time.monotonic() < deadline, drain.communicate()
            time.sleep(0.05)
        foreign = machines.foreign_commit(on=p1)
    finally:
        machines.a.slow_marker.unlink()
    out, err = drain.communicate(timeout=120)

    status = machines.a.status(RUN)
    p2 = next(p for p in status["phases"] if p["id"] == "p2")
    assert p2["state"] == "failed" and p2["last_failure"]["kind"] == "push_rejected", (out, err)
    assert "nothing was overwritten" in p2["last_failure"]["message"]
    assert p2["attempts"] == 1  # push_rejected ends the pass: no retry against a remote known to have moved
    assert machines.remote_head() == foreign  # the person's commit is still there, on top of p1
    assert git(machines.remote, "rev-parse", f"{foreign}^", env=machines.a.env) == p1
    assert machines.fast_forwards_only()
    assert git(machines.b_clone, "rev-parse", BRANCH, env=machines.a.env) == p1  # the local commit was undone
    state_dir = machines.a.db.parent if isinstance(machines.a.db, Path) else machines.b_clone / ".autopack"
    patches = list((state_dir / "runs" / RUN / "patches").glob("p2-attempt-1.patch"))
    assert patches and "out/p2.txt" in patches[0].read_text()  # the attempt's change kept as a patch

    # the next take compares the remote with the record and refuses what is not autopack's
    done = machines.drain_b("--run-id", RUN)
    assert done.returncode == 4, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and BRANCH in line and foreign[:10] in line and p1[:10] in line, line
    assert "Traceback" not in done.stderr
    assert machines.remote_head() == foreign


def test_a_machine_that_pushed_but_died_before_recording_has_its_phase_redone(machines: Machines):
    assert machines.drain_a("--batch-size", "1").returncode == 0
    p1 = machines.recorded()["p1"][1]
    # what a machine leaves that pushed p2 and died before recording it: an autopack commit on the remote
    worktree = machines.a.root / "worktrees" / RUN
    (worktree / "out" / "p2.txt").write_text("written by a machine that died\n")
    git(worktree, "add", "-A", env=machines.a.env)
    git(worktree, "commit", "-q", "-m", f"autopack: {RUN} / p2 (attempt 1)\n\nAutopack-Run: {RUN}\n"
        "Autopack-Phase: p2\nAutopack-Attempt: 1", env=machines.a.env)
    unrecorded = git(worktree, "rev-parse", "HEAD", env=machines.a.env)
    git(worktree, "push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}", env=machines.a.env)

    done = machines.drain_b("--batch-size", "1")  # B redoes p2 on top of p1 and replaces the unrecorded commit
    assert done.returncode == 0, done.stderr
    assert "never recorded" in done.stdout + done.stderr
    # the machine that died comes back with its local branch still at its unrecorded p2: the record went on
    # without that commit, so A moves its branch to the record and continues (it used to refuse the run)
    assert git(machines.a.repo, "rev-parse", BRANCH, env=machines.a.env) == unrecorded
    done = machines.drain_a()
    assert done.returncode == 0, done.stderr
    assert "went on without them" in done.stdout + done.stderr
    recorded = machines.recorded()
    assert all(state == "complete" for state, _ in recorded.values()), recorded
    assert machines.remote_phases() == [("p1", "1"), ("p2", "1"), ("p3", "1")]
    assert not _is_ancestor(machines.remote, unrecorded, machines.remote_head())  # redone, not built on
    assert git(machines.remote, "rev-parse", f"{recorded['p2'][1]}^", env=machines.a.env) == p1
    # exactly one update was no fast-forward: the one whose lease named the unrecorded commit
    rewinds = [(old, new) for old, new in machines.remote_updates()
               if old != "0" * 40 and not _is_ancestor(machines.remote, old, new)]
    assert rewinds == [(unrecorded, recorded["p2"][1])]
    # the machine that died still has its commit (nothing is lost from it)
    assert git(machines.a.repo, "cat-file", "-t", unrecorded, env=machines.a.env) == "commit"


def test_a_remote_that_lost_the_branch_gets_the_record_back_or_is_refused(machines: Machines):
    assert machines.drain_a("--batch-size", "1").returncode == 0
    p1 = machines.recorded()["p1"][1]
    git(machines.remote, "update-ref", "-d", f"refs/heads/{BRANCH}", env=machines.a.env)

    done = machines.drain_b("--run-id", RUN)  # B never had p1's commit: it cannot restore it
    assert done.returncode == 4 and "does not have" in done.stderr and p1[:10] in done.stderr, done.stderr
    assert machines.remote_head() is None and machines.recorded()["p2"][0] == "queued"

    done = machines.drain_a()  # A has it: pushes the record, then carries on
    assert done.returncode == 0, done.stderr
    assert machines.remote_phases() == [("p1", "1"), ("p2", "1"), ("p3", "1")]
    assert machines.fast_forwards_only()


def test_a_new_run_whose_branch_is_already_on_the_remote_is_refused(tmp_path: Path):
    m = Machines(tmp_path)
    plan = m.a.add_run(RUN, CHAIN)
    git(m.a.repo, "push", "-q", "origin", f"main:refs/heads/{BRANCH}", env=m.a.env)  # an older run's branch
    done = m.a.cli("run", str(plan), "--queue-only")
    assert done.returncode == 2, done.stderr
    assert f"run.id: branch {BRANCH} already exists on the remote 'origin'" in done.stderr
    assert f"git push origin --delete {BRANCH}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_remote_the_repository_lacks_is_a_plan_error(tmp_path: Path):
    wb = Workbench(tmp_path)
    plan = wb.add_run("r1", [PhaseScript("p1")])
    plan.write_text(plan.read_text().replace('[run]\n', '[run]\nremote = "upstream"\n', 1))
    done = wb.cli("run", str(plan))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "r1.toml: run.remote: 'upstream' is not a remote of" in line, line
    assert "git -C" in line and "remote add upstream" in line
    wb.env["AUTOPACK_REMOTE"] = "upstream"  # the setting names its source
    plan.write_text(plan.read_text().replace('remote = "upstream"\n', ""))
    done = wb.cli("run", str(plan))
    assert done.returncode == 2 and "remote setting (env): 'upstream' is not a remote" in done.stderr, done.stderr


def test_the_plan_key_overrides_the_setting_and_is_not_plan_content(tmp_path: Path):
    from autopack.engine.branch_sync import remote_name
    from autopack.errors import PlanError
    from autopack.plan import load_plan

    wb = Workbench(tmp_path)
    plan_path = wb.add_run("r1", [PhaseScript("p1")])
    without = load_plan(plan_path)
    plan_path.write_text(plan_path.read_text().replace('[run]\n', '[run]\nremote = "origin"\n', 1))
    plan = load_plan(plan_path)
    settings = type("S", (), {"remote": "fork"})()
    assert remote_name(settings, plan) == "origin" and remote_name(settings, without) == "fork"
    assert plan.comparable_hash() == without.comparable_hash()  # runs differing only in it still pair
    plan_path.write_text(plan_path.read_text().replace('remote = "origin"', 'remote = "-x"'))
    with pytest.raises(PlanError, match=r"run\.remote: '-x' is not a git remote name"):
        load_plan(plan_path)


def test_a_recorded_run_may_take_a_plan_that_adds_or_changes_its_remote(tmp_path: Path):
    from autopack.plan import load_plan
    from autopack.replan import changed_phases

    wb = Workbench(tmp_path)
    plan_path = wb.add_run("r1", [PhaseScript("p1")])
    recorded = load_plan(plan_path).to_dict()
    plan_path.write_text(plan_path.read_text().replace('[run]\n', '[run]\nremote = "origin"\n', 1))
    assert changed_phases(recorded, load_plan(plan_path), complete={"p1"}) == []


def test_machines_with_different_toolchains_never_share_a_baseline(tmp_path: Path, monkeypatch):
    from autopack.toolchains import baseline_key

    command = "python -m pytest -q"
    assert baseline_key(command) == baseline_key(command)
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python").write_text("#!/bin/sh\nexit 0\n")
    (other / "python").chmod(0o755)
    before = baseline_key(command)
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{os.environ['PATH']}")
    assert baseline_key(command) != before  # `python` resolves elsewhere: another interpreter
    assert baseline_key(command).startswith(command)
    monkeypatch.setattr(sys, "version", "3.99.0 (another build)")
    assert len({before, baseline_key(command)}) == 2



def test_an_unreachable_remote_stops_the_take_with_exit_4_and_claims_nothing(machines: Machines):
    git(machines.b_clone, "remote", "set-url", "origin", str(machines.b_clone.parent / "gone.git"), env=machines.a.env)
    done = machines.drain_b("--run-id", RUN)
    assert done.returncode == 4, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "git fetch origin autopack/mm failed" in line, line
    assert "without a prompt" in line and "Traceback" not in done.stderr
    assert [state for state, _ in machines.recorded().values()] == ["queued"] * 3


def test_a_machine_killed_after_its_push_and_before_recording_is_continued_by_another(tmp_path: Path):
    """A real SIGKILL between the push and the record: the remote's receive-pack (a wrapper on machine A)
    holds A inside `git push` after the remote ref moved, and A is killed there."""
    import signal

    machines = Machines(tmp_path)
    machines.a.queue(RUN, [CHAIN[0], PhaseScript("p2", ("ok", "ok"), depends_on=("p1",)), CHAIN[2]])
    assert machines.drain_a("--batch-size", "1").returncode == 0
    p1 = machines.recorded()["p1"][1]
    pushed, block = machines.a.root / "pushed", machines.a.root / "block"
    wrapper = machines.a.root / "receive-pack.sh"
    wrapper.write_text(f'#!/bin/sh\ngit receive-pack "$@"\nstatus=$?\ntouch {pushed}\n'
                       f'while [ -e {block} ]; do sleep 0.05; done\nexit $status\n')
    wrapper.chmod(0o755)
    git(machines.a.repo, "config", "remote.origin.receivepack", str(wrapper), env=machines.a.env)
    block.write_text("")
    drain = subprocess.Popen([sys.executable, "-m", "autopack", "drain", "--run-id", RUN], cwd=machines.a.root,
                             env=machines.a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not pushed.exists():
            assert drain.poll() is None and time.monotonic() < deadline, drain.communicate()
            time.sleep(0.05)
        os.kill(drain.pid, signal.SIGKILL)
        drain.communicate(timeout=60)
    finally:
        block.unlink()
    unrecorded = machines.remote_head()
    assert unrecorded != p1 and git(machines.remote, "rev-parse", f"{unrecorded}^", env=machines.a.env) == p1
    assert machines.recorded()["p2"] == ("gate", None)  # pushed, never recorded

    done = machines.drain_b("--run-id", RUN)
    assert done.returncode == 0, (done.stdout, machines.a.status(RUN))
    recorded = machines.recorded()
    assert all(state == "complete" for state, _ in recorded.values()), recorded
    assert machines.remote_phases() == [("p1", "1"), ("p2", "2"), ("p3", "1")]  # p2 redone once, nothing twice
    rewinds = [(old, new) for old, new in machines.remote_updates()
               if old != "0" * 40 and not _is_ancestor(machines.remote, old, new)]
    assert rewinds == [(unrecorded, recorded["p2"][1])]
    attempts = {p["id"]: p["attempts"] for p in machines.a.status(RUN)["phases"]}
    assert attempts == {"p1": 1, "p2": 2, "p3": 1}
