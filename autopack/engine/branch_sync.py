"""The run branch across machines (contract 6): fetched before a run is taken, pushed after every phase.

The store's record is the truth: the run branch is at the commit of the run's last completed
attempt (its base commit before any). Taking a run (``RunBranch.take``) fetches the branch and
compares the remote's head with that record:

- equal: carry on;
- the remote lacks the branch, or is behind the record: push the recorded commit (a fast-forward,
  under a lease on what the remote holds) if this clone has it, else refuse;
- the remote is ahead by commits autopack made for this run (a machine pushed a phase and died
  before recording it): the local branch is put at the record and the phase is redone; the next
  push names the fetched head as its lease, so it replaces exactly that unrecorded commit and
  nothing that arrived after it (the commit stays on the machine that made it);
- anything else (someone else's commits, a history that diverged): refuse, naming both commits.

The local branch is then put at the record the same way: unrecorded commits of this run are
dropped (also when the record went on without them: this machine died after pushing a phase that
another machine then redid), anything else is refused. A completed attempt is pushed (``publish``)
before its completion is recorded; a refused push undoes the local commit and fails the attempt as
``push_rejected``, and the run is taken afresh (fetched, compared) before its next phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopack.adapters.git.remote import RemoteBranch, commits_between, has_commit, is_ancestor, remote_names
from autopack.errors import AutopackError, EnvironmentProblem, PlanError, UsageError
from autopack.events import Recovered


class RemoteDiverged(EnvironmentProblem):
    """The run branch on the remote (or in this clone) is not the store's record and cannot safely be made so."""


class PushRejected(AutopackError):
    """The remote refused a push: its branch moved since this executor saw it."""


def remote_name(settings: Any, plan: Any) -> str | None:
    """The remote of the run branch: the plan's ``run.remote``, else the ``remote`` setting; None: none."""
    return plan.run.remote or getattr(settings, "remote", "") or None


def check_remote(settings: Any, plan: Any, toplevel: Path, name: str) -> None:
    """Refuse (exit 2) a remote the repository does not have, naming where it was set."""
    if name in remote_names(toplevel):
        return
    fix = f"add it (`git -C {toplevel} remote add {name} URL`)"
    if plan.run.remote:
        raise PlanError(f"{plan.path}: run.remote: {name!r} is not a remote of {toplevel}; {fix} or fix run.remote")
    source = settings.sources.get("remote", "default")
    raise UsageError(f"remote setting ({source}): {name!r} is not a remote of {toplevel}; {fix} or change the setting")


def check_new_remote_branch(settings: Any, plan: Any, toplevel: Path, name: str, branch: str) -> None:
    """A new run's remote must exist and must not hold its branch yet (that is another run's history)."""
    check_remote(settings, plan, toplevel, name)
    head = RemoteBranch(Path(toplevel), name, branch).fetch()
    if head is not None:
        raise PlanError(f"{plan.path}: run.id: branch {branch} already exists on the remote {name!r} (at "
                        f"{head[:10]}) but no run '{plan.run.id}' is recorded in {settings.db}; delete it there "
                        f"(git push {name} --delete {branch}) or give the plan a new run.id")


def local_checkout(settings: Any, run: Any, name: str) -> tuple[Path, Path]:
    """This machine's clone and worktree for the run: the recorded ones, unless the current directory is
    in another clone that has the remote and the run's base commit (another machine recorded the run);
    then that clone, with the worktree under this machine's ``worktrees_dir``."""
    from autopack.adapters.git.calls import _git

    recorded = Path(run.repo_root), Path(run.worktree)
    found = _git(Path.cwd(), "rev-parse", "--show-toplevel", check=False)
    if found.status != 0:
        return recorded
    here = Path(found.stdout.strip())
    if here.resolve() == recorded[0].resolve() or name not in remote_names(here) \
            or not has_commit(here, run.base_commit):
        return recorded
    return here, Path(settings.worktrees_dir) / run.id


def recorded_head(store: Any, run: Any) -> str:
    """The commit the store records the run branch at: its last completed attempt's, else the base."""
    from autopack.store.queries import recorded_head as last_recorded

    return last_recorded(store, run.id) or run.base_commit


class RunBranch:
    """A run branch kept in step with its remote; ``stale`` until taken, and again after a refused push."""

    def __init__(self, remote: RemoteBranch, store: Any, run: Any, observer: Any) -> None:
        self.remote, self.store, self.run, self.observer = remote, store, run, observer
        self.expected: str | None = None  # the remote's head as last seen (None: no such branch)
        self.stale = True

    @property
    def _top(self) -> Path:
        return self.remote.toplevel

    def take(self) -> str:
        """Fetch and compare with the record (see the module); returns the recorded commit."""
        recorded = recorded_head(self.store, self.run)
        head = self.remote.fetch()
        where = f"{self.remote.remote}/{self.run.branch}"
        if head == recorded:
            self.expected = head
        elif head is None or is_ancestor(self._top, head, recorded):
            if head is None and recorded == self.run.base_commit:
                self.expected = None  # nothing completed yet: the first push creates it
            else:
                self._push_record(recorded, head, where)
        elif is_ancestor(self._top, recorded, head) and self._ours(recorded, head):
            self.expected = head  # the next push replaces exactly these unrecorded commits
            self._recovered(f"{where} at {head[:10]} is ahead of the recorded {recorded[:10]} by commits "
                            "never recorded (a machine died before recording them); they are redone")
        else:
            raise RemoteDiverged(self._diverged(where, head, recorded))
        self.stale = False
        return recorded

    def align_local(self, recorded: str, local: str | None) -> None:
        """Put the local branch (at ``local``; None: absent) at the record: drop unrecorded commits of this
        run, refuse anything else."""
        from autopack.adapters.git.remote import move_branch

        if local is None or local == recorded:
            return
        behind = is_ancestor(self._top, local, recorded)
        if not behind and not self._ours(recorded, local):
            raise RemoteDiverged(self._diverged(f"the local branch {self.run.branch}", local, recorded))
        move_branch(self._top, self.run.branch, recorded)
        if behind:
            return
        if is_ancestor(self._top, recorded, local):
            self._recovered(f"local {self.run.branch} at {local[:10]} was ahead of the recorded {recorded[:10]} "
                            "by commits never recorded; they are redone")
        else:
            self._recovered(f"local {self.run.branch} at {local[:10]} held commits never recorded, and the run "
                            f"went on without them (another machine redid their phase); moved to the recorded "
                            f"{recorded[:10]}")

    def publish(self, commit: str, parent: str) -> None:
        """Push a completed attempt's commit before it is recorded; PushRejected (the local commit undone)
        when the remote branch or the store's record moved since the run was taken."""
        from autopack.adapters.git.remote import move_branch

        where = f"{self.remote.remote}/{self.run.branch}"
        problem = None
        if recorded_head(self.store, self.run) != parent:
            problem = f"the store's record of {self.run.branch} moved since this attempt started"
        elif not self.remote.push(commit, self.expected):
            problem = (f"{where} is no longer at {(self.expected or 'nothing')[:10]} (another executor or a "
                       "person pushed to it)")
        if problem is None:
            self.expected = commit
            return
        move_branch(self._top, self.run.branch, parent)  # the index keeps the change: it is saved as a patch
        self.stale = True
        raise PushRejected(f"push of {commit[:10]} to {where} refused: {problem}; nothing was overwritten, the "
                           "commit is undone and the run is compared with the remote again before its next phase")

    def _push_record(self, recorded: str, head: str | None, where: str) -> None:
        state = "has no such branch" if head is None else f"is behind it, at {head[:10]}"
        if not has_commit(self._top, recorded):
            raise RemoteDiverged(f"{where} {state}, but the store records the run at {recorded[:10]}, which "
                                 f"{self._top} does not have; push {self.run.branch} from the machine that "
                                 "made it, then try again")
        if not self.remote.push(recorded, head):
            raise RemoteDiverged(f"{where} moved while the recorded {recorded[:10]} was pushed to it; try again")
        self.expected = recorded
        self._recovered(f"{where} {state}; the recorded {recorded[:10]} was pushed")

    def _ours(self, older: str, newer: str) -> bool:
        extra = commits_between(self._top, older, newer)
        return bool(extra) and all(c.get("Autopack-Run") == self.run.id and "Autopack-Phase" in c for c in extra)

    def _diverged(self, what: str, commit: str, recorded: str) -> str:
        return (f"{what} is at {commit[:10]}, which is not the store's record of run '{self.run.id}' "
                f"({recorded[:10]}) nor only unrecorded autopack commits on top of it; inspect it (git log "
                f"{recorded[:10]}..{commit[:10]}), then move the branch to {recorded[:10]} (keeping what you "
                "need elsewhere) or record the work another way")

    def _recovered(self, what: str) -> None:
        self.observer.notify(Recovered(run_id=self.run.id, phase_id=None, what=what))

