"""Git worktrees for runs: ensure, stage, commit, reset, trailers, and the seal the tests must leave alone.

Each run works in its own worktree on branch ``autopack/<run-id>``; the user's
checkout (its HEAD, branch, index and working tree) is never touched. The project
may be a subdirectory of the repository: the worktree holds the whole repository
and the project lives at ``worktree / subdir``. Every git call goes through
:mod:`autopack.adapters.git.calls`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from autopack.adapters.git.calls import COMMIT_IDENTITY_ENV, _git, _GitResult
from autopack.adapters.git.worktree_lock import worktree_lock
from autopack.errors import AutopackError, UsageError

_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_ADD_IN_PROGRESS = "initializing"  # the lock reason `git worktree add` holds while it works
_NO_COMMIT = "0" * 40


# Files of the git directories that steer what `git add` stages and what a commit records.
_CONTROL_FILES = ("HEAD", "config", "config.worktree", "info/exclude", "info/attributes",
                  "info/sparse-checkout", "info/grafts", "objects/info/alternates", "shallow")


class GitTampered(AutopackError):
    """The project's tests changed the run's git state; it was put back (the attempt must fail)."""


@dataclass(frozen=True)
class _Seal:
    """The git state the project's tests must leave alone, as it was when sealed."""

    branch_commit: str | None
    replace_refs: str
    control: tuple[tuple[Path, bytes | None], ...]  # file, content (None: absent)


@dataclass(frozen=True)
class _Registration:
    """One entry of `git worktree list --porcelain`."""

    path: Path
    head: str | None  # the commit; 0000... when `git worktree add` never got to set it
    branch: str | None  # "refs/heads/..." or None when detached/bare
    locked: str | None  # the lock's reason ("" without one); None when not locked

    @property
    def half_added(self) -> bool:
        """`git worktree add` was killed: it writes this lock first and removes it last."""
        return self.locked == _ADD_IN_PROGRESS


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _message_with_trailers(message: str, trailers: Mapping[str, str]) -> str:
    body = message.strip()
    if not body:
        raise ValueError("a commit message must not be empty")
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.match(key):
            raise ValueError(f"invalid commit trailer key {key!r}")
        lines.append(f"{key}: {' '.join(str(value).split())}")
    return f"{body}\n\n" + "\n".join(lines) if lines else body


class Workspace:
    """One run's git worktree on its own branch; file operations happen inside it.

    ``owned``: the worktree's path is autopack's (under its worktrees directory) and the
    caller holds the run's lock, so ``ensure`` may recreate a worktree there that a kill
    left half-created or detached, as long as no commit would be lost.
    """

    def __init__(self, toplevel: Path, worktree: Path, branch: str, subdir: str = "",
                 owned: bool = False) -> None:
        self.toplevel = Path(toplevel)
        self.worktree = Path(worktree).absolute()
        self.branch = branch
        self.subdir = subdir.strip("/")
        self.owned = owned
        self._seal: _Seal | None = None

    def __repr__(self) -> str:
        return f"Workspace(worktree={str(self.worktree)!r}, branch={self.branch!r})"

    @property
    def project_root(self) -> Path:
        """The project directory inside the worktree."""
        return self.worktree / self.subdir if self.subdir else self.worktree

    def _in_worktree(
        self, *args: str, env: Mapping[str, str] | None = None, strip: bool = True
    ) -> _GitResult:
        return _git(self.worktree, *args, env=env, strip=strip)

    def _in_toplevel(self, *args: str) -> _GitResult:
        return _git(self.toplevel, *args)

    def _registrations(self) -> list[_Registration]:
        listing = self._in_toplevel("worktree", "list", "--porcelain").stdout
        found = []
        for block in listing.split("\n\n"):
            fields = {}
            for line in block.splitlines():
                name, _, value = line.partition(" ")
                fields[name] = value
            if "worktree" in fields:
                found.append(_Registration(Path(fields["worktree"]), fields.get("HEAD"), fields.get("branch"),
                                           fields.get("locked")))
        return found

    def _is_our_path(self, path: Path) -> bool:
        return path.resolve() == self.worktree.resolve()

    def ensure(self, base_commit: str) -> None:
        """Make the worktree usable, creating the branch at `base_commit` if needed.

        Idempotent; recreates a worktree whose directory was deleted. Never touches
        the main checkout's working tree or its current branch.
        """
        with worktree_lock(self.toplevel):  # another process's `worktree add` breaks our `list` and `add`
            self._ensure(base_commit)

    def _ensure(self, base_commit: str) -> None:
        if not self.branch_exists():
            self._in_toplevel("branch", "--no-track", self.branch, base_commit)
        ref = f"refs/heads/{self.branch}"
        if self.owned:
            self._clear_broken_registration()
        registrations = self._registrations()
        ours = next((r for r in registrations if self._is_our_path(r.path)), None)
        if self.owned and ours is not None and self._disposable(ours, ref):
            self._discard(ours)
            registrations = self._registrations()
            ours = None
        occupied = self.worktree.exists() and not (
            self.worktree.is_dir() and not any(self.worktree.iterdir())
        )
        if occupied:
            if ours is None:
                raise UsageError(
                    f"{self.worktree} exists but is not a git worktree of {self.toplevel}; "
                    "move it away or delete it"
                )
            if ours.branch != ref:
                raise UsageError(
                    f"worktree {self.worktree} is on {self._describe_head(ours, ref)}, "
                    f"not {ref}; remove it with `git worktree remove {self.worktree}`"
                )
            self.remove_stale_git_locks()
            return
        # A registration whose `.git` file is gone is what `git worktree prune` clears.
        stale = [r for r in registrations if not (r.path / ".git").exists()]
        if any(r is ours or r.branch == ref for r in stale):
            self._in_toplevel("worktree", "prune")
        checked_out = [r for r in registrations if r.branch == ref and r not in stale]
        elsewhere = next((r for r in checked_out if r is not ours), None)
        if elsewhere is not None:
            raise UsageError(
                f"branch {self.branch} is already checked out at {elsewhere.path}; "
                "switch that checkout to another branch or remove that worktree"
            )
        self.worktree.parent.mkdir(parents=True, exist_ok=True)
        self._in_toplevel("worktree", "add", "--quiet", str(self.worktree), self.branch)

    def _disposable(self, ours: _Registration, ref: str) -> bool:
        """Whether our worktree is broken and holds nothing the branch lacks: a `git worktree add`
        that was killed, or a HEAD detached at no commit or at one the branch contains."""
        if ours.branch not in (None, ref) or ours.locked not in (None, _ADD_IN_PROGRESS):
            return False  # on another branch, or locked by someone: theirs to sort out
        if ours.half_added:
            return True
        return ours.branch is None and self._on_branch(ours.head, ref)

    def _on_branch(self, commit: str | None, ref: str) -> bool:
        if commit in (None, _NO_COMMIT):
            return True
        found = _git(self.toplevel, "merge-base", "--is-ancestor", commit, ref, check=False)
        return found.status == 0

    def _describe_head(self, ours: _Registration, ref: str) -> str:
        if ours.branch is not None:
            return ours.branch
        if self.owned and ours.head and not self._on_branch(ours.head, ref):
            return (f"a detached HEAD at {ours.head[:10]}, which is not on branch {self.branch} (its "
                    f"commits would be lost: keep them with `git -C {self.worktree} branch NAME` first)")
        return "a detached HEAD"

    def _discard(self, ours: _Registration) -> None:
        """Delete our broken worktree, then its registration (the lock last: a kill on the way
        leaves a worktree that is still recognisably half-created)."""
        self._remove_directory()
        if ours.locked is not None:
            self._in_toplevel("worktree", "unlock", str(ours.path))
        self._in_toplevel("worktree", "prune")

    def _clear_broken_registration(self) -> None:
        """Delete the registration of this path that a `git worktree add` killed midway left
        incomplete, and the directory it was filling.

        git writes the registration's files one by one (``locked`` "initializing", ``gitdir``,
        the worktree's ``.git``, ``commondir``, ``HEAD``); one missing or empty makes `git
        worktree list` and `add` fail for the whole repository, and `prune` keeps it while it is
        locked. It is ours when its ``gitdir`` names this path, or, before git wrote that, when
        it still holds the "initializing" lock under this path's name.
        """
        common = self._in_toplevel("rev-parse", "--git-common-dir").stdout.strip()
        admin = self.toplevel / common / "worktrees" / self.worktree.name
        if not admin.is_dir():
            return
        gitdir = (_read_or_none(admin / "gitdir") or b"").decode(errors="replace").strip()
        if gitdir:
            if Path(gitdir).parent.absolute() != self.worktree:
                return  # another path's registration under the same name
        elif _read_or_none(admin / "locked") != f"{_ADD_IN_PROGRESS}\n".encode():
            return
        if gitdir and all(_read_or_none(admin / name) for name in ("commondir", "HEAD")):
            return  # complete: `ensure` judges it from the listing
        self._remove_directory()
        shutil.rmtree(admin)

    def _remove_directory(self) -> None:
        if self.worktree.is_dir() and not self.worktree.is_symlink():
            shutil.rmtree(self.worktree)
        else:
            self.worktree.unlink(missing_ok=True)

    def remove_stale_git_locks(self) -> list[Path]:
        """Delete the lock files a killed git left in this worktree; return the ones deleted.

        Only the worktree's own index and HEAD locks and the run branch's ref lock: the
        caller holds the run's lock, so no other autopack process runs git here, and a
        git killed with autopack (SIGKILL, OOM) never removes them itself. Shared locks
        of the repository (packed-refs, config) are left alone.
        """
        names = ("index.lock", "HEAD.lock", f"refs/heads/{self.branch}.lock")
        listing = self._in_worktree("rev-parse", *(arg for name in names for arg in ("--git-path", name)))
        removed = []
        for line in listing.stdout.splitlines():
            path = self.worktree / line.strip()  # absolute paths stay as they are
            if line.strip() and path.is_file():
                path.unlink()
                removed.append(path)
        return removed

    def head(self) -> str:
        """The commit sha at the branch head."""
        return self._in_worktree("rev-parse", "--verify", "HEAD").stdout.strip()

    def head_tree(self) -> str:
        """The tree sha of HEAD."""
        return self._in_worktree("rev-parse", "--verify", "HEAD^{tree}").stdout.strip()

    def branch_exists(self) -> bool:
        """Whether the run branch exists in the repository."""
        return self.branch_commit() is not None

    def reset_clean(self) -> None:
        """Discard every change and untracked file in the worktree; keep ignored files."""
        self._in_worktree("reset", "--hard", "--quiet", "HEAD")
        self._in_worktree("clean", "-fd", "--quiet")

    def stage_all(self) -> str:
        """Stage every change under the project (new files included); return the tree sha."""
        self._in_worktree("add", "--all", "--", self.subdir or ".")
        return self._in_worktree("write-tree").stdout.strip()

    def staged_files(self) -> list[str]:
        """Paths (relative to the project root) that differ between the index and HEAD."""
        listing = self._in_worktree(
            "diff", "--cached", "--name-only", "--no-renames", "-z", "--", self.subdir or "."
        ).stdout
        prefix = f"{self.subdir}/" if self.subdir else ""
        return [name.removeprefix(prefix) for name in listing.split("\0") if name]

    def project_files(self) -> list[str]:
        """Tracked and untracked-but-not-ignored files under the project, relative to it, sorted."""
        listing = self._in_worktree(
            "ls-files", "--cached", "--others", "--exclude-standard", "--deduplicate", "-z", "--",
            self.subdir or ".",
        ).stdout
        prefix = f"{self.subdir}/" if self.subdir else ""
        return sorted({name.removeprefix(prefix) for name in listing.split("\0") if name})

    def discard_unstaged(self) -> None:
        """Put the worktree back to the index: undo unstaged changes, delete untracked files
        (ignored files are kept). What the tests wrote goes; what was staged stays."""
        self._in_worktree("checkout-index", "--all", "--force")
        self._in_worktree("clean", "-fd", "--quiet")

    def staged_patch(self) -> str:
        """The staged change as a binary-safe patch that `git apply` accepts at the worktree root.

        Non-UTF-8 bytes are kept as surrogate escapes:
        ``patch.encode("utf-8", "surrogateescape")`` gives git's exact bytes.
        """
        return self._in_worktree(
            "diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
            "--src-prefix=a/", "--dst-prefix=b/",
            strip=False,
        ).stdout

    def commit_staged(self, message: str, trailers: Mapping[str, str], staged_tree: str | None = None) -> str:
        """Commit exactly the index (empty commits allowed); return the new commit sha.

        The message is `message`, a blank line, then one "Key: value" line per trailer.
        When sealed, the seal is checked first (GitTampered; ``staged_tree``: the tree the
        tests ran on) and then moved to the new commit.
        """
        full_message = _message_with_trailers(message, trailers)
        self.check_seal(staged_tree)
        self._in_worktree(
            "commit", "--quiet", "--no-verify", "--allow-empty", "--cleanup=whitespace",
            "-m", full_message,
            env=COMMIT_IDENTITY_ENV,
        )
        head = self.head()
        if self._seal is not None:
            self._seal = _Seal(head, self._seal.replace_refs, self._seal.control)
        return head

    def seal(self) -> None:
        """Remember the git state that the project's tests must not change (see ``check_seal``)."""
        names = self._in_worktree("rev-parse", *(arg for name in _CONTROL_FILES for arg in ("--git-path", name)))
        paths = [self.worktree / line.strip() for line in names.stdout.splitlines() if line.strip()]
        self._seal = _Seal(self.branch_commit(), self._replace_refs(),
                           tuple((path, _read_or_none(path)) for path in paths))

    def check_seal(self, staged_tree: str | None = None) -> None:
        """Raise GitTampered if, since ``seal``, the branch moved, HEAD, a git control file
        (config, info/exclude, ...) or the replace refs changed, or (given ``staged_tree``)
        the index no longer holds that tree. The sealed refs and files are put back first,
        so the caller can save the attempt's change and reset. A no-op when not sealed."""
        seal = self._seal
        if seal is None:
            return
        problems = []
        commit = self.branch_commit()
        if commit != seal.branch_commit:
            problems.append(f"branch {self.branch} moved from {str(seal.branch_commit)[:10]} to "
                            f"{commit[:10] if commit else 'nowhere (deleted)'}")
        replace_refs = self._replace_refs()
        if replace_refs != seal.replace_refs:
            problems.append("`git replace` refs changed")
        changed = [path for path, data in seal.control if _read_or_none(path) != data]
        problems += [f"{path.name} in {path.parent} changed" for path in changed]
        if not problems and staged_tree is not None:
            tree = self._in_worktree("write-tree").stdout.strip()
            if tree != staged_tree:
                problems.append(f"the index holds tree {tree[:10]}, not the tested {staged_tree[:10]}")
        if not problems:
            return
        self._restore(seal, replace_refs)
        raise GitTampered(f"the project's tests changed the run's git state ({'; '.join(problems)}); "
                          "it was restored and the attempt's change is not committed")

    def _restore(self, seal: _Seal, replace_refs: str) -> None:
        for path, data in seal.control:
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        kept = set(seal.replace_refs.split())
        for ref in replace_refs.split():
            if ref not in kept:
                self._in_toplevel("update-ref", "-d", ref)
        if seal.branch_commit is not None:
            self._in_toplevel("update-ref", f"refs/heads/{self.branch}", seal.branch_commit)

    def branch_commit(self) -> str | None:
        """The commit the run branch points at; None when it does not exist."""
        found = _git(self.toplevel, "rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}", check=False)
        return found.stdout.strip() or None if found.status == 0 else None

    def _replace_refs(self) -> str:
        return self._in_toplevel("for-each-ref", "--format=%(refname)", "refs/replace/").stdout

    def head_trailers(self) -> dict[str, str]:
        """The trailers of the HEAD commit message ({} if none)."""
        text = self._in_worktree(
            "log", "-1", "--no-show-signature", "--format=%(trailers:only,unfold)", "HEAD"
        ).stdout
        trailers = {}
        for line in text.splitlines():
            key, separator, value = line.partition(":")
            if separator and key.strip():
                trailers[key.strip()] = value.strip()
        return trailers
