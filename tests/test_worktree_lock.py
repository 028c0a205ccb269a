"""The repository's worktree lock: one process at a time changes git's worktree registrations.

While `git worktree add` writes a registration file by file, `git worktree list`/`add` and `git
fetch` in another process die ("failed to read .git/worktrees/<name>/commondir"); drains of two
runs in one repository used to hit that window. The writer here is a real second process holding
the lock over the registration git leaves at that moment.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import autopack.adapters.git.worktree_lock as worktree_lock_module
from autopack.adapters.git.calls import resolve_ref
from autopack.adapters.git.remote import RemoteBranch
from autopack.adapters.git.worktree_lock import LOCK_NAME, worktree_lock
from autopack.errors import EnvironmentProblem
from autopack.workspace import Workspace
from test_workspace import git, half_created_worktree, make_repo, no_git_config  # noqa: F401 (a fixture)

HOLDER = """
import sys
from pathlib import Path
from autopack.adapters.git.worktree_lock import worktree_lock
with worktree_lock(Path(sys.argv[1]), shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    sys.stdin.readline()
"""


class Holder:
    """Another process holding the repository's worktree lock until ``release()``."""

    def __init__(self, repo: Path, shared: bool = False) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(repo), "shared" if shared else "exclusive"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline() == "held\n"

    def release(self) -> None:
        self.process.communicate("\n", timeout=30)
        assert self.process.returncode == 0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return a + b\n"})


@pytest.fixture
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worktree_lock_module, "WAIT_S", 0.3)


def finish_the_add(repo: Path, name: str) -> None:
    """What git writes after ``commondir`` to end its `worktree add`: HEAD, then the lock removed."""
    admin = repo / ".git" / "worktrees" / name
    (admin / "commondir").write_text("../..\n")
    (admin / "HEAD").write_text(resolve_ref(repo, None) + "\n")
    (admin / "locked").unlink()


def test_ensure_waits_for_another_process_adding_a_worktree_instead_of_failing_on_its_registration(
        repo: Path, tmp_path: Path, short_wait: None) -> None:
    other = tmp_path / "worktrees" / "other"
    half_created_worktree(repo, other, "autopack/other", "commondir", tmp_path)  # mid `worktree add`
    adding = Holder(repo)
    workspace = Workspace(repo, tmp_path / "worktrees" / "run1", "autopack/run1", owned=True)

    with pytest.raises(EnvironmentProblem, match=f"{LOCK_NAME}: another process has held the repository's "
                                                 "worktree lock for over 0.3 s"):
        workspace.ensure(resolve_ref(repo, None))
    assert not workspace.worktree.exists()
    assert git(repo, "branch", "--list", "autopack/run1") == ""  # it did nothing before it had the lock

    worktree_lock_module.WAIT_S = 60
    waiting = threading.Thread(target=workspace.ensure, args=(resolve_ref(repo, None),))
    waiting.start()
    finish_the_add(repo, "other")
    adding.release()
    waiting.join(timeout=60)

    assert git(workspace.worktree, "symbolic-ref", "HEAD") == "refs/heads/autopack/run1"
    listing = git(repo, "worktree", "list", "--porcelain")
    assert listing.count("worktree ") == 3 and str(other) in listing


def test_shared_holders_coexist_and_keep_a_writer_out(repo: Path) -> None:
    lister = Holder(repo, shared=True)
    with worktree_lock(repo, shared=True, wait_s=0):
        pass
    with pytest.raises(EnvironmentProblem, match=LOCK_NAME):
        with worktree_lock(repo, wait_s=0.2):
            pass
    lister.release()
    with worktree_lock(repo, wait_s=0):
        with worktree_lock(repo, shared=True):  # nested in this process: covered by the outer hold
            pass


def test_a_fetch_waits_for_a_worktree_being_added_instead_of_calling_the_remote_unreachable(
        repo: Path, tmp_path: Path, short_wait: None) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main:refs/heads/autopack/run1")
    half_created_worktree(repo, tmp_path / "worktrees" / "other", "autopack/other", "commondir", tmp_path)
    adding = Holder(repo)
    branch = RemoteBranch(repo, "origin", "autopack/run1")

    with pytest.raises(EnvironmentProblem, match=LOCK_NAME):
        branch.fetch()
    finish_the_add(repo, "other")
    adding.release()
    assert branch.fetch() == resolve_ref(repo, None)


def test_the_lock_file_lives_in_the_common_git_directory_of_a_linked_worktree(repo: Path, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    assert worktree_lock_module.lock_path(linked.resolve()) == (repo / ".git" / LOCK_NAME).resolve()
