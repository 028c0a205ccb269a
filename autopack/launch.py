"""From a plan file or a run id to a locked, recovered, executing run.

Everything that can be checked is checked before the database or the repository is
touched: the plan, the cassette, the API key, the git repository and the base ref.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from autopack.domain.lifecycle import PhaseState
from autopack.errors import NoSuchRun, UsageError
from autopack.events import Recovered, Requeued
from autopack.lock import Heartbeat, PgRunLock, RunLock
from autopack.plan import PlanSpec, plan_from_dict


@dataclass(frozen=True)
class RunResult:
    run_id: str
    state: str  # a RunState: complete | failed | queued | running
    counts: dict[str, int]


def recorded_run(store: Any, settings: Any, plan: PlanSpec) -> tuple[Any, str | None]:
    """The run recorded for this plan (None when new), and what a changed plan changed in it (None: nothing).

    A plan may change the phases that are not complete (see ``autopack.replan``): the run
    takes the new plan under its lock, and changed phases that failed, parked or not, are
    queued for a new pass. Any other change is refused (exit 2).
    """
    run = store.get_run(plan.run.id)
    if run is None or run.plan_hash == plan.content_hash():
        return run, None
    from autopack.replan import changed_phases
    from autopack.store.replans import replace_plan

    complete = {phase.phase_id for phase in store.phases(run.id) if phase.state == PhaseState.COMPLETE}
    changed = changed_phases(run.plan, plan, complete)
    with run_lock(settings, run.id):
        requeued = replace_plan(store, run.id, plan, changed)
    notice = f"the plan changed: run '{run.id}' takes it"
    if changed:
        notice += f" (phases changed: {', '.join(changed)})"
    if requeued:
        notice += f"; queued again: {', '.join(requeued)}"
    return store.get_run(run.id), notice


def resume_target(store: Any, settings: Any, run_id: str) -> tuple[PlanSpec, Any]:
    """The recorded run ``run_id`` and the plan it was recorded with."""
    run = store.get_run(run_id) if store else None
    if run is None:
        raise NoSuchRun(run_id, settings.db)
    return plan_from_dict(run.plan, Path(run.plan_path), default_max_attempts=settings.max_attempts), run


@dataclass(frozen=True)
class ModelClients:
    """How a run reaches Claude: a client per (role, phase, attempt) — live, recording or replaying
    ``cassette`` — and the price overrides. Builders and the doctor are made from it."""

    client_factory: Any  # llm.client.ClientFactory
    cassette: Any  # llm.cassette.Cassette | None
    prices: Any


def connect(settings: Any, plan: PlanSpec, cassette_path: Path | None, record_path: Path | None = None) -> ModelClients:
    """The cassette's clients, or the live API's (which needs a key).

    With ``record_path`` every live exchange is also written there as a cassette.
    """
    from autopack.llm.cassette import Cassette, CassetteRecorder
    from autopack.llm.client import make_client_factory

    path = cassette_path or plan.run.cassette
    cassette = Cassette.load(path) if path else None
    api_key = os.environ.get("ANTHROPIC_API_KEY") or None
    if record_path is not None and cassette is not None:
        raise UsageError(f"--record {record_path}: recording needs a live run, but a cassette ({path}) is "
                         "selected; remove run.cassette / --cassette to record")
    recorder = CassetteRecorder(record_path) if record_path is not None else None
    factory = make_client_factory(cassette=cassette, api_key=api_key, max_retries=settings.api_max_retries,
                                  recorder=recorder)
    return ModelClients(factory, cassette, settings.prices or None)


def builder_mode(settings: Any, plan: PlanSpec, run: Any = None) -> str:
    """``run.builder`` from the plan; else the mode the run was recorded with (a run recorded before
    builder modes existed has none: it was built by the single builder); else, for a new run, the
    ``builder`` setting."""
    if plan.run.builder:
        return plan.run.builder
    if run is not None:
        return run.builder or "single"
    return settings.builder


def make_builder(clients: ModelClients, settings: Any, plan: PlanSpec, mode: str) -> tuple[Any, str]:
    """The builder of this mode, and the builder model."""
    model = plan.run.models.get("builder") or settings.builder_model
    cap = settings.builder_max_tokens_cap
    if mode == "single":
        from autopack.llm.builder import ClaudeBuilder

        return ClaudeBuilder(clients.client_factory, model=model, max_tokens=cap, cassette=clients.cassette,
                             budget_cap=cap, prices=clients.prices), model
    from autopack.engine.agent import AgentBuilder
    from autopack.llm.turns import ClaudeTurns

    turns = ClaudeTurns(clients.client_factory, cassette=clients.cassette, prices=clients.prices)
    max_turns = int(plan.run.limits.get("agent_max_turns") or settings.agent_max_turns)
    return AgentBuilder(turns, default_model=model, max_turns=max_turns, budget_cap=cap), model


def model_warnings(settings: Any, plan: PlanSpec) -> list[str]:
    """One warning per configured model the SDK lists as deprecated, naming its end-of-life date."""
    from autopack.llm.client import deprecation_warning

    models = {plan.run.models.get(role) or getattr(settings, f"{role}_model")
              for role in ("builder", "doctor", "escalation")}
    return [w for w in (deprecation_warning(m) for m in sorted(models)) if w]


@dataclass(frozen=True)
class NewRun:
    """Where a new run will work: checked before the database or the repository is touched."""

    toplevel: Path
    subdir: str
    base_commit: str
    branch: str
    worktree: Path


def check_new_run(settings: Any, plan: PlanSpec) -> NewRun:
    """Check the plan's repository, base ref and run branch; errors name the plan file and key."""
    from autopack.adapters.git.calls import locate_repo, resolve_ref
    from autopack.engine.branch_sync import check_new_remote_branch, remote_name
    from autopack.workspace import Workspace

    try:
        location = locate_repo(plan.run.repo)
    except UsageError as exc:
        raise UsageError(f"{plan.path}: run.repo: {exc}") from None
    try:
        base_commit = resolve_ref(location.toplevel, plan.run.base)
    except UsageError as exc:
        raise UsageError(f"{plan.path}: run.base: {exc}") from None
    branch = f"autopack/{plan.run.id}"
    remote = remote_name(settings, plan)
    if remote:
        check_new_remote_branch(settings, plan, location.toplevel, remote, branch)
    worktree = settings.worktrees_dir / plan.run.id
    if Workspace(location.toplevel, worktree, branch, location.subdir).branch_exists():
        raise UsageError(
            f"{plan.path}: run.id: branch {branch} already exists in {location.toplevel} but no run "
            f"'{plan.run.id}' is recorded in {settings.db}; delete the branch (git branch -D {branch}) "
            "or give the plan a new run.id"
        )
    return NewRun(location.toplevel, location.subdir, base_commit, branch, worktree)


def record_run(store: Any, plan: PlanSpec, target: NewRun, settings: Any):
    """Create the run's record, all phases queued, for a checked target, with its builder mode."""
    return store.create_run(plan=plan, repo_root=target.toplevel, subdir=target.subdir,
                            base_commit=target.base_commit, branch=target.branch, worktree=target.worktree,
                            builder=builder_mode(settings, plan))


def run_lock(settings: Any, run_id: str) -> RunLock | PgRunLock:
    """The run's lock: a file lock beside a SQLite store, an advisory lock on a PostgreSQL one."""
    if isinstance(settings.db, Path):
        return RunLock(settings.state_dir / "locks", run_id)
    return PgRunLock(settings.db, run_id)


# An executor silent for this many leases is retired whatever its host: none beats that rarely.
RETIRE_AFTER_LEASES = 10


@contextmanager
def executor(store: Any, settings: Any, run_id: str | None = None) -> Iterator[str]:
    """This process as a recorded executor with a heartbeat that extends its leases.

    First, the executors that kills left recorded as running are retired (see ``is_dead``).
    """
    host = socket.gethostname()
    store.retire_executors(lambda recorded, now: is_dead(recorded, now, host, settings.lease_s))
    executor_id = store.register_executor(os.getpid(), host, " ".join(sys.argv), run_id)
    try:
        with Heartbeat(lambda: store.extend_leases(executor_id, settings.lease_s), settings.heartbeat_s):
            yield executor_id
    finally:
        store.stop_executor(executor_id)


def is_dead(recorded: Any, now: datetime, host: str, lease_s: float) -> bool:
    """Whether a running executor's record outlived its process: on this host, its pid is gone, or
    it has been silent for a lease (the pid is another process's now); anywhere, it has been
    silent for RETIRE_AFTER_LEASES leases."""
    silent_s = (now - recorded.heartbeat_at).total_seconds()
    if silent_s > RETIRE_AFTER_LEASES * lease_s:
        return True
    return recorded.host == host and (silent_s > lease_s or not _process_exists(recorded.pid))


def _process_exists(pid: int) -> bool:
    if pid <= 0:  # 0 and below name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def open_run(store: Any, settings: Any, plan: PlanSpec, run: Any, clients: ModelClients,
             observer: Any, executor_id: str, extra_caps: tuple = ()) -> Any:
    """A ready RunContext for a run whose lock the caller holds: worktree ensured, state recovered,
    the builder of the run's mode and the doctor made from ``clients``."""
    from autopack.adapters.git.remote import RemoteBranch
    from autopack.caps import CostCap
    from autopack.engine.branch_sync import RunBranch, check_remote, local_checkout, remote_name
    from autopack.llm.doctor import Doctor
    from autopack.orphans import stop_orphaned_suite
    from autopack.runner import RunContext
    from autopack.sandbox import sandbox_for
    from autopack.workspace import Workspace

    sandbox = sandbox_for(settings, plan.run.sandbox, settings.state_dir)  # exit 4 before anything is touched
    if not isinstance(settings.db, Path):  # a server's store: the state directory holds only this machine's files
        from autopack.errors import writing
        from autopack.store import make_state_dir

        with writing(settings.state_dir, "autopack's state directory"):
            make_state_dir(settings.state_dir)
    remote = remote_name(settings, plan)
    toplevel, worktree = local_checkout(settings, run, remote) if remote else (Path(run.repo_root), Path(run.worktree))
    owned = worktree.resolve().is_relative_to(Path(settings.worktrees_dir).resolve())  # we hold the lock too
    workspace = Workspace(toplevel, worktree, run.branch, run.subdir, owned=owned)
    stop_orphaned_suite(settings.state_dir / "runs" / run.id / "logs")
    branch, start = None, run.base_commit
    if remote:  # fetched and compared with the store's record before anything is claimed (contract 6)
        check_remote(settings, plan, toplevel, remote)
        branch = RunBranch(RemoteBranch(toplevel, remote, run.branch), store, run, observer)
        start = branch.take()
    workspace.ensure(start)
    if branch is not None:
        branch.align_local(start, workspace.branch_commit())
    recover(store, run, workspace, observer)
    caps = tuple(extra_caps)
    if plan.run.limits.get("max_cost_usd"):
        caps += (CostCap("run.limits.max_cost_usd", float(plan.run.limits["max_cost_usd"]),
                         lambda: store.run_cost(run.id)),)
    builder, model = make_builder(clients, settings, plan, builder_mode(settings, plan, run))
    doctor = Doctor(clients.client_factory, model=plan.run.models.get("doctor") or settings.doctor_model,
                    cassette=clients.cassette, prices=clients.prices)
    ctx = RunContext(store=store, run=run, plan=plan, workspace=workspace, builder=builder,
                      settings=settings, executor_id=executor_id,
                      artifacts=settings.state_dir / "runs" / run.id, observer=observer,
                      builder_model=model,
                      escalation_model=plan.run.models.get("escalation") or settings.escalation_model,
                      doctor=doctor, cost_caps=caps, sandbox=sandbox, branch=branch)
    ctx.test  # resolve (or detect) the test command now: a bad one is a usage error before any claim
    return ctx


def execute(store: Any, settings: Any, plan: PlanSpec, run: Any, clients: ModelClients,
            observer: Any, *, retry_failed: bool = False, max_cost_usd: float | None = None) -> RunResult:
    """Run the recorded run under its lock: recover, optionally requeue failures, execute."""
    from autopack.runner import execute_run
    from autopack.store.queries import derive_run_state

    with run_lock(settings, run.id), executor(store, settings, run.id) as executor_id:
        caps = ()
        if max_cost_usd is not None:
            from autopack.caps import CostCap

            caps = (CostCap("--max-cost", max_cost_usd, lambda: store.run_cost(run.id)),)
        ctx = open_run(store, settings, plan, run, clients, observer, executor_id, caps)
        if retry_failed:
            requeued = store.requeue_failed(run.id)
            if requeued:
                observer.notify(Requeued(run_id=run.id, phase_ids=tuple(requeued)))
        counts = execute_run(ctx)
    return RunResult(run.id, derive_run_state(counts), counts)


def recover(store: Any, run: Any, workspace: Any, observer: Any) -> None:
    """Repair what a killed executor left: a commit the database missed, claims, a dirty worktree."""
    trailers = workspace.head_trailers()
    if trailers.get("Autopack-Run") == run.id and "Autopack-Phase" in trailers:
        phase = store.phase(run.id, trailers["Autopack-Phase"])
        if phase is not None and phase.state != PhaseState.COMPLETE:
            number = int(trailers.get("Autopack-Attempt", "0"))
            attempt = next((a for a in store.attempts(phase.pk) if a.number == number), None)
            if attempt is not None and (attempt.decision or {}).get("verdict") == "complete":
                head = workspace.head()
                store.reconcile_commit(phase.pk, attempt.id, head, attempt.decision)
                observer.notify(Recovered(run_id=run.id, phase_id=phase.phase_id, what=f"commit {head[:10]} recorded"))
    for phase_id in store.rescue_run(run.id):
        observer.notify(Recovered(run_id=run.id, phase_id=phase_id, what="abandoned attempt; phase requeued"))
    workspace.reset_clean()
