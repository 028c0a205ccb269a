"""The git call layer: the only module that imports git (GitPython); ``git_in`` lends its calls out.

Every git call goes through :func:`_git`, which runs the git CLI through GitPython
(no ``Repo`` objects, so no lingering ``git cat-file`` processes), disables the
user's hooks, commit signing, fsmonitor daemons and auto-gc, and turns a failure
into a one-line :class:`~autopack.errors.AutopackError`. Also: finding the repository
that holds a project (:func:`locate_repo`) and resolving a base ref (:func:`resolve_ref`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from autopack.errors import EnvironmentProblem, UsageError

COMMIT_IDENTITY_ENV = {
    "GIT_AUTHOR_NAME": "autopack",
    "GIT_AUTHOR_EMAIL": "autopack@localhost",
    "GIT_COMMITTER_NAME": "autopack",
    "GIT_COMMITTER_EMAIL": "autopack@localhost",
}

# Passed as `-c` to every call: no user hooks (pre-commit, post-checkout, ...), no
# signing prompts, no background processes outliving the call.
_SAFE_CONFIG = (
    f"core.hooksPath={os.devnull}",
    "commit.gpgSign=false",
    "core.fsmonitor=false",
    "gc.auto=0",
)

@dataclass(frozen=True)
class RepoLocation:
    """Where a project lives: the git toplevel and the project's path inside it."""

    toplevel: Path  # absolute git toplevel of the main checkout
    subdir: str  # POSIX path of the project dir relative to toplevel ("" at the toplevel)


@dataclass(frozen=True)
class _GitResult:
    status: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The first non-empty line git wrote to stderr."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[0] if lines else f"exit status {self.status}"


def _gitpython() -> ModuleType:
    try:
        import git
    except ImportError as error:  # GitPython raises ImportError when git is missing
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EnvironmentProblem(
            f"git is not installed or not on PATH ({first_line}); install git"
        ) from None
    return git


def _git(
    cwd: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    strip: bool = True,
) -> _GitResult:
    """Run `git -C cwd args...`; raise EnvironmentProblem on failure when `check`."""
    # GitPython silently falls back to the process cwd when its working dir is
    # missing; `-C` plus this check make sure git never runs anywhere else.
    if not cwd.is_dir():
        raise EnvironmentProblem(f"{cwd} does not exist or is not a directory")
    git = _gitpython()
    config = [arg for item in _SAFE_CONFIG for arg in ("-c", item)]
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE, "-C", str(cwd), "--literal-pathspecs"]
    try:
        status, stdout, stderr = git.Git(str(cwd)).execute(
            [*command, *config, *args],
            with_extended_output=True,
            with_exceptions=False,
            env=dict(env) if env else None,
            strip_newline_in_stdout=strip,
        )
    except git.GitCommandNotFound:
        raise EnvironmentProblem(
            f"git is not installed or not on PATH (running `git {args[0]}`); install git"
        ) from None
    result = _GitResult(status, stdout, stderr)
    if check and status != 0:
        raise EnvironmentProblem(f"git {args[0]} failed in {cwd}: {result.error_line}")
    return result


def git_in(cwd: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> _GitResult:
    """A git call in the user's repository with autopack's safe configuration (``autopack.land``)."""
    return _git(cwd, *args, env=env, check=check)


def locate_repo(project_dir: Path) -> RepoLocation:
    """Find the git repository that holds `project_dir` and the project's path in it."""
    project_dir = Path(project_dir).absolute()
    if not project_dir.is_dir():
        raise UsageError(f"{project_dir} is not a directory; fix run.repo")
    found = _git(project_dir, "rev-parse", "--show-toplevel", "--show-prefix", check=False)
    if found.status != 0:
        if "not a git repository" in found.stderr:
            raise UsageError(
                f"{project_dir} is not inside a git repository; "
                "run `git init` there or fix run.repo"
            )
        raise UsageError(f"cannot use {project_dir} as a git work tree: {found.error_line}")
    lines = found.stdout.splitlines()
    toplevel = Path(lines[0])
    subdir = lines[1].strip("/") if len(lines) > 1 else ""
    has_commit = _git(toplevel, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    if has_commit.status != 0:
        raise UsageError(f"the git repository {toplevel} has no commits; commit something first")
    return RepoLocation(toplevel=toplevel, subdir=subdir)


def resolve_ref(toplevel: Path, ref: str | None) -> str:
    """The commit sha `ref` names (a branch, tag or commit; None means HEAD)."""
    name = "HEAD" if ref is None else ref
    found = None
    if name.strip() and not name.startswith("-"):
        found = _git(
            Path(toplevel), "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False
        )
    if found is None or found.status != 0 or not found.stdout.strip():
        raise UsageError(f"base '{name}' is not a branch, tag or commit in {toplevel}")
    return found.stdout.strip()
