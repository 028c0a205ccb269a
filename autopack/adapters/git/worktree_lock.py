"""The repository's worktree lock: git's worktree registrations are changed by one process at a time;
and the detached worktrees autopack adds and removes under it.

`git worktree add` writes a new worktree's registration (``.git/worktrees/<name>/``) file by file.
Meanwhile every git command that lists the worktrees in another process -- ``worktree add``, ``list``
and ``prune``, and ``fetch`` (it walks every worktree's HEAD) -- dies with "failed to read
.git/worktrees/<name>/commondir". Drains of different runs in one repository do exactly that at
once. So autopack changes worktrees under an exclusive flock on ``<git common dir>/autopack-worktrees.lock``
and lists them under a shared one; the kernel releases it when a holder dies.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from autopack.adapters.git.calls import _git
from autopack.errors import EnvironmentProblem

LOCK_NAME = "autopack-worktrees.lock"
WAIT_S = 120.0  # a `worktree add` takes well under a second; a fetch is the long one
_POLL_S = 0.02
_held: dict[Path, tuple[bool, int]] = {}  # lock file -> (shared, depth) for this process


@lru_cache(maxsize=64)
def lock_path(toplevel: Path) -> Path:
    """The lock file in the repository's common git directory (shared by all its worktrees)."""
    common = Path(_git(toplevel, "rev-parse", "--git-common-dir").stdout.strip())
    return (common if common.is_absolute() else toplevel / common).resolve() / LOCK_NAME


@contextmanager
def worktree_lock(toplevel: Path, *, shared: bool = False, wait_s: float | None = None) -> Iterator[None]:
    """Hold the repository's worktree lock: exclusive to change registrations, ``shared`` to list them.

    Re-entrant within a process (an exclusive hold covers nested shared ones). Waits up to ``wait_s``
    (default WAIT_S) for another process, then raises EnvironmentProblem naming the lock file.
    """
    import portalocker

    path = lock_path(Path(toplevel).resolve())
    held = _held.get(path)
    if held is not None:
        if held[0] and not shared:
            raise RuntimeError(f"{path}: an exclusive hold was asked for inside a shared one")
        _held[path] = (held[0], held[1] + 1)
        try:
            yield
        finally:
            _held[path] = (held[0], _held[path][1] - 1)
        return
    flags = (portalocker.LockFlags.SHARED if shared else portalocker.LockFlags.EXCLUSIVE) \
        | portalocker.LockFlags.NON_BLOCKING
    handle = open(path, "a")
    try:
        wait_s = WAIT_S if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while True:
            try:
                portalocker.lock(handle, flags)
                break
            except portalocker.exceptions.LockException:
                if time.monotonic() >= deadline:
                    raise EnvironmentProblem(
                        f"{path}: another process has held the repository's worktree lock for over {wait_s:g} s "
                        f"(a git worktree or fetch command hanging?); find it with `fuser {path}`") from None
                time.sleep(_POLL_S)
        _held[path] = (shared, 1)
        try:
            yield
        finally:
            del _held[path]
            portalocker.unlock(handle)
    finally:
        handle.close()


def add_detached_worktree(toplevel: Path, path: Path, commit: str) -> None:
    """A detached worktree at ``commit`` in ``path`` (absent), under the lock. Registrations whose
    directory is gone are pruned first: one left at ``path`` would refuse the add."""
    with worktree_lock(toplevel):
        _git(toplevel, "worktree", "prune")
        path.parent.mkdir(parents=True, exist_ok=True)
        _git(toplevel, "worktree", "add", "--detach", "--quiet", str(path), commit)


def remove_worktree(toplevel: Path, path: Path) -> None:
    """The worktree at ``path`` deleted and unregistered, under the lock; whatever is left of it."""
    with worktree_lock(toplevel):
        _git(toplevel, "worktree", "remove", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
        _git(toplevel, "worktree", "prune", check=False)
