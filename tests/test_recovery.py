"""What a SIGKILL leaves outside a claim, repaired by the next command: a half-created worktree,
a state directory without its .gitignore, executors that never stopped.

Every kill here lands at a fixed point (git is made to kill the command as it starts a named
sub-command, see conftest.git_killed_at), never after a delay.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import git, git_killed_at, rows
from drainkit import PhaseScript, Workbench

RUN = "r027"


@pytest.fixture
def wb(tmp_path: Path) -> Workbench:
    return Workbench(tmp_path)


def killed_while_adding_the_worktree(wb: Workbench, step: str, *args: str) -> None:
    """Run the CLI and SIGKILL its whole session as `git worktree add` starts ``step``."""
    env = wb.env | git_killed_at(step, wb.root / "killing-git", kill="0")
    done = subprocess.run([sys.executable, "-m", "autopack", *args], cwd=wb.root, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    listing = git(wb.repo, "worktree", "list", "--porcelain", env=wb.env)
    assert "locked initializing" in listing  # the half-created worktree the kill leaves


@pytest.mark.parametrize("step", ["symbolic-ref", "reset"])
@pytest.mark.parametrize("then", ["run PLAN", "drain --run-id"])
def test_a_kill_while_the_worktree_is_created_is_repaired_by_the_next_command(wb: Workbench, step: str,
                                                                               then: str) -> None:
    plan = wb.add_run(RUN, [PhaseScript("a"), PhaseScript("b", depends_on=("a",))])
    killed_while_adding_the_worktree(wb, step, "run", str(plan))

    done = wb.cli("run", str(plan)) if then == "run PLAN" else wb.cli("drain", "--run-id", RUN)

    assert done.returncode == 0, done.stdout + done.stderr
    assert wb.phase_states(RUN) == {"a": "complete", "b": "complete"}
    assert wb.commits(RUN) == [("a", "1"), ("b", "1")]
    worktree = wb.root / "state" / "worktrees" / RUN
    assert git(worktree, "status", "--porcelain", env=wb.env) == ""
    listing = git(wb.repo, "worktree", "list", "--porcelain", env=wb.env)
    assert "locked" not in listing and listing.count("worktree ") == 2


def test_a_half_created_worktree_outside_autopacks_directory_is_refused(wb: Workbench) -> None:
    plan = wb.add_run(RUN, [PhaseScript("a")])
    killed_while_adding_the_worktree(wb, "symbolic-ref", "run", str(plan))
    wb.env["AUTOPACK_WORKTREES_DIR"] = str(wb.root / "other-worktrees")  # the recorded one is not ours now

    done = wb.cli("run", str(plan))

    assert done.returncode == 2
    assert "is on a detached HEAD" in done.stderr and "git worktree remove" in done.stderr
    assert (wb.root / "state" / "worktrees" / RUN / ".git").is_file()  # left for the user to decide


# -- the state directory's .gitignore ----------------------------------------------------


def untracked(project: Path, env: dict[str, str]) -> str:
    return git(project, "status", "--porcelain", "--untracked-files=all", env=env)


def test_a_state_dir_a_kill_left_without_its_gitignore_is_ignored_once_the_next_command_writes(
        calc_project: Path, autopack, base_env: dict[str, str]) -> None:
    (calc_project / ".autopack").mkdir()  # killed between creating the directory and writing .gitignore

    done = autopack("run", "plan.toml", "--queue-only", cwd=calc_project)

    assert done.returncode == 0, done.stderr
    assert (calc_project / ".autopack" / "autopack.db").is_file()
    assert untracked(calc_project, base_env) == ""


# What a kill (or a user) can leave: no .gitignore, an empty one (killed while writing it), a cut one.
BROKEN_IGNORES = (None, "", "# autopack's state: ne")
COMMANDS = (("status",), ("status", "calc-demo", "--json"), ("drain", "--dry-run"), ("pick-next",),
            ("migrate",), ("run", "plan.toml", "--queue-only"))


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_any_command_puts_back_the_state_dirs_gitignore(calc_project: Path, autopack, base_env: dict[str, str],
                                                       command: tuple[str, ...]) -> None:
    assert autopack("run", "plan.toml", "--queue-only", cwd=calc_project).returncode == 0
    ignore = calc_project / ".autopack" / ".gitignore"
    for broken in BROKEN_IGNORES:
        ignore.unlink(missing_ok=True)
        if broken is not None:
            ignore.write_text(broken)
        assert "?? .autopack/" in untracked(calc_project, base_env)

        done = autopack(*command, cwd=calc_project)

        assert done.returncode == 0, done.stderr
        assert untracked(calc_project, base_env) == ""


def test_a_read_command_creates_no_state_dir(calc_project: Path, autopack) -> None:
    for command in (("status",), ("status", "--json"), ("drain", "--dry-run"), ("pick-next",), ("drain",)):
        assert autopack(*command, cwd=calc_project).returncode == 0
        assert not (calc_project / ".autopack").exists(), command


# -- executors that never stopped ----------------------------------------------------------


def listed_executors(wb: Workbench) -> tuple[list[str], list[str]]:
    """The ids `status --json` lists as running and as stale (running but silent)."""
    done = wb.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    return [e["id"] for e in listing["executors"]], [e["id"] for e in listing["stale_executors"]]


def test_an_executor_killed_outside_a_claim_is_retired_by_the_next_command(wb: Workbench) -> None:
    plan = wb.add_run(RUN, [PhaseScript("a")])
    killed_while_adding_the_worktree(wb, "reset", "run", str(plan))
    [(killed,)] = rows(wb.db, "SELECT id FROM executors")
    assert listed_executors(wb) == ([killed], [])  # its heartbeat is fresh: it looks alive

    assert wb.cli("drain").returncode == 0

    assert listed_executors(wb) == ([], [])
    assert wb.phase_states(RUN) == {"a": "complete"}


def test_executors_silent_for_too_long_are_retired_and_a_recent_remote_one_is_kept(wb: Workbench) -> None:
    from autopack.store.sql import db_time

    wb.queue("r", [PhaseScript("a")])
    with wb.open_store() as store:
        register = store.register_executor
        reused = register(os.getpid(), socket.gethostname(), "autopack drain", None)  # a live pid, not autopack's
        remote = register(4242, "another-host", "autopack drain", None)
        remote_gone = register(4242, "another-host", "autopack drain", None)
    now = datetime.now(timezone.utc)
    lease_s = 120  # the default
    conn = sqlite3.connect(wb.db)
    with conn:
        for executor_id, silent_s in ((reused, 2 * lease_s), (remote, 2 * lease_s), (remote_gone, 11 * lease_s)):
            conn.execute("UPDATE executors SET heartbeat_at = ? WHERE id = ?",
                         (db_time(now - timedelta(seconds=silent_s)), executor_id))
    conn.close()
    assert listed_executors(wb) == ([], [reused, remote, remote_gone])

    assert wb.cli("drain").returncode == 0

    assert listed_executors(wb) == ([], [remote])  # another host's, silent for two leases: not provably dead
