"""Drain writes and the executor's own reads: stale claims, parking, an executor's cost.

The read models that pick-next and `drain --dry-run` share with the drain are in store.drainable.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists, func
from sqlalchemy.orm import aliased
from sqlmodel import select

from autopack.domain.lifecycle import ACTIVE_STATES, PhaseState
from autopack.store.db import read_session
from autopack.store.drainable import ParkRule, stuck_reasons
from autopack.store.models import Attempt, Executor, LlmCall, Phase, PhaseDependency
from autopack.store.runs import Store
from autopack.store.sql import translate_sqlite_errors


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
    with store.transactions.atomic() as session:
        query = select(Phase).where(Phase.state == PhaseState.FAILED, Phase.parked_reason.is_(None))
        if phase_pks is not None:
            query = query.where(Phase.pk.in_(phase_pks))
        phases = {p.pk: p for p in session.exec(query)}
        conn = session.connection().connection.driver_connection
        if store.postgres:  # the read model's SQL takes sqlite3's placeholders
            from autopack.store.pg import ReadConnection

            conn = ReadConnection(conn)
        with translate_sqlite_errors(store.path):  # in this transaction, on its connection
            reasons = stuck_reasons(conn, [(p.pk, p.failure_kind, p.attempts) for p in phases.values()], rule)
        for pk, reason in reasons.items():
            phases[pk].parked_reason = reason
            session.add(phases[pk])
        return sorted((phases[pk].run_id, phases[pk].phase_id, reason) for pk, reason in reasons.items())


def unmet_dependencies(store: Store, phase_pk: int) -> list[str]:
    dep = aliased(Phase)
    with read_session(store.engine) as session:
        return list(session.exec(
            select(dep.phase_id).join(PhaseDependency, PhaseDependency.depends_on_pk == dep.pk)
            .where(PhaseDependency.phase_pk == phase_pk, dep.state != PhaseState.COMPLETE)
        ).all())


def executor_cost(store: Store, executor_id: str) -> float:
    """What the LLM calls of one executor's attempts cost (priced calls only)."""
    with read_session(store.engine) as session:
        total = session.exec(
            select(func.sum(LlmCall.cost_usd)).join(Attempt, Attempt.id == LlmCall.attempt_id)
            .where(Attempt.executor_id == executor_id)
        ).one()
    return float(total or 0.0)
