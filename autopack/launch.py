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
from pathlib import Path
from typing import Any, Iterator

from autopack.errors import UsageError
from autopack.lock import Heartbeat, RunLock
from autopack.plan import PlanSpec, plan_from_dict


@dataclass(frozen=True)
class RunResult:
    run_id: str
    state: str  # complete | failed | queued | running
    counts: dict[str, int]
    created: bool


def state_dir(settings: Any) -> Path:
    return settings.db.parent


def recorded_run(store: Any, plan: PlanSpec) -> Any:
    """The run recorded for this plan (None when new); refuses a plan that changed since."""
    run = store.get_run(plan.run.id)
    if run is not None and run.plan_hash != plan.content_hash():
        raise UsageError(
            f"{plan.path}: run '{plan.run.id}' was recorded from a different version of this plan; "
            f"restore the plan, or give it a new run.id to start a new run"
        )
    return run


def resume_target(store: Any, settings: Any, run_id: str) -> tuple[PlanSpec, Any]:
    """The recorded run ``run_id`` and the plan it was recorded with."""
    run = store.get_run(run_id) if store else None
    if run is None:
        raise UsageError(f"no run '{run_id}' in {settings.db}; `autopack status` lists the runs")
    return plan_from_dict(run.plan, Path(run.plan_path), default_max_attempts=settings.max_attempts), run


def make_builder(settings: Any, plan: PlanSpec, cassette_path: Path | None):
    """The builder for this run: the cassette's, or the live API's (which needs a key)."""
    from autopack.llm.builder import ClaudeBuilder
    from autopack.llm.cassette import Cassette
    from autopack.llm.client import make_client_factory

    path = cassette_path or plan.run.cassette
    cassette = Cassette.load(path) if path else None
    factory = make_client_factory(cassette=cassette, api_key=os.environ.get("ANTHROPIC_API_KEY") or None,
                                  max_retries=settings.api_max_retries)
    model = plan.run.models.get("builder") or settings.builder_model
    return ClaudeBuilder(factory, model=model, max_tokens=settings.builder_max_tokens, cassette=cassette), model


def record_run(store: Any, settings: Any, plan: PlanSpec):
    """Create the run's record (all phases queued) after checking its repository and base."""
    from autopack.workspace import Workspace, locate_repo, resolve_ref

    location = locate_repo(plan.run.repo)
    base_commit = resolve_ref(location.toplevel, plan.run.base)
    branch = f"autopack/{plan.run.id}"
    worktree = settings.worktrees_dir / plan.run.id
    if Workspace(location.toplevel, worktree, branch, location.subdir).branch_exists():
        raise UsageError(
            f"branch {branch} already exists in {location.toplevel} but no run '{plan.run.id}' is recorded "
            f"in {settings.db}; delete the branch (git branch -D {branch}) or give the plan a new run.id"
        )
    return store.create_run(plan=plan, repo_root=location.toplevel, subdir=location.subdir,
                            base_commit=base_commit, branch=branch, worktree=worktree)


def run_lock(settings: Any, run_id: str) -> RunLock:
    return RunLock(state_dir(settings) / "locks", run_id)


@contextmanager
def executor(store: Any, settings: Any, run_id: str | None = None) -> Iterator[str]:
    """This process as a recorded executor with a heartbeat that extends its leases."""
    executor_id = store.register_executor(os.getpid(), socket.gethostname(), " ".join(sys.argv), run_id)
    try:
        with Heartbeat(lambda: store.extend_leases(executor_id, settings.lease_s), settings.heartbeat_s):
            yield executor_id
    finally:
        store.stop_executor(executor_id)


def open_run(store: Any, settings: Any, plan: PlanSpec, run: Any, builder: Any, model: str,
             observer: Any, executor_id: str) -> Any:
    """A ready RunContext for a run whose lock the caller holds: worktree ensured, state recovered."""
    from autopack.runner import RunContext
    from autopack.workspace import Workspace

    workspace = Workspace(Path(run.repo_root), Path(run.worktree), run.branch, run.subdir)
    workspace.ensure(run.base_commit)
    recover(store, run, workspace, observer)
    return RunContext(store=store, run=run, plan=plan, workspace=workspace, builder=builder,
                      settings=settings, executor_id=executor_id,
                      artifacts=state_dir(settings) / "runs" / run.id, observer=observer,
                      builder_model=model)


def execute(store: Any, settings: Any, plan: PlanSpec, run: Any, builder: Any, model: str,
            observer: Any, *, retry_failed: bool = False) -> RunResult:
    """Run the recorded run under its lock: recover, optionally requeue failures, execute."""
    from autopack.runner import execute_run
    from autopack.store.queries import derive_run_state

    with run_lock(settings, run.id), executor(store, settings, run.id) as executor_id:
        ctx = open_run(store, settings, plan, run, builder, model, observer, executor_id)
        if retry_failed:
            requeued = store.requeue_failed(run.id)
            if requeued:
                observer.notify("requeued", phase_ids=requeued)
        counts = execute_run(ctx)
    return RunResult(run.id, derive_run_state(counts), counts, created=False)


def recover(store: Any, run: Any, workspace: Any, observer: Any) -> None:
    """Repair what a killed executor left: a commit the database missed, claims, a dirty worktree."""
    trailers = workspace.head_trailers()
    if trailers.get("Autopack-Run") == run.id and "Autopack-Phase" in trailers:
        phase = store.phase(run.id, trailers["Autopack-Phase"])
        if phase is not None and phase.state != "complete":
            number = int(trailers.get("Autopack-Attempt", "0"))
            attempt = next((a for a in store.attempts(phase.pk) if a.number == number), None)
            if attempt is not None and (attempt.decision or {}).get("verdict") == "complete":
                head = workspace.head()
                store.finish_attempt(attempt.id, "complete", commit=head)
                store.complete_phase(phase.pk, head, attempt.decision)
                store.add_event(run.id, "reconciled_commit", {"commit": head}, phase.phase_id, attempt.id)
                observer.notify("recovered", phase_id=phase.phase_id, what=f"commit {head[:10]} recorded")
    for phase_id in store.rescue_run(run.id):
        observer.notify("recovered", phase_id=phase_id, what="abandoned attempt; phase requeued")
    workspace.reset_clean()
