"""`autopack land`: bring a run's branch into its base branch, or offer it as a pull request.

The base branch is the plan's ``run.base`` (or, for a run started from HEAD, the branch checked
out in the repository now). The base moves by fast-forward, a merge commit (``merge``) or the
run's commits rebased onto it (``rebase``: the gate's suite is re-run on the result, in a scratch
worktree, and judged against the base's baseline first). A checkout where the base branch is
checked out is updated only when it has no uncommitted changes, and only by fast-forward; one
with changes is refused. ``partial`` lands the branch up to the last commit of the plan's leading
complete phases. Every landing is recorded (``landings``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from autopack.domain.lifecycle import PhaseState
from autopack.errors import AutopackError, NoSuchRun, UsageError
from autopack.adapters.git.calls import COMMIT_IDENTITY_ENV, git_in
from autopack.adapters.git.worktree_lock import add_detached_worktree, remove_worktree, worktree_lock

METHODS = ("fast-forward", "merge", "rebase")
SHOWN_COMMITS = 5


class LandingRefused(AutopackError):
    """The landing would lose, overwrite or skip something (exit 1); the message says what and what to do."""


@dataclass(frozen=True)
class LandRequest:
    run_id: str
    method: str = "fast-forward"  # one of METHODS
    partial: bool = False
    remote: str | None = None  # push the run branch there
    pr: bool = False  # open a pull request instead of moving the base locally
    draft: bool = False


@dataclass
class Landing:
    """What was (or, for a pull request, is offered to be) landed."""

    run_id: str
    method: str  # one of METHODS, "pull-request", or "up-to-date" (the base already has it all)
    base_branch: str
    base_before: str
    landed_commit: str
    phases: list[str]
    partial: bool
    checkout: Path | None = None  # the user's checkout that was fast-forwarded, if any
    remote: str | None = None
    pr_url: str | None = None
    pr_command: list[str] | None = None  # when gh is not installed: the command to run
    pr_body: Path | None = None
    decision: dict | None = None  # the re-run's verdict (rebase)
    details: dict = field(default_factory=dict)


def land(store: Any, settings: Any, request: LandRequest, say: Callable[[str], None] = lambda line: None) -> Landing:
    """Land the run under its lock (exit 75 while an executor works on it); raises LandingRefused."""
    from autopack.launch import run_lock

    run = store.get_run(request.run_id)
    if run is None:
        raise NoSuchRun(request.run_id, settings.db)
    with run_lock(settings, run.id):
        return _land(store, settings, run, request, say)


def _land(store: Any, settings: Any, run: Any, request: LandRequest, say: Callable[[str], None]) -> Landing:
    repo = Path(run.repo_root)
    if request.remote is not None:
        _check_remote(repo, request.remote)
    target, phases = landable(store, run, request.partial)
    base = base_branch(repo, run)
    base_head = _git(repo, "rev-parse", f"refs/heads/{base}")
    checkout = None if request.pr else _checkout_of(repo, base)
    landing = Landing(run.id, request.method, base, base_head, target, phases, request.partial, checkout,
                      remote=request.remote)
    if _is_ancestor(repo, target, base_head):
        landing.method, landing.landed_commit = "up-to-date", base_head  # nothing to do: not recorded
        return landing
    fast_forward = _is_ancestor(repo, base_head, target)
    if request.method == "fast-forward" and not fast_forward:
        raise LandingRefused(_divergence(repo, base, base_head, run.branch, target))
    if request.method == "merge":
        landing.landed_commit = _merge_commit(repo, base, base_head, run, target)
    elif request.method == "rebase" and not fast_forward:
        from autopack.landgate import rebase_and_judge

        landing.landed_commit, landing.decision = rebase_and_judge(store, settings, run, base, base_head, target,
                                                                   phases, say)
    if request.remote is not None:
        _push(repo, request.remote, landing.landed_commit if request.method == "rebase" else target, run.branch)
        say(f"pushed {run.branch} ({target[:10]}) to {request.remote}")
    if request.pr:
        from autopack.pullrequest import open_pull_request

        landing.method = "pull-request"
        open_pull_request(store, settings, run, landing, request.draft)
    else:
        _move_base(repo, base, base_head, landing.landed_commit, checkout)
    _record(store, landing)
    return landing


def landable(store: Any, run: Any, partial: bool) -> tuple[str, list[str]]:
    """The commit to land and the phases it brings: the branch head of a complete run; with ``partial``,
    the branch up to the last commit of the plan's leading complete phases."""
    phases = sorted(store.phases(run.id), key=lambda p: p.position)
    undone = [p for p in phases if p.state != PhaseState.COMPLETE]
    repo = Path(run.repo_root)
    commits = _run_commits(repo, run)
    if not undone:
        if not commits:
            raise LandingRefused(f"run {run.id} is complete but {run.branch} has no commit beyond its base "
                                 f"{run.base_commit[:10]}: nothing to land")
        return commits[-1][0], [p.phase_id for p in phases]
    states = ", ".join(f"{p.phase_id} {p.state}" for p in undone)
    if not partial:
        raise LandingRefused(f"run {run.id} is not complete ({states}); finish it (`autopack drain --run-id "
                             f"{run.id}`) or land its leading complete phases with --partial")
    leading: set[str] = set()
    for phase in phases:
        if phase.state != PhaseState.COMPLETE:
            break
        leading.add(phase.phase_id)
    taken = []
    for sha, phase_id in commits:
        if phase_id not in leading:
            break
        taken.append((sha, phase_id))
    if not taken:
        raise LandingRefused(f"run {run.id} has no leading complete phase to land ({states})")
    return taken[-1][0], list(dict.fromkeys(phase_id for _, phase_id in taken))


def base_branch(repo: Path, run: Any) -> str:
    """The branch the run lands on: the plan's run.base, or the branch checked out now for a run from HEAD."""
    base = (run.plan.get("run") or {}).get("base")
    if base is None:
        current = git_in(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if current.status != 0:
            raise UsageError(f"run {run.id} was started from HEAD (no run.base) and {repo} has no branch checked "
                             "out; check out the branch to land on")
        return current.stdout.strip()
    name = base.removeprefix("refs/heads/")
    if git_in(repo, "show-ref", "--verify", "--quiet", f"refs/heads/{name}", check=False).status != 0:
        raise UsageError(f"run {run.id}: run.base '{base}' is not a local branch in {repo}; only a branch can "
                         "be landed on (push the run branch with `git push REMOTE "
                         f"{run.branch}` instead)")
    return name


def _run_commits(repo: Path, run: Any) -> list[tuple[str, str]]:
    """(sha, Autopack-Phase trailer) of each commit on the run branch beyond its base, oldest first."""
    log = _git(repo, "log", "--reverse", "--first-parent", "--no-show-signature",
               "--format=%H%x00%(trailers:key=Autopack-Phase,valueonly,unfold)%x01",
               f"{run.base_commit}..refs/heads/{run.branch}")
    found = []
    for entry in log.split("\x01"):
        if entry.strip():
            sha, _, phase = entry.strip().partition("\0")
            found.append((sha.strip(), phase.strip()))
    return found


def _checkout_of(repo: Path, branch: str) -> Path | None:
    """The worktree (the user's checkout, usually) where ``branch`` is checked out; refused when it is dirty."""
    with worktree_lock(repo, shared=True):
        listing = _git(repo, "worktree", "list", "--porcelain")
    for block in listing.split("\n\n"):
        fields = dict(line.partition(" ")[::2] for line in block.splitlines())
        if fields.get("branch") == f"refs/heads/{branch}":
            path = Path(fields["worktree"])
            changed = _git(path, "diff", "--name-only", "HEAD").splitlines()  # staged or not
            if changed:
                files = ", ".join(changed[:SHOWN_COMMITS])
                more = f" and {len(changed) - SHOWN_COMMITS} more" if len(changed) > SHOWN_COMMITS else ""
                raise LandingRefused(f"{branch} is checked out in {path} with uncommitted changes ({files}{more}); "
                                     "commit or stash them there, then land again (it is left untouched)")
            return path
    return None


def _divergence(repo: Path, base: str, base_head: str, branch: str, target: str) -> str:
    ahead = _git(repo, "log", "--no-show-signature", "--format=%h %s", f"{target}..{base_head}").splitlines()
    shown = "; ".join(ahead[:SHOWN_COMMITS]) + (f"; and {len(ahead) - SHOWN_COMMITS} more"
                                                 if len(ahead) > SHOWN_COMMITS else "")
    return (f"cannot fast-forward {base} to {branch}: {base} has {len(ahead)} commit(s) the run branch does not "
            f"({shown}); land with --merge (a merge commit) or --rebase (the run's commits on top, re-tested)")


def _merge_commit(repo: Path, base: str, base_head: str, run: Any, target: str) -> str:
    """A merge commit of the run into the base, made without touching any checkout."""
    merged = git_in(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", base_head, target,
                    check=False)
    lines = merged.stdout.splitlines()
    if merged.status == 1:
        raise LandingRefused(f"{run.branch} does not merge cleanly into {base}: conflicts in "
                             f"{', '.join(lines[1:1 + SHOWN_COMMITS])}; resolve them on the run branch or land "
                             "with --rebase")
    if merged.status != 0 or not lines:
        raise LandingRefused(f"git merge-tree failed in {repo}: {merged.error_line} (git 2.38 or later is needed)")
    message = f"Merge autopack run {run.id} ({run.branch}) into {base}\n\n{run.goal}"
    return _git(repo, "commit-tree", lines[0], "-p", base_head, "-p", target, "-m", message, env=COMMIT_IDENTITY_ENV)


def _move_base(repo: Path, base: str, base_head: str, new: str, checkout: Path | None) -> None:
    """Move the base branch to ``new``: fast-forward its checkout (checked clean again), or compare-and-swap the ref."""
    if checkout is None:
        _git(repo, "update-ref", "-m", "autopack land", f"refs/heads/{base}", new, base_head)
        return
    _checkout_of(repo, base)  # still clean
    moved = git_in(checkout, "merge", "--ff-only", "--no-edit", "--quiet", new, check=False)
    if moved.status != 0:
        raise LandingRefused(f"cannot fast-forward the checkout {checkout} to {new[:10]}: {moved.error_line}; "
                             "it was left as it was")


def _check_remote(repo: Path, remote: str) -> None:
    if git_in(repo, "remote", "get-url", "--", remote, check=False).status != 0:
        known = _git(repo, "remote").split() or ["none"]
        raise UsageError(f"--push {remote}: no such remote in {repo} (remotes: {', '.join(known)})")


def _push(repo: Path, remote: str, commit: str, branch: str) -> None:
    """Push ``commit`` as the run branch; a refused push (the remote moved) is never forced."""
    from autopack.adapters.git.remote import NO_PROMPT_ENV

    pushed = git_in(repo, "push", "--quiet", remote, f"{commit}:refs/heads/{branch}", env=NO_PROMPT_ENV, check=False)
    if pushed.status != 0:
        raise LandingRefused(f"git push {remote} {branch} was refused: {pushed.error_line}; nothing was landed")


def _record(store: Any, landing: Landing) -> None:
    from autopack.store.landings import record_landing

    details = {"phases": landing.phases, **landing.details}
    if landing.decision is not None:
        details["decision"] = landing.decision
    if landing.pr_command is not None:
        details["pr_command"] = landing.pr_command
    record_landing(store, run_id=landing.run_id, method=landing.method, base_branch=landing.base_branch,
                   base_before=landing.base_before, landed_commit=landing.landed_commit, partial=landing.partial,
                   remote=landing.remote, pr_url=landing.pr_url, details=details)


def _is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    return git_in(repo, "merge-base", "--is-ancestor", ancestor, descendant, check=False).status == 0


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return git_in(cwd, *args, env=env).stdout.strip()


def scratch_worktree(repo: Path, commit: str, state_dir: Path) -> tuple[Path, Callable[[], None]]:
    """A detached worktree at ``commit`` under the state directory, and the function that removes it."""
    path = Path(tempfile.mkdtemp(prefix="land-", dir=state_dir))
    path.rmdir()
    add_detached_worktree(repo, path, commit)
    return path, lambda: remove_worktree(repo, path)
