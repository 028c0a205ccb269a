"""Per-run facts and metrics for `ab-test`, as SQL aggregates over the requested runs only.

Every query is a GROUP BY over ``run_id IN (...)`` (in chunks, to stay under SQLite's
bound-parameter limit), so the cost grows with the runs compared, never with the
whole ledger loaded into Python.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator, Sequence

from sqlalchemy import case, func
from sqlmodel import select

from autopack.store.db import read_session
from autopack.store.models import Attempt, Event, LlmCall, Phase, Run, SuiteRun
from autopack.store.queries import derive_run_state
from autopack.store.runs import Store

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
ROLES = ("builder", "doctor")
_CHUNK = 500


@dataclass(frozen=True)
class RunFacts:
    """What decides whether two runs are comparable."""

    id: str
    comparable_hash: str
    base_commit: str
    plan: dict[str, Any]  # PlanSpec.to_dict() as recorded
    models: dict[str, str]  # plan's run.models, with "builder" = the model its first attempts used
    autopack_version: str
    state: str  # derived: complete | failed | running | queued
    flags: dict[str, Any]
    created_at: datetime

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "failed")


@dataclass(frozen=True)
class RunMetrics:
    """What a run cost and achieved. ``tokens`` has one entry per kind plus ``total``."""

    run_id: str
    tokens: dict[str, int]
    tokens_by_role: dict[str, dict[str, int]]  # builder and doctor always present
    cost_usd: float
    unpriced_calls: int
    llm_calls: int
    doctor_calls: int
    doctor_skipped: int
    phases_complete: int
    phases_total: int
    attempts: int
    escalations: int
    test_runs: int
    wall_s: float | None  # last attempt end - first attempt start; None without a finished attempt
    phase_states: dict[str, str] = field(default_factory=dict)


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start:start + _CHUNK])


def run_facts(store: Store, run_ids: Sequence[str] | None = None) -> dict[str, RunFacts]:
    """Facts of the named runs (those that exist), or of every run when ``run_ids`` is None."""
    with read_session(store.engine) as session:
        if run_ids is None:
            rows = list(session.exec(select(Run.id, Run.comparable_hash, Run.base_commit, Run.plan, Run.flags,
                                            Run.autopack_version, Run.created_at)))
            run_ids = [row[0] for row in rows]
        else:
            rows = []
            for chunk in _chunks(run_ids):
                rows += session.exec(select(Run.id, Run.comparable_hash, Run.base_commit, Run.plan, Run.flags,
                                            Run.autopack_version, Run.created_at).where(Run.id.in_(chunk)))
        states: dict[str, dict[str, int]] = defaultdict(dict)
        builders: dict[str, set[str]] = defaultdict(set)
        for chunk in _chunks(run_ids):
            for run_id, state, n in session.exec(
                select(Phase.run_id, Phase.state, func.count()).where(Phase.run_id.in_(chunk))
                .group_by(Phase.run_id, Phase.state)
            ):
                states[run_id][state] = n
            for run_id, model in session.exec(
                select(Attempt.run_id, Attempt.model).distinct()
                .where(Attempt.run_id.in_(chunk), Attempt.number == 1, Attempt.model.is_not(None))
            ):
                builders[run_id].add(model)
    facts = {}
    for run_id, comparable, base, plan, flags, version, created in rows:
        models = dict((plan.get("run") or {}).get("models") or {})
        if builders[run_id]:
            models["builder"] = ", ".join(sorted(builders[run_id]))
        facts[run_id] = RunFacts(id=run_id, comparable_hash=comparable, base_commit=base, plan=plan, models=models,
                                 autopack_version=version, state=derive_run_state(states[run_id]),
                                 flags=dict(flags or {}), created_at=created)
    return facts


def run_metrics(store: Store, run_ids: Sequence[str]) -> dict[str, RunMetrics]:
    """Metrics of each named run; a run with no rows in a table counts zero there."""
    usage: dict[str, dict[str, tuple]] = defaultdict(dict)
    events: dict[str, dict[str, int]] = defaultdict(dict)
    attempts: dict[str, tuple[int, datetime | None, datetime | None]] = {}
    suites: dict[str, int] = {}
    phases: dict[str, dict[str, str]] = defaultdict(dict)
    with read_session(store.engine) as session:
        for chunk in _chunks(run_ids):
            for run_id, role, *sums in session.exec(
                select(LlmCall.run_id, LlmCall.role,
                       func.coalesce(func.sum(LlmCall.input_tokens), 0),
                       func.coalesce(func.sum(LlmCall.output_tokens), 0),
                       func.coalesce(func.sum(LlmCall.cache_read_tokens), 0),
                       func.coalesce(func.sum(LlmCall.cache_write_tokens), 0),
                       func.coalesce(func.sum(LlmCall.cost_usd), 0.0),
                       func.sum(case((LlmCall.cost_usd.is_(None), 1), else_=0)),
                       func.count())
                .where(LlmCall.run_id.in_(chunk)).group_by(LlmCall.run_id, LlmCall.role)
            ):
                usage[run_id][role] = tuple(sums)
            for run_id, kind, n in session.exec(
                select(Event.run_id, Event.kind, func.count())
                .where(Event.run_id.in_(chunk), Event.kind.in_(("doctor_skipped", "escalation")))
                .group_by(Event.run_id, Event.kind)
            ):
                events[run_id][kind] = n
            for run_id, n, first, last in session.exec(
                select(Attempt.run_id, func.count(), func.min(Attempt.started_at), func.max(Attempt.finished_at))
                .where(Attempt.run_id.in_(chunk)).group_by(Attempt.run_id)
            ):
                attempts[run_id] = (n, first, last)
            suites.update(session.exec(
                select(SuiteRun.run_id, func.count()).where(SuiteRun.run_id.in_(chunk)).group_by(SuiteRun.run_id)
            ).all())
            for run_id, phase_id, state in session.exec(
                select(Phase.run_id, Phase.phase_id, Phase.state).where(Phase.run_id.in_(chunk))
                .order_by(Phase.run_id, Phase.position)
            ):
                phases[run_id][phase_id] = state
    return {run_id: _metrics(run_id, usage[run_id], events[run_id], attempts.get(run_id, (0, None, None)),
                             suites.get(run_id, 0), phases[run_id])
            for run_id in run_ids}


def _metrics(run_id: str, usage: dict[str, tuple], events: dict[str, int],
             attempts: tuple[int, datetime | None, datetime | None], test_runs: int,
             phase_states: dict[str, str]) -> RunMetrics:
    by_role: dict[str, dict[str, int]] = {}
    for role in sorted(set(ROLES) | set(usage)):
        sums = usage.get(role, (0, 0, 0, 0, 0.0, 0, 0))
        kinds = {kind: int(value) for kind, value in zip(TOKEN_KINDS, sums)}
        by_role[role] = {**kinds, "total": sum(kinds.values())}
    tokens = {kind: sum(role[kind] for role in by_role.values()) for kind in (*TOKEN_KINDS, "total")}
    count, first, last = attempts
    wall_s = (last - first).total_seconds() if first is not None and last is not None else None
    return RunMetrics(
        run_id=run_id, tokens=tokens, tokens_by_role=by_role,
        cost_usd=float(sum(sums[4] for sums in usage.values())),
        unpriced_calls=int(sum(sums[5] for sums in usage.values())),
        llm_calls=int(sum(sums[6] for sums in usage.values())),
        doctor_calls=int(usage.get("doctor", (0,) * 7)[6]),
        doctor_skipped=events.get("doctor_skipped", 0),
        phases_complete=sum(1 for state in phase_states.values() if state == "complete"),
        phases_total=len(phase_states), attempts=count, escalations=events.get("escalation", 0),
        test_runs=test_runs, wall_s=wall_s, phase_states=dict(phase_states),
    )
