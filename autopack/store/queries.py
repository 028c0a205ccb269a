"""Read models for `status`, computed with SQL aggregates (never by loading every row)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlmodel import select

from autopack.store import STATUS_SCHEMA
from autopack.store.db import read_session
from autopack.store.models import Attempt, Executor, LlmCall, Phase, Run
from autopack.store.runs import ACTIVE_STATES, Store



def derive_run_state(by_state: dict[str, int]) -> str:
    """A run's state follows from its phases: running, queued, complete or failed."""
    if any(by_state.get(s) for s in ACTIVE_STATES):
        return "running"
    if by_state.get("queued"):
        return "queued"
    if sum(by_state.values()) and by_state.get("complete", 0) == sum(by_state.values()):
        return "complete"
    return "failed" if by_state else "queued"


def _usage_columns() -> tuple[Any, ...]:
    return (
        func.coalesce(func.sum(LlmCall.input_tokens), 0),
        func.coalesce(func.sum(LlmCall.output_tokens), 0),
        func.coalesce(func.sum(LlmCall.cache_read_tokens), 0),
        func.coalesce(func.sum(LlmCall.cache_write_tokens), 0),
        func.coalesce(func.sum(LlmCall.cost_usd), 0.0),
        func.coalesce(func.sum(case((LlmCall.cost_usd.is_(None), 1), else_=0)), 0),
    )


def _usage_dict(row: Any) -> dict[str, Any]:
    inp, out, cread, cwrite, cost, unpriced = row
    return {
        "tokens": {"input": int(inp), "output": int(out), "cache_read": int(cread), "cache_write": int(cwrite)},
        "cost_usd": round(float(cost), 6),
        "unpriced_calls": int(unpriced),
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def count_runs(store: Store) -> int:
    """How many runs the store holds."""
    with read_session(store.engine) as session:
        return session.exec(select(func.count()).select_from(Run)).one()


def list_runs(store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` runs (None: every run), newest first, with phases counted by state,
    usage and last update. Only the listed runs' phases and ledger rows are aggregated."""
    newest_first = (Run.created_at.desc(), Run.id.desc())
    newest = select(Run.id, Run.goal, Run.branch, Run.created_at).order_by(*newest_first)
    phase_counts = (select(Phase.run_id, Phase.state, func.count(), func.max(Phase.updated_at))
                    .group_by(Phase.run_id, Phase.state))
    usage_sums = select(LlmCall.run_id, *_usage_columns()).group_by(LlmCall.run_id)
    if limit is not None:
        newest = newest.limit(limit)
        listed = select(Run.id).order_by(*newest_first).limit(limit)
        phase_counts = phase_counts.where(Phase.run_id.in_(listed))
        usage_sums = usage_sums.where(LlmCall.run_id.in_(listed))
    with read_session(store.engine) as session:
        runs = list(session.exec(newest))
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        updated: dict[str, datetime] = {}
        for run_id, state, n, last in session.exec(phase_counts):
            counts[run_id][state] = n
            if last and (run_id not in updated or last > updated[run_id]):
                updated[run_id] = last
        usage = {row[0]: _usage_dict(row[1:]) for row in session.exec(usage_sums)}
    empty = _usage_dict((0, 0, 0, 0, 0.0, 0))
    return [
        {"id": run_id, "goal": goal, "state": derive_run_state(counts[run_id]), "branch": branch,
         "phases": dict(sorted(counts[run_id].items())), **usage.get(run_id, empty),
         "created_at": _iso(created), "updated_at": _iso(updated.get(run_id, created))}
        for run_id, goal, branch, created in runs
    ]


def run_status(store: Store, run_id: str) -> dict[str, Any] | None:
    """Contract 4: the run, its usage totals and every phase with its decision and last failure."""
    with read_session(store.engine) as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        phases = list(session.exec(select(Phase).where(Phase.run_id == run_id).order_by(Phase.position)))
        usage = _usage_dict(session.exec(select(*_usage_columns()).where(LlmCall.run_id == run_id)).one())
        completing = dict(session.exec(
            select(Attempt.phase_pk, Attempt.model).where(Attempt.run_id == run_id, Attempt.state == "complete")).all())
        executors = list(session.exec(
            select(Executor).where(Executor.run_id == run_id, Executor.stopped_at.is_(None))))
    by_state: dict[str, int] = defaultdict(int)
    for phase in phases:
        by_state[phase.state] += 1
    return {
        "schema": STATUS_SCHEMA,
        "run": {
            "id": run.id, "goal": run.goal, "state": derive_run_state(by_state), "branch": run.branch,
            "base_commit": run.base_commit, "worktree": run.worktree, "plan_path": run.plan_path,
            "flags": run.flags, **usage, "created_at": _iso(run.created_at),
            "executors": [{"id": e.id, "pid": e.pid, "host": e.host, "phase": e.phase_id, "step": e.step,
                           "heartbeat_at": _iso(e.heartbeat_at)} for e in executors],
        },
        "phases": [_phase_dict(p, completing.get(p.pk)) for p in phases],
    }


def _phase_dict(phase: Phase, completed_by: str | None) -> dict[str, Any]:
    decision = phase.decision
    last_failure = None
    if phase.failure_kind:
        last_failure = {"kind": phase.failure_kind, "fingerprint": phase.failure_fingerprint,
                        "message": phase.failure_message}
    return {
        "id": phase.phase_id, "state": phase.state, "attempts": phase.attempts,
        "max_attempts": phase.max_attempts, "commit": phase.commit,
        "category": phase.spec.get("category"), "depends_on": phase.spec.get("depends_on", []),
        "decision": decision, "last_failure": last_failure, "model": completed_by,
        "parked": phase.parked_reason,
        "updated_at": _iso(phase.updated_at),
    }
