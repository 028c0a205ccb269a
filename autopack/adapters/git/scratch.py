"""The evidence worktree: a detached worktree next to a run's, where goal-evidence runs happen.

Trees are composed without touching any working tree (a private index file): the base
with the phase's test-file changes (fail-to-pass), the new code with changed test files
at their base version (old tests). The worktree is reused across attempts and repaired on
each use: a kill or a deleted directory costs one ``git worktree add``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from autopack.domain.test_files import Change
from autopack.adapters.git.calls import _git
from autopack.adapters.git.worktree_lock import add_detached_worktree, remove_worktree
from autopack.workspace import Workspace

DIFF_MAX_CHARS = 4000


def staged_changes(workspace: Workspace) -> list[Change]:
    """The staged change as (status, project-relative path): A added, M modified, D deleted."""
    listing = _git(workspace.worktree, "diff", "--cached", "--name-status", "--no-renames", "-z", "HEAD", "--",
                   workspace.subdir or ".", strip=False).stdout.split("\0")
    prefix = f"{workspace.subdir}/" if workspace.subdir else ""
    return [Change(status[:1], path.removeprefix(prefix))
            for status, path in zip(listing[::2], listing[1::2]) if status and path]


class ScratchTree:
    """``<worktrees>/.evidence-<run>``: checked out at composed trees for the evidence runs."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.path = workspace.worktree.parent / f".evidence-{workspace.worktree.name}"

    def _repo_path(self, path: str) -> str:
        return f"{self.workspace.subdir}/{path}" if self.workspace.subdir else path

    def compose(self, tree: str, overlay: str, paths: list[str]) -> str:
        """``tree`` with each of ``paths`` (project-relative) as in ``overlay``: replaced, added, or
        removed where ``overlay`` lacks it. Returns the new tree's sha."""
        worktree = self.workspace.worktree
        with tempfile.TemporaryDirectory(prefix="autopack-index-") as scratch:
            env = {"GIT_INDEX_FILE": os.path.join(scratch, "index")}
            _git(worktree, "read-tree", tree, env=env)
            repo_paths = [self._repo_path(path) for path in paths]
            listing = _git(worktree, "ls-tree", "-z", "--full-tree", overlay, "--", *repo_paths, strip=False).stdout
            present = {}
            for entry in filter(None, listing.split("\0")):
                info, _, path = entry.partition("\t")
                mode, _, sha = info.split(" ")
                present[path] = (mode, sha)
            gone = [path for path in repo_paths if path not in present]
            if present:
                args = [arg for path, (mode, sha) in present.items() for arg in ("--cacheinfo", f"{mode},{sha},{path}")]
                _git(worktree, "update-index", "--add", *args, env=env)
            if gone:
                _git(worktree, "update-index", "--force-remove", "--", *gone, env=env)
            return _git(worktree, "write-tree", env=env).stdout.strip()

    def checkout(self, tree: str) -> Path:
        """The worktree holding exactly ``tree`` (no untracked files); returns the project root in it."""
        self._ensure()
        _git(self.path, "read-tree", "-u", "--reset", tree)  # overwrites untracked files in its way
        _git(self.path, "clean", "-fd", "--quiet")
        return self.path / self.workspace.subdir if self.workspace.subdir else self.path

    def diff(self, old_tree: str, new_tree: str, path: str) -> str:
        """One file's change between two trees, capped at DIFF_MAX_CHARS."""
        text = _git(self.workspace.worktree, "diff", "--no-color", "--no-ext-diff", old_tree, new_tree, "--",
                    self._repo_path(path), strip=False).stdout
        return text if len(text) <= DIFF_MAX_CHARS else text[:DIFF_MAX_CHARS] + "\n... (diff cut)\n"

    def remove(self) -> None:
        """Remove the worktree, if there is one (a run's executor leaves none behind)."""
        if self.path.exists():
            remove_worktree(self.workspace.toplevel, self.path)

    def _intact(self) -> bool:
        """Whether the directory is a worktree of the run's repository, read from the files git
        keeps (no git call): its ``.git`` file names an admin directory that points back at it and
        shares the run worktree's common directory."""
        found, ours = _linked(self.path), _linked(self.workspace.worktree)
        return found is not None and ours is not None and found[1] == ours[1] \
            and found[0] == (self.path / ".git").resolve()

    def _ensure(self) -> None:
        """Make the worktree usable: reuse it when it is ours and intact, else recreate it."""
        if self._intact():
            return
        shutil.rmtree(self.path, ignore_errors=True)
        add_detached_worktree(self.workspace.toplevel, self.path, self.workspace.head())


def _linked(worktree: Path) -> tuple[Path, Path] | None:
    """A linked worktree's (``.git`` file its admin directory points back at, common git directory)."""
    try:
        pointer = (worktree / ".git").read_text().strip()
        if not pointer.startswith("gitdir: "):
            return None
        admin = (worktree / pointer.removeprefix("gitdir: ")).resolve()
        back = Path((admin / "gitdir").read_text().strip()).resolve()
        common = (admin / (admin / "commondir").read_text().strip()).resolve()
    except (OSError, ValueError):
        return None
    return back, common
