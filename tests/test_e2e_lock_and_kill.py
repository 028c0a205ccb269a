"""Two processes, one run: the lock, a SIGKILL mid-test-run, and Ctrl-C, all through the real CLI.

The project's phase writes a test that waits while a "gate" file outside the repository
exists, so a test can hold an attempt in ``ci_running`` for as long as it needs, then
open the gate to make the suite fast again for the run that resumes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import git

RUN_ID = "slow-demo"
PLAN = f"""\
[run]
id = "{RUN_ID}"
goal = "Add a test that waits for a gate"
cassette = "cassette.jsonl"
builder = "single"

[[phases]]
id = "add-slow"
goal = "Add tests/test_slow.py"
category = "tests"
scope = ["tests/"]
deliverables = ["tests/test_slow.py"]
"""
SLOW_TEST = """\
import os
import pathlib
import time

GATE = pathlib.Path({gate!r})


def test_waits_for_the_gate():
    (GATE.parent / "pid.tmp").write_text(str(os.getpid()))
    (GATE.parent / "pid.tmp").replace(GATE.parent / "pid")  # whole or absent, never half-written
    deadline = time.monotonic() + 60
    while GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""


def cassette_line(attempt: int, content: str) -> str:
    body = {"id": f"msg_{attempt}", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
            "content": [{"type": "tool_use", "id": f"toolu_{attempt}", "name": "write_file",
                         "input": {"path": "tests/test_slow.py", "content": content}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 50}}
    return json.dumps({"role": "builder", "phase": "add-slow", "attempt": attempt,
                       "response": {"status": 200, "headers": {}, "body": body}})


class Gate:
    """A file outside the repository: while it exists, the phase's test waits."""

    def __init__(self, directory: Path):
        directory.mkdir()
        self.path = directory / "closed"
        self.pid_file = directory / "pid"

    def close(self) -> None:
        self.path.touch()

    def open(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path / "gate")


@pytest.fixture
def project(tmp_path: Path, gate: Gate, make_git_project: Callable[[Path], Path]) -> Path:
    project = tmp_path / "slow"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_base.py").write_text("def test_base():\n    assert 1 + 1 == 2\n")
    (project / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (project / "plan.toml").write_text(PLAN)
    content = SLOW_TEST.format(gate=str(gate.path))
    (project / "cassette.jsonl").write_text("".join(cassette_line(n, content) + "\n" for n in (1, 2, 3)))
    return make_git_project(project)


def query(project: Path, sql: str, *params: object) -> list[tuple]:
    """Read the state file the way an outside observer would: read-only, fresh connection."""
    db = project / ".autopack" / "autopack.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def phase_state(project: Path) -> str | None:
    found = query(project, "SELECT state FROM phases WHERE run_id = ? AND phase_id = 'add-slow'", RUN_ID)
    return found[0][0] if found else None


def attempts(project: Path) -> list[tuple[int, str]]:
    return query(project, "SELECT a.number, a.state FROM attempts a JOIN phases p ON p.pk = a.phase_pk "
                          "WHERE p.run_id = ? ORDER BY a.number", RUN_ID)


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"autopack exited with {process.returncode} before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def start_run(project: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`autopack run plan.toml` in its own session, so signals reach only what the test sends them to."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "autopack", "run", "plan.toml"], cwd=project, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def start_and_hold_in_tests(project: Path, gate: Gate, env: dict[str, str], log: Path) -> subprocess.Popen:
    gate.close()
    process = start_run(project, env, log)
    wait_for(lambda: phase_state(project) == "ci_running" and gate.pid_file.exists(),
             "the phase to reach ci_running", process)
    return process


def assert_resumed_to_completion(project: Path, autopack, first_attempt_state: str) -> None:
    done = autopack("run", "--run-id", RUN_ID, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert attempts(project) == [(1, first_attempt_state), (2, "complete")]
    assert phase_state(project) == "complete"
    [base] = query(project, "SELECT base_commit FROM runs WHERE id = ?", RUN_ID)[0]
    [commit] = git(project, "rev-list", f"{base}..autopack/{RUN_ID}").split()
    trailers = git(project, "log", "-1", "--format=%(trailers:only,unfold)", commit).splitlines()
    assert trailers == [f"Autopack-Run: {RUN_ID}", "Autopack-Phase: add-slow", "Autopack-Attempt: 2"]
    worktree = project / ".autopack" / "worktrees" / RUN_ID
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""


def test_second_process_is_refused_while_the_lock_is_held(project, autopack, base_env):
    assert autopack("run", "plan.toml", "--queue-only", cwd=project).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from autopack.lock import RunLock; "
         "lock = RunLock(Path(sys.argv[1]), sys.argv[2]); lock.acquire(); print('locked', flush=True); "
         "sys.stdin.read()",  # holds the lock until the test is done with it, however slow the machine
         str(project / ".autopack" / "locks"), RUN_ID],
        env=base_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = autopack("run", "--run-id", RUN_ID, cwd=project)
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 75, busy.stdout + busy.stderr
    [line] = busy.stderr.splitlines()
    assert line.startswith("autopack: error: ")
    assert f"pid {holder.pid}" in line and socket.gethostname() in line
    assert attempts(project) == [] and phase_state(project) == "queued"

    done = autopack("run", "--run-id", RUN_ID, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert attempts(project) == [(1, "complete")]


def test_sigkill_during_tests_is_recovered_by_the_next_run(project, gate, autopack, base_env, tmp_path):
    process = start_and_hold_in_tests(project, gate, base_env, tmp_path / "killed.log")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # The test command runs in its own process group, so it outlives autopack: stop it.
    orphan = int(gate.pid_file.read_text())
    try:
        os.killpg(os.getpgid(orphan), signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 10
    while not is_gone(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert phase_state(project) == "ci_running"
    assert attempts(project) == [(1, "running")]

    gate.open()
    assert_resumed_to_completion(project, autopack, "abandoned")
    assert query(project, "PRAGMA integrity_check") == [("ok",)]
    status = json.loads(autopack("status", RUN_ID, "--json", cwd=project).stdout)
    assert status["run"]["executors"] == []  # the killed executor is not shown as still at work
    from autopack.lock import RunLock

    with RunLock(project / ".autopack" / "locks", RUN_ID):  # free again: the OS released the dead holder's lock
        pass


def test_ctrl_c_during_tests_requeues_the_phase(project, gate, autopack, base_env, tmp_path):
    log = tmp_path / "interrupted.log"
    process = start_and_hold_in_tests(project, gate, base_env, log)
    test_pid = int(gate.pid_file.read_text())
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130, log.read_text()
    assert "Traceback" not in log.read_text()
    assert is_gone(test_pid)  # the test command's process group went down with the attempt
    assert attempts(project) == [(1, "interrupted")]
    assert phase_state(project) == "queued"
    worktree = project / ".autopack" / "worktrees" / RUN_ID
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""

    gate.open()
    assert_resumed_to_completion(project, autopack, "interrupted")
