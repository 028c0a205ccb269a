"""Hostile code in the target project's tests (tests/hostile/code/): what autopack contains, and what it cannot.

The project's test command is code an LLM just edited, run as your user. autopack scrubs
its environment, confines it to a process group it kills, caps what it keeps of its output,
and checks the run branch before it commits; it is not a sandbox (docs/guarantees.md).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from drainkit import Workbench, builder_line
from conftest import git, suite_of_a_sigkilled_autopack
from hostile import forkcli

CODE = Path(__file__).resolve().parent / "hostile" / "code"
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-hostile-0001", "GITHUB_TOKEN": "ghp_hostile0002",
           "MY_PASSWORD": "hunter2-hostile-0003", "AWS_SECRET_ACCESS_KEY": "aws-hostile-0004",
           "AUTOPACK_DB_PASSWORD": "ap-hostile-0005",
           # channels to credentials: agents, askpass helpers, credential files, cloud sessions
           "SSH_AUTH_SOCK": "/tmp/ssh-hostile/agent.0007", "SSH_AGENT_PID": "hostile-0008",
           "GPG_AGENT_INFO": "/run/gpg-hostile-0009", "GIT_ASKPASS": "/usr/bin/askpass-hostile-0010",
           "SSH_ASKPASS": "/usr/bin/askpass-hostile-0011", "AWS_ACCESS_KEY_ID": "AKIAHOSTILE0012",
           "AWS_SESSION_TOKEN": "aws-session-hostile-0013", "AWS_PROFILE": "prod-hostile-0014",
           "GOOGLE_APPLICATION_CREDENTIALS": "/keys/gcp-hostile-0015.json",
           "AZURE_CLIENT_SECRET": "azure-hostile-0016", "KUBECONFIG": "/keys/kube-hostile-0017",
           "DOCKER_AUTH_CONFIG": "docker-hostile-0018", "NETRC": "/keys/netrc-hostile-0019",
           "KRB5CCNAME": "FILE:/tmp/krb5cc-hostile-0020"}


class Project:
    """A drainkit workbench whose runs use a hostile test command."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None):
        self.wb = Workbench(root)
        self.env = {**self.wb.env, **(extra_env or {})}
        self.logs = root / "cli-logs"
        self.runs = 0

    def run(self, script: str, *args: str, limits: str = "", attempts: int = 3,
            prepare: Callable[[], None] | None = None) -> tuple[str, forkcli.Finished]:
        self.runs += 1
        run_id = f"hostile{self.runs}"
        command = " ".join(["python", str(CODE / script), *args])
        plan = self.wb.plans / f"{run_id}.toml"
        plan.write_text(f'[run]\nid = "{run_id}"\ngoal = "g"\nrepo = "../repo"\ntest_command = {json.dumps(command)}\n'
                        f'cassette = "{run_id}.jsonl"\nbuilder = "single"\n{limits}\n'
                        f'[[phases]]\nid = "a"\ngoal = "Write out/a.txt"\nscope = ["out/a.txt"]\n'
                        f'deliverables = ["out/a.txt"]\nmax_attempts = {attempts}\n')
        lines = [builder_line("a", n, "out/a.txt", f"attempt {n}\n") for n in range(1, attempts + 1)]
        (self.wb.plans / f"{run_id}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        done = forkcli.run(["run", str(plan)], cwd=self.wb.root, env=self.env, logs=self.logs, prepare=prepare)
        assert "Traceback" not in done.output, done.output
        return run_id, done

    def attempts(self, run_id: str) -> list[tuple[int, str, str | None]]:
        with self.wb.open_store() as store:
            phase = store.phase(run_id, "a")
            return [(a.number, a.state, a.failure_kind) for a in store.attempts(phase.pk)]


def is_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def every_byte_under(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def test_the_test_command_never_sees_secrets(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", {**SECRETS, "MY_VISIBLE_SETTING": "visible-0006"})
    dump = tmp_path / "env.json"
    run_id, done = project.run("env_dump.py", str(dump))
    assert done.code == 0, done.output
    seen = json.loads(dump.read_text())
    assert seen["MY_VISIBLE_SETTING"] == "visible-0006"  # the dump worked
    assert not set(SECRETS) & set(seen)
    stored = every_byte_under(project.wb.db.parent)  # logs, JUnit, patches, the database
    assert b"visible-0006" in stored  # the printed environment was kept in the log
    for value in SECRETS.values():
        assert value.encode() not in stored and value not in dump.read_text()


HANGS = pytest.mark.parametrize("hang", [False, True], ids=["suite-exits", "suite-hangs-until-timeout"])


def hang_limits(hang: bool) -> str:
    """A hung suite is stopped by phase_timeout_s; one that exits gets no limit to race."""
    return "[run.limits]\nphase_timeout_s = 5\n" if hang else ""


def test_env_allow_brings_back_a_scrubbed_name(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", {**SECRETS, "AUTOPACK_ENV_ALLOW": "SSH_AUTH_SOCK"})
    dump = tmp_path / "env.json"
    run_id, done = project.run("env_dump.py", str(dump))
    assert done.code == 0, done.output
    seen = json.loads(dump.read_text())
    assert seen["SSH_AUTH_SOCK"] == SECRETS["SSH_AUTH_SOCK"]
    assert set(SECRETS) & set(seen) == {"SSH_AUTH_SOCK"}


@HANGS
def test_grandchildren_and_fork_loops_are_gone_after_the_suite(tmp_path: Path, hang: bool) -> None:
    project = Project(tmp_path / "p")
    pidfile = tmp_path / "pids"
    args = (str(pidfile), "--hang") if hang else (str(pidfile),)
    run_id, done = project.run("stray_processes.py", *args, limits=hang_limits(hang), attempts=1)
    pids = [int(line) for line in pidfile.read_text().split()]
    assert len(pids) >= 51  # a sleep 10000 grandchild and 50 forks per suite run
    try:
        assert [pid for pid in pids if not is_gone(pid)] == []  # gone by the time autopack is done
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if hang:
        assert done.code == 1 and project.attempts(run_id)[-1][2] == "timeout", done.output
    else:
        assert done.code == 0, done.output


def sleepers(marker: str) -> list[int]:
    """Live ``sleep MARKER…`` processes, wherever they are (a zombie has no cmdline: it does not count)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(b"sleep") and argv[1].startswith(marker.encode()):
            found.append(int(entry.name))
    return found


@pytest.fixture
def sleeper_marker() -> Iterator[str]:
    """A unique ``sleep`` argument (``1000.<digits>``); every sleeper with it is killed afterwards."""
    marker = f"1000.{uuid.uuid4().int % 10**12}"
    yield marker
    for pid in sleepers(marker):
        os.kill(pid, signal.SIGKILL)


@HANGS
def test_processes_that_leave_the_suites_session_are_gone_after_the_suite(
        tmp_path: Path, hang: bool, sleeper_marker: str) -> None:
    """`setsid sleep &` and a double fork inside `setsid` leave the suite's session and
    process group: a group kill misses them. autopack kills every descendant of the suite."""
    project = Project(tmp_path / "p")
    ready = tmp_path / "escaped"
    args = (sleeper_marker, "--ready", str(ready), *(("--hang",) if hang else ()))
    run_id, done = project.run("escape_session.py", *args, limits=hang_limits(hang), attempts=1)
    assert ready.exists(), "the suite never got its sleepers out of its session"
    assert sleepers(sleeper_marker) == []
    if hang:
        assert done.code == 1 and project.attempts(run_id)[-1][2] == "timeout", done.output
    else:
        assert done.code == 0, done.output


def test_processes_that_left_the_session_of_a_sigkilled_autopacks_suite_are_stopped(
        tmp_path: Path, sleeper_marker: str) -> None:
    """autopack is SIGKILLed while its suite runs: the sleepers that left the suite's session
    outlive both, reparented away from the suite's tree. The next suite of that run finds
    them by the suite's environment marker and kills them before it starts."""
    from autopack.orphans import SUITE_PIDFILE

    logs, ready = tmp_path / "logs", tmp_path / "escaped"
    suite = suite_of_a_sigkilled_autopack(
        tmp_path, f"{sys.executable} {CODE / 'escape_session.py'} {sleeper_marker} --ready {ready} --hang",
        ready.exists, "the suite never got its sleepers out of its session")
    assert len(sleepers(sleeper_marker)) == 2 and (logs / SUITE_PIDFILE).exists()
    assert suite("true").exit_code == 0  # the next suite of this run
    assert sleepers(sleeper_marker) == []
    assert not (logs / SUITE_PIDFILE).exists()


def test_a_gigabyte_of_output_keeps_memory_and_the_stored_log_bounded(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", {"AUTOPACK_MAX_OUTPUT_BYTES": "1000000"})
    peak = forkcli.PeakRss()
    run_id, done = project.run("flood.py", prepare=peak.arm, attempts=1)
    assert done.code == 0, done.output
    growth = peak.read()
    assert growth < 100 * 1024, f"autopack's memory grew by {growth} KiB"
    with closing(sqlite3.connect(project.wb.db)) as db:
        (size, truncated, log) = db.execute("SELECT output_bytes, output_truncated, log_path FROM test_runs "
                                            "WHERE run_id = ? AND kind = 'attempt'", (run_id,)).fetchone()
    assert size >= 1 << 30 and truncated
    assert 1_000_000 <= Path(log).stat().st_size < 1_001_000


TAMPERING = ["delete-branch", "move-branch", "own-commit", "exclude", "corrupt-head"]
# Workspace.seal/check_seal detect and undo it (tested below); the runner seals every attempt.


def sealed_workspace(tmp_path: Path, branch: str) -> tuple[Any, Path, dict[str, str], str]:
    """A run worktree on ``branch``, sealed: (workspace, repository, environment, base commit)."""
    from autopack.workspace import Workspace

    project = Project(tmp_path / "p")
    repo, env = project.wb.repo, project.wb.env
    base = git(repo, "rev-parse", "main", env=env)
    workspace = Workspace(repo, tmp_path / "wt", branch)
    workspace.ensure(base)
    workspace.seal()
    return workspace, repo, env, base


@pytest.mark.parametrize("mode", TAMPERING)
def test_the_workspace_seal_detects_and_undoes_git_tampering(tmp_path: Path, mode: str) -> None:
    from autopack.workspace import GitTampered

    workspace, repo, env, base = sealed_workspace(tmp_path, "autopack/sealed")
    workspace.check_seal()  # nothing changed: no error
    (workspace.worktree / "out" / "a.txt").write_text("the phase's change\n")
    tree = workspace.stage_all()
    hostile = subprocess.run([sys.executable, str(CODE / "tamper_git.py"), mode, str(tmp_path / "once")],
                             cwd=workspace.worktree, env=env, capture_output=True, text=True)
    assert hostile.returncode == 0, hostile.stderr
    with pytest.raises(GitTampered, match="changed the run's git state"):
        workspace.check_seal(tree)
    workspace.check_seal()  # restored: the same seal holds again
    assert git(repo, "rev-parse", "autopack/sealed", env=env) == base
    workspace.stage_all()
    workspace.reset_clean()
    assert git(workspace.worktree, "status", "--porcelain", "--untracked-files=all", env=env) == ""


def test_a_commit_refuses_an_index_that_differs_from_the_tested_tree(tmp_path: Path) -> None:
    from autopack.workspace import GitTampered

    workspace, repo, env, base = sealed_workspace(tmp_path, "autopack/index")
    (workspace.worktree / "out" / "a.txt").write_text("tested\n")
    tested = workspace.stage_all()
    (workspace.worktree / "out" / "sneaky.txt").write_text("added by a test after staging\n")
    git(workspace.worktree, "add", "out/sneaky.txt", env=env)
    with pytest.raises(GitTampered, match="not the tested"):
        workspace.commit_staged("m", {"Autopack-Phase": "a"}, staged_tree=tested)
    assert git(repo, "rev-parse", "autopack/index", env=env) == base
    git(workspace.worktree, "rm", "-q", "--cached", "out/sneaky.txt", env=env)
    commit = workspace.commit_staged("m", {"Autopack-Phase": "a"}, staged_tree=tested)
    assert git(repo, "rev-parse", "autopack/index", env=env) == commit
    workspace.check_seal()  # the seal moved with autopack's own commit


@pytest.mark.parametrize("mode", TAMPERING)
def test_a_test_that_tampers_with_git_fails_its_attempt_and_the_run_recovers(tmp_path: Path, mode: str) -> None:
    project = Project(tmp_path / "p")
    once = tmp_path / "tampered"
    base = git(project.wb.repo, "rev-parse", "main", env=project.wb.env)
    run_id, done = project.run("tamper_git.py", mode, str(once))
    assert once.exists(), "the hostile test never ran its tampering"
    history = project.attempts(run_id)
    assert history[0][1:] == ("failed", "git_tampered"), history
    assert done.code == 0 and history[-1][1] == "complete", done.output
    branch = f"autopack/{run_id}"
    commits = git(project.wb.repo, "rev-list", f"{base}..{branch}", env=project.wb.env).split()
    assert len(commits) == 1 and git(project.wb.repo, "rev-parse", f"{commits[0]}^", env=project.wb.env) == base
    assert "out/a.txt" in git(project.wb.repo, "show", "--name-only", "--format=", commits[0], env=project.wb.env)


def test_what_a_test_can_see_of_autopacks_database(tmp_path: Path) -> None:
    """Enforced: the database is neither in the test's working directory nor named in its
    environment. Not enforced (documented): a test running as your user that searches the
    file system finds it, by default in an ancestor of the worktree, and could write it."""
    project = Project(tmp_path / "p")
    report = tmp_path / "db-search.json"
    run_id, done = project.run("find_db.py", str(report))
    assert done.code == 0, done.output
    seen = json.loads(report.read_text())
    assert seen["in_cwd"] == [] and seen["autopack_env"] == []
    assert not str(project.wb.db).startswith(seen["cwd"])
    assert seen["in_ancestors"] == [str(project.wb.db)]  # the documented limit: not a sandbox
