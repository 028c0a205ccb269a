"""A run branch on a shared git remote: fetch its head, push with a lease, compare commits.

Every call that may reach another machine runs with ``GIT_TERMINAL_PROMPT=0``: a remote that
wants a password fails at once instead of waiting for one. Pushes always carry an explicit
``--force-with-lease=<ref>:<expected>``: the remote ref moves only from the exact commit this
executor last saw (absent: only if it does not exist), never a plain force push.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autopack.adapters.git.calls import _git
from autopack.adapters.git.worktree_lock import worktree_lock
from autopack.errors import EnvironmentProblem

NO_PROMPT_ENV = {"GIT_TERMINAL_PROMPT": "0"}


def remote_names(toplevel: Path) -> list[str]:
    """The remotes configured in the repository (`git remote`)."""
    return _git(Path(toplevel), "remote").stdout.split()


def has_commit(toplevel: Path, commit: str) -> bool:
    found = _git(Path(toplevel), "cat-file", "-e", f"{commit}^{{commit}}", check=False)
    return found.status == 0


def is_ancestor(toplevel: Path, older: str, newer: str) -> bool:
    """Whether ``older`` is ``newer`` or one of its ancestors."""
    return _git(Path(toplevel), "merge-base", "--is-ancestor", older, newer, check=False).status == 0


def commits_between(toplevel: Path, older: str, newer: str) -> list[dict[str, str]]:
    """The commits after ``older`` up to ``newer`` (oldest first), each as its sha and its trailers."""
    log = _git(Path(toplevel), "log", "--reverse", "--no-show-signature",
               "--format=%H%x00%(trailers:only,unfold)%x01", f"{older}..{newer}").stdout
    found = []
    for entry in log.split("\x01"):
        sha, _, text = entry.strip().partition("\0")
        if sha:
            trailers = {"sha": sha}
            for line in text.splitlines():
                key, separator, value = line.partition(":")
                if separator and key.strip():
                    trailers[key.strip()] = value.strip()
            found.append(trailers)
    return found


@dataclass(frozen=True)
class RemoteBranch:
    """Branch ``branch`` of the remote ``remote`` of the repository at ``toplevel``."""

    toplevel: Path
    remote: str
    branch: str

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    @property
    def tracking_ref(self) -> str:
        return f"refs/remotes/{self.remote}/{self.branch}"

    def fetch(self) -> str | None:
        """Fetch the branch; its head on the remote, or None when the remote has no such branch."""
        with worktree_lock(self.toplevel, shared=True):  # fetch walks every worktree's HEAD
            fetched = _git(self.toplevel, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote,
                           f"+{self.ref}:{self.tracking_ref}", env=NO_PROMPT_ENV, check=False)
        if fetched.status == 0:
            return _git(self.toplevel, "rev-parse", "--verify", self.tracking_ref).stdout.strip()
        listed = _git(self.toplevel, "ls-remote", "--exit-code", self.remote, self.ref, env=NO_PROMPT_ENV,
                      check=False)
        if listed.status == 2:  # the remote answered: no such ref
            _git(self.toplevel, "update-ref", "-d", self.tracking_ref, check=False)
            return None
        raise EnvironmentProblem(f"git fetch {self.remote} {self.branch} failed in {self.toplevel}: "
                                 f"{fetched.error_line}; check that the remote is reachable without a prompt")

    def push(self, commit: str, expected: str | None) -> bool:
        """Move the remote branch to ``commit`` if it is still at ``expected`` (None: absent).

        True when pushed; False when the remote refused because the branch moved (the lease
        failed, or it is no fast-forward of what the remote holds). Other failures raise.
        """
        lease = f"--force-with-lease={self.ref}:{expected or ''}"
        pushed = _git(self.toplevel, "push", "--porcelain", "--quiet", lease, self.remote,
                      f"{commit}:{self.ref}", env=NO_PROMPT_ENV, check=False)
        if pushed.status == 0:
            _git(self.toplevel, "update-ref", self.tracking_ref, commit)
            return True
        if any(line.startswith("!") and self.ref in line for line in pushed.stdout.splitlines()):
            return False
        raise EnvironmentProblem(f"git push {self.remote} {self.branch} failed in {self.toplevel}: "
                                 f"{pushed.error_line}; check that the remote is reachable and writable "
                                 "without a prompt")


def move_branch(toplevel: Path, branch: str, commit: str) -> None:
    """Point the local branch at ``commit`` (a worktree that has it checked out keeps its index and files)."""
    _git(Path(toplevel), "update-ref", f"refs/heads/{branch}", commit)
