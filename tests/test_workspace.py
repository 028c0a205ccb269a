"""Workspace: per-run git worktrees, staging, commits — on real git repositories."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git_killed_at
from autopack.errors import EnvironmentProblem, UsageError
from autopack.adapters.git.calls import RepoLocation, locate_repo, resolve_ref
from autopack.workspace import Workspace

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


@pytest.fixture(autouse=True)
def no_git_config(tmp_path_factory, monkeypatch):
    """Like a fresh machine: no global/system git config, so no identity either."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in IDENTITY:
        monkeypatch.delenv(name, raising=False)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **IDENTITY},
        capture_output=True, text=True, check=True,
    )
    return done.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(
        tmp_path / "repo",
        {
            "calc.py": "def add(a, b):\n    return a + b\n",
            ".gitignore": "cache/\n",
            "README.md": "hi\n",
        },
    )


@pytest.fixture
def workspace(repo, tmp_path) -> Workspace:
    ws = Workspace(repo, tmp_path / "worktrees" / "run1", "autopack/run1")
    ws.ensure(resolve_ref(repo, None))
    return ws


def main_checkout_state(repo: Path) -> dict[str, str]:
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "staged": git(repo, "diff", "--cached"),
        "calc": (repo / "calc.py").read_text(),
        "notes": (repo / "notes.txt").read_text(),
    }


def test_ensure_creates_branch_and_worktree_and_leaves_main_checkout_alone(repo, tmp_path):
    (repo / "calc.py").write_text("# uncommitted edit\n")
    (repo / "notes.txt").write_text("untracked\n")
    (repo / "README.md").write_text("staged edit\n")
    git(repo, "add", "README.md")
    before = main_checkout_state(repo)
    base = resolve_ref(repo, "main")

    ws = Workspace(repo, tmp_path / "wt" / "run1", "autopack/run1")
    ws.ensure(base)
    (ws.project_root / "new.py").write_text("x = 1\n")
    ws.stage_all()
    ws.commit_staged("phase one", {})
    ws.reset_clean()

    assert ws.branch_exists()
    assert (ws.worktree / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert git(ws.worktree, "symbolic-ref", "HEAD") == "refs/heads/autopack/run1"
    assert git(repo, "rev-parse", "autopack/run1~1") == base
    assert main_checkout_state(repo) == before


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_ensure_is_idempotent_and_recovers_a_deleted_worktree(workspace, repo, damage):
    (workspace.worktree / "calc.py").write_text("changed\n")
    workspace.stage_all()
    committed = workspace.commit_staged("keep me", {})

    workspace.ensure(resolve_ref(repo, None))  # existing worktree: nothing changes
    assert workspace.head() == committed

    shutil.rmtree(workspace.worktree)
    if damage == "emptied":
        workspace.worktree.mkdir()
    workspace.ensure(resolve_ref(repo, None))
    assert workspace.head() == committed  # the branch, not the base, is checked out again
    assert (workspace.worktree / "calc.py").read_text() == "changed\n"
    worktrees = git(repo, "worktree", "list", "--porcelain")
    assert worktrees.count("branch refs/heads/autopack/run1") == 1


def test_ensure_refuses_a_directory_that_is_not_the_run_worktree(repo, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "precious.txt").write_text("mine\n")
    with pytest.raises(UsageError, match="occupied"):
        Workspace(repo, occupied, "autopack/run1").ensure(resolve_ref(repo, None))
    assert (occupied / "precious.txt").read_text() == "mine\n"


@pytest.mark.parametrize("owned", [False, True])
def test_ensure_refuses_a_worktree_on_another_branch(workspace, repo, owned):
    git(workspace.worktree, "switch", "-q", "-c", "elsewhere")
    with pytest.raises(UsageError, match="refs/heads/elsewhere"):
        Workspace(repo, workspace.worktree, workspace.branch, owned=owned).ensure(resolve_ref(repo, None))


def half_created_worktree(repo: Path, path: Path, branch: str, killed: str, tmp_path: Path) -> None:
    """What a SIGKILL during `git worktree add path branch` leaves, at the step ``killed``.

    "symbolic-ref" and "reset": git really is killed as it starts that sub-command (HEAD still
    detached at 0000..., or on the branch with nothing checked out). The earlier steps happen
    inside one git process, so the files it has written by then are written here, in its order.
    """
    if killed in ("symbolic-ref", "reset"):
        env = {**os.environ, **IDENTITY, **git_killed_at(killed, tmp_path / "killing-git")}
        done = subprocess.run(["git", "worktree", "add", "--quiet", str(path), branch], cwd=repo, env=env,
                              capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr
        return
    admin = repo / ".git" / "worktrees" / path.name
    admin.mkdir(parents=True)
    (admin / "locked").write_text("initializing\n")
    if killed == "locked":
        return
    path.mkdir(parents=True)
    (admin / "gitdir").write_text(f"{path}/.git\n")
    if killed == "gitdir":
        return
    (path / ".git").write_text(f"gitdir: {admin}\n")
    if killed == ".git":
        return
    (admin / "commondir").write_text("" if killed == "commondir" else "../..\n")  # opened, killed before written
    if killed == "commondir":
        return
    (admin / "HEAD").write_text("")  # likewise: `git worktree list` fails for the whole repository on both


@pytest.mark.parametrize("killed", ["locked", "gitdir", ".git", "commondir", "HEAD", "symbolic-ref", "reset"])
def test_ensure_repairs_a_worktree_whose_creation_was_killed(repo, tmp_path, killed):
    base = resolve_ref(repo, None)
    path = tmp_path / "worktrees" / "run1"
    git(repo, "branch", "autopack/run1", base)
    half_created_worktree(repo, path, "autopack/run1", killed, tmp_path)

    Workspace(repo, path, "autopack/run1", owned=True).ensure(base)

    assert git(path, "symbolic-ref", "HEAD") == "refs/heads/autopack/run1"
    assert (path / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert git(path, "status", "--porcelain") == ""
    listing = git(repo, "worktree", "list", "--porcelain")
    assert "locked" not in listing and listing.count("worktree ") == 2
    assert sorted(os.listdir(repo / ".git" / "worktrees")) == ["run1"]  # no registration left behind


def test_ensure_leaves_a_broken_registration_of_another_path_alone(repo, tmp_path):
    """A registration under the same name whose gitdir names another path is not ours to delete."""
    base = resolve_ref(repo, None)
    git(repo, "branch", "autopack/run1", base)
    half_created_worktree(repo, tmp_path / "elsewhere" / "run1", "autopack/run1", "commondir", tmp_path)
    admin = repo / ".git" / "worktrees" / "run1"
    with pytest.raises(EnvironmentProblem):
        Workspace(repo, tmp_path / "worktrees" / "run1", "autopack/run1", owned=True).ensure(base)
    assert (admin / "gitdir").read_text() == f"{tmp_path / 'elsewhere' / 'run1'}/.git\n"


def test_ensure_refuses_a_half_created_worktree_it_does_not_own(repo, tmp_path):
    base = resolve_ref(repo, None)
    path = tmp_path / "elsewhere" / "run1"
    git(repo, "branch", "autopack/run1", base)
    half_created_worktree(repo, path, "autopack/run1", "symbolic-ref", tmp_path)
    with pytest.raises(UsageError, match="is on a detached HEAD"):
        Workspace(repo, path, "autopack/run1").ensure(base)
    assert (path / ".git").is_file()  # left as it was


@pytest.mark.parametrize("where", ["on the branch", "off the branch"])
def test_ensure_repairs_a_detached_head_only_when_no_commit_would_be_lost(workspace, repo, where):
    (workspace.worktree / "calc.py").write_text("changed\n")
    workspace.stage_all()
    tip = workspace.commit_staged("phase one", {})
    git(workspace.worktree, "switch", "-q", "--detach", "HEAD~1")
    if where == "off the branch":
        (workspace.worktree / "README.md").write_text("someone's work\n")
        git(workspace.worktree, "commit", "-q", "-am", "not on the run branch")
    detached = git(workspace.worktree, "rev-parse", "HEAD")
    owned = Workspace(repo, workspace.worktree, workspace.branch, owned=True)
    if where == "on the branch":
        owned.ensure(resolve_ref(repo, None))
        assert owned.head() == tip
        assert git(workspace.worktree, "symbolic-ref", "HEAD") == "refs/heads/autopack/run1"
        return
    with pytest.raises(UsageError, match=f"detached HEAD at {detached[:10]}.*not on branch autopack/run1"):
        owned.ensure(resolve_ref(repo, None))
    assert git(workspace.worktree, "rev-parse", "HEAD") == detached


def test_ensure_refuses_a_branch_checked_out_in_the_main_checkout(repo, tmp_path):
    git(repo, "switch", "-q", "-c", "autopack/run1")
    with pytest.raises(UsageError, match="already checked out at"):
        Workspace(repo, tmp_path / "wt", "autopack/run1").ensure(resolve_ref(repo, None))
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/autopack/run1"


def test_subdir_project_stages_only_the_subdir(tmp_path):
    repo = make_repo(tmp_path / "mono", {"svc/app.py": "a = 1\n", "other/lib.py": "b = 1\n"})
    location = locate_repo(repo / "svc")
    assert location == RepoLocation(toplevel=repo.resolve(), subdir="svc")

    ws = Workspace(location.toplevel, tmp_path / "wt", "autopack/mono", location.subdir)
    ws.ensure(resolve_ref(location.toplevel, None))
    assert ws.project_root == ws.worktree / "svc"
    (ws.project_root / "app.py").write_text("a = 2\n")
    (ws.project_root / "pkg").mkdir()
    (ws.project_root / "pkg" / "new.py").write_text("c = 3\n")
    (ws.worktree / "other" / "lib.py").write_text("b = 2\n")

    ws.stage_all()
    assert ws.staged_files() == ["app.py", "pkg/new.py"]
    ws.commit_staged("svc change", {})
    assert git(ws.worktree, "show", "--name-only", "--format=", "HEAD").splitlines() == [
        "svc/app.py", "svc/pkg/new.py",
    ]
    assert git(ws.worktree, "status", "--porcelain") == "M other/lib.py"


def test_locate_repo_at_the_toplevel(repo):
    assert locate_repo(repo) == RepoLocation(toplevel=repo.resolve(), subdir="")


def test_stage_all_includes_new_files_and_commit_is_exactly_the_staged_tree(workspace):
    root = workspace.project_root
    (root / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_new.py").write_text("def test_it():\n    pass\n")
    (root / "README.md").unlink()

    tree = workspace.stage_all()
    assert workspace.staged_files() == ["README.md", "calc.py", "tests/test_new.py"]
    (root / "junit.xml").write_text("<testsuite/>\n")  # written by the test run after staging
    (root / "calc.py").write_text("# changed after staging\n")

    commit = workspace.commit_staged("phase", {})
    assert commit == workspace.head()
    assert workspace.head_tree() == tree
    committed = git(workspace.worktree, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert "tests/test_new.py" in committed
    assert "junit.xml" not in committed and "README.md" not in committed
    assert git(workspace.worktree, "show", "HEAD:calc.py") == "def add(a, b):\n    return b + a"


def test_commit_trailers_round_trip_without_any_git_identity(workspace):
    assert subprocess.run(["git", "config", "user.email"], cwd=workspace.worktree).returncode != 0
    assert workspace.head_trailers() == {}
    (workspace.worktree / "calc.py").write_text("x = 1\n")
    workspace.stage_all()

    workspace.commit_staged(
        "Add power\n\nLonger body.", {"Autopack-Phase": "add-power", "Autopack-Attempt": "2"}
    )

    assert workspace.head_trailers() == {"Autopack-Phase": "add-power", "Autopack-Attempt": "2"}
    author = git(workspace.worktree, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s")
    assert author == "autopack <autopack@localhost>|autopack <autopack@localhost>|Add power"


def test_commit_ignores_user_hooks_and_signing(repo, tmp_path):
    hooks = repo / ".git" / "hooks"
    for hook in ("pre-commit", "commit-msg", "post-checkout"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch '{tmp_path}/{hook}-ran'\nexit 1\n")
        (hooks / hook).chmod(0o755)
    git(repo, "config", "commit.gpgsign", "true")

    ws = Workspace(repo, tmp_path / "wt", "autopack/hooks")
    ws.ensure(resolve_ref(repo, None))
    (ws.worktree / "calc.py").write_text("x = 1\n")
    ws.stage_all()
    ws.commit_staged("no hooks", {"Autopack-Phase": "p"})

    assert git(ws.worktree, "log", "-1", "--format=%s") == "no hooks"
    assert not list(tmp_path.glob("*-ran"))


def test_commit_rejects_a_bad_trailer_key(workspace):
    with pytest.raises(ValueError, match="trailer key"):
        workspace.commit_staged("msg", {"Bad Key": "x"})


def test_reset_clean_discards_changes_and_untracked_files_but_keeps_ignored(workspace):
    root = workspace.project_root
    (root / "calc.py").write_text("broken\n")
    (root / "stray.py").write_text("x\n")
    (root / "newdir").mkdir()
    (root / "newdir" / "f.txt").write_text("x\n")
    (root / "cache").mkdir()
    (root / "cache" / "keep.bin").write_text("cached\n")
    workspace.stage_all()

    workspace.reset_clean()

    assert (root / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert not (root / "stray.py").exists() and not (root / "newdir").exists()
    assert (root / "cache" / "keep.bin").read_text() == "cached\n"
    assert workspace.staged_files() == []


def test_staged_patch_reapplies_on_a_clean_worktree(workspace):
    root = workspace.project_root
    binary = bytes(range(256)) * 4
    (root / "calc.py").write_text("def add(a, b):\n    return a + b + 0\n")
    (root / "blob.bin").write_bytes(binary)
    (root / "README.md").unlink()
    tree = workspace.stage_all()
    patch = workspace.staged_patch()
    assert "+    return a + b + 0" in patch

    workspace.reset_clean()
    patch_file = workspace.worktree.parent / "attempt.patch"
    patch_file.write_bytes(patch.encode("utf-8", "surrogateescape"))
    git(workspace.worktree, "apply", "--index", str(patch_file))

    assert (root / "blob.bin").read_bytes() == binary
    assert git(workspace.worktree, "write-tree") == tree


def test_git_failure_is_one_line_environment_problem(workspace):
    git_dir = Path(git(workspace.worktree, "rev-parse", "--absolute-git-dir"))
    (git_dir / "index.lock").write_text("")
    (workspace.worktree / "calc.py").write_text("x\n")
    with pytest.raises(EnvironmentProblem, match="index.lock") as raised:
        workspace.stage_all()
    assert "\n" not in str(raised.value)


def test_missing_worktree_never_runs_git_in_the_current_directory(workspace, repo, monkeypatch):
    (repo / "calc.py").write_text("user's unsaved work\n")
    shutil.rmtree(workspace.worktree)
    monkeypatch.chdir(repo)
    with pytest.raises(EnvironmentProblem, match="does not exist"):
        workspace.reset_clean()
    assert (repo / "calc.py").read_text() == "user's unsaved work\n"


def test_locate_repo_rejects_a_directory_outside_git(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(UsageError, match="not inside a git repository"):
        locate_repo(plain)


def test_locate_repo_rejects_a_repository_without_commits(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(UsageError, match="has no commits"):
        locate_repo(empty)


def test_resolve_ref_finds_branches_tags_and_shas_and_rejects_unknown(repo):
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "v1", "-m", "release")
    assert resolve_ref(repo, None) == head
    assert resolve_ref(repo, "main") == head
    assert resolve_ref(repo, "v1") == head  # annotated tag peeled to its commit
    assert resolve_ref(repo, head[:10]) == head
    for bad in ("xyz", "--all", ""):
        with pytest.raises(UsageError, match="is not a branch, tag or commit"):
            resolve_ref(repo, bad)


def test_missing_git_executable_is_an_environment_problem(repo, tmp_path):
    script = (
        "from pathlib import Path\n"
        "from autopack.errors import EnvironmentProblem\n"
        "from autopack.adapters.git.calls import locate_repo\n"
        "try:\n"
        f"    locate_repo(Path({str(repo)!r}))\n"
        "except EnvironmentProblem as error:\n"
        "    print('EXIT', error.exit_code, error)\n"
    )
    env = {**os.environ, "PATH": str(tmp_path / "nothing-here")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.startswith("EXIT 4 git is not installed"), done.stderr


def child_git_processes() -> list[str]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        if parent == os.getpid() and name.startswith("git"):
            found.append(name)
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_no_git_processes_outlive_workspace_operations(workspace):
    (workspace.worktree / "calc.py").write_text("x = 2\n")
    workspace.stage_all()
    workspace.staged_files()
    workspace.staged_patch()
    workspace.commit_staged("c", {"K": "v"})
    workspace.head_trailers()
    workspace.head_tree()
    workspace.reset_clean()
    assert child_git_processes() == []
