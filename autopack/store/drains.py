"""SQL for drains and pick-next: drainable phases, stale claims, parking, per-run scores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import select

from autopack.store.db import read_session, write_session
from autopack.store.models import Attempt, Executor, LlmCall, Phase, PhaseDependency, Run
from autopack.store.runs import ACTIVE_STATES, Store, utcnow


@dataclass(frozen=True)
class DrainablePhase:
    run_id: str
    phase_id: str
    phase_pk: int
    state: str  # queued | failed
    failure_kind: str | None  # of its last failure (a queued phase may carry one: interrupted, requeued)
    failed_at: datetime | None  # when that failure was recorded
    position: int
    run_created_at: datetime
    parked_reason: str | None  # recorded, or why it would be parked now
    escalated_budget: int | None
    run_type: str | None
    category: str | None
    attempts: int


@dataclass(frozen=True)
class ParkRule:
    """Park a failed phase whose last ``identical`` failures share a fingerprint, or after ``max_attempts``."""

    identical: int = 3
    max_attempts: int = 12


def drainable_phases(store: Store, run_id: str | None = None, include_parked: bool = False,
                     rule: ParkRule = ParkRule()) -> list[DrainablePhase]:
    """Queued phases whose dependencies are complete, and failed phases that are not parked.

    A failed phase that the rule would park counts as parked. ``include_parked`` keeps
    parked phases, with the reason.
    """
    dep = aliased(Phase)
    blocked = exists().where(PhaseDependency.phase_pk == Phase.pk, PhaseDependency.depends_on_pk == dep.pk,
                             dep.state != "complete")
    failed = Phase.state == "failed"
    if not include_parked:
        failed = and_(failed, Phase.parked_reason.is_(None))
    query = (
        select(Phase.run_id, Phase.phase_id, Phase.pk, Phase.state, Phase.failure_kind, Phase.updated_at,
               Phase.position, Run.created_at, Phase.parked_reason, Phase.escalated_budget,
               Run.plan[("run", "type")].as_string(), Phase.spec["category"].as_string(),  # not the whole JSON
               Phase.attempts)
        .join(Run, Run.id == Phase.run_id)
        .where(or_(and_(Phase.state == "queued", ~blocked), failed))
    )
    if run_id is not None:
        query = query.where(Phase.run_id == run_id)
    with read_session(store.engine) as session:
        rows = session.exec(query).all()
        stuck = _stuck_reasons(session, [(r[2], r[4], r[12]) for r in rows if r[3] == "failed" and not r[8]], rule)
    phases = [
        DrainablePhase(r[0], r[1], r[2], r[3], r[4], r[5] if r[4] or r[3] == "failed" else None, r[6], r[7],
                       (r[8] or stuck.get(r[2])) if r[3] == "failed" else None, r[9], r[10], r[11], r[12])
        for r in rows
    ]
    return [p for p in phases if include_parked or not p.parked_reason]


def _stuck_reasons(session: Any, failed: list[tuple[int, str | None, int]], rule: ParkRule) -> dict[int, str]:
    """phase pk -> why the rule parks it, for failed phases given as (pk, failure kind, attempts)."""
    if not failed:
        return {}
    recent: dict[int, list[str | None]] = {}
    for pk, fingerprint in session.exec(
        select(Attempt.phase_pk, Attempt.failure_fingerprint)
        .where(Attempt.phase_pk.in_([pk for pk, _, _ in failed]), Attempt.state == "failed")
        .order_by(Attempt.phase_pk, Attempt.number.desc())
    ):
        recent.setdefault(pk, []).append(fingerprint)
    reasons = {}
    for pk, kind, attempts in failed:
        last = recent.get(pk, [])[: rule.identical]
        if len(last) == rule.identical and last[0] and len(set(last)) == 1:
            reasons[pk] = f"the last {rule.identical} attempts failed the same way ({kind}, fingerprint {last[0]})"
        elif attempts >= rule.max_attempts:
            reasons[pk] = f"{attempts} attempts used (limit {rule.max_attempts})"
    return reasons


def stale_claims(store: Store, now: datetime, heartbeat_grace_s: float) -> list[tuple[str, str, str | None]]:
    """(run_id, phase_id, executor_id) of active phases whose lease expired and whose executor is silent."""
    silent_before = now - timedelta(seconds=heartbeat_grace_s)
    alive = exists().where(Executor.id == Phase.claimed_by, Executor.stopped_at.is_(None),
                           Executor.heartbeat_at >= silent_before)
    with read_session(store.engine) as session:
        rows = session.exec(
            select(Phase.run_id, Phase.phase_id, Phase.claimed_by)
            .where(Phase.state.in_(ACTIVE_STATES), Phase.lease_expires_at < now, ~alive)
        ).all()
    return [tuple(r) for r in rows]


def park_stuck(store: Store, rule: ParkRule, phase_pks: list[int] | None = None) -> list[tuple[str, str, str]]:
    """Record parking for failed, unparked phases (all, or these) that the rule parks.

    Returns (run_id, phase_id, reason) of each phase parked now.
    """
    with write_session(store.engine) as session:
        query = select(Phase).where(Phase.state == "failed", Phase.parked_reason.is_(None))
        if phase_pks is not None:
            query = query.where(Phase.pk.in_(phase_pks))
        phases = {p.pk: p for p in session.exec(query)}
        reasons = _stuck_reasons(session, [(p.pk, p.failure_kind, p.attempts) for p in phases.values()], rule)
        for pk, reason in reasons.items():
            phases[pk].parked_reason = reason
            session.add(phases[pk])
        return sorted((phases[pk].run_id, phases[pk].phase_id, reason) for pk, reason in reasons.items())


def requeue_phase(store: Store, phase_pk: int) -> None:
    """Start a new pass at one phase (failed, or complete when forced); clears parking."""
    with write_session(store.engine) as session:
        session.execute(update(Phase).where(Phase.pk == phase_pk).values(
            state="queued", pass_attempts=0, parked_reason=None, updated_at=utcnow()))


def unmet_dependencies(store: Store, phase_pk: int) -> list[str]:
    dep = aliased(Phase)
    with read_session(store.engine) as session:
        return list(session.exec(
            select(dep.phase_id).join(PhaseDependency, PhaseDependency.depends_on_pk == dep.pk)
            .where(PhaseDependency.phase_pk == phase_pk, dep.state != "complete")
        ).all())


def executor_cost(store: Store, executor_id: str) -> float:
    """What the LLM calls of one executor's attempts cost (priced calls only)."""
    with read_session(store.engine) as session:
        total = session.exec(
            select(func.sum(LlmCall.cost_usd)).join(Attempt, Attempt.id == LlmCall.attempt_id)
            .where(Attempt.executor_id == executor_id)
        ).one()
    return float(total or 0.0)


def run_costs(store: Store, run_ids: list[str]) -> dict[str, float]:
    if not run_ids:
        return {}
    with read_session(store.engine) as session:
        rows = session.exec(select(LlmCall.run_id, func.sum(LlmCall.cost_usd))
                            .where(LlmCall.run_id.in_(run_ids)).group_by(LlmCall.run_id)).all()
    return {run_id: float(cost or 0.0) for run_id, cost in rows}


def live_executors(store: Store, now: datetime, heartbeat_grace_s: float) -> list[Any]:
    with read_session(store.engine) as session:
        return list(session.exec(
            select(Executor).where(Executor.stopped_at.is_(None),
                                   Executor.heartbeat_at >= now - timedelta(seconds=heartbeat_grace_s))
            .order_by(Executor.started_at)))
