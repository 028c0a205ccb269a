"""Replacing a recorded run's plan with a changed one (see ``autopack.replan``)."""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import delete
from sqlmodel import select

from autopack.domain.lifecycle import PhaseState, PhaseTransition
from autopack.store.models import Event, Phase, PhaseDependency, Run
from autopack.store.runs import Store, utcnow
from autopack.store.transitions import move_phase, unskip


def replace_plan(store: Store, run_id: str, plan: Any, changed: Sequence[str]) -> list[str]:
    """In one transaction: the run's plan, the ``changed`` phases' specs and dependencies, and a
    ``plan_changed`` event. A changed phase that failed (parked or not) is queued for a new pass.
    Returns the ids of the phases queued again."""
    specs = {spec.id: spec for spec in plan.phases}
    now = utcnow()
    with store.transactions.atomic() as session:
        run = session.get(Run, run_id)
        run.plan, run.plan_hash, run.comparable_hash = plan.to_dict(), plan.content_hash(), plan.comparable_hash()
        run.plan_path = str(plan.path.resolve())
        session.add(run)
        phases = {p.phase_id: p for p in session.exec(select(Phase).where(Phase.run_id == run_id))}
        requeued = []
        for phase_id in changed:
            phase, spec = phases[phase_id], specs[phase_id]
            phase.spec, phase.max_attempts, phase.parked_reason, phase.updated_at = (
                spec.to_dict(), spec.max_attempts, None, now)
            session.add(phase)
            if phase.state == PhaseState.FAILED:
                move_phase(session, PhaseTransition.REQUEUE, phase.pk, updated_at=now)
                requeued.append(phase_id)
            session.execute(delete(PhaseDependency).where(PhaseDependency.phase_pk == phase.pk))
            for dependency in spec.depends_on:
                session.add(PhaseDependency(phase_pk=phase.pk, depends_on_pk=phases[dependency].pk))
        session.add(Event(run_id=run_id, kind="plan_changed", data={"phases": list(changed), "requeued": requeued}))
        session.flush()
        requeued += unskip(session, run_id, now)
    return requeued
