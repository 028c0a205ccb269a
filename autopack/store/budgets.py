"""What budgets, caps and the doctor need from the store: output history, escalated budgets, doctor usage,
and giving back a claim a cost cap stopped."""

from __future__ import annotations

from statistics import median

from sqlalchemy import distinct, func, update
from sqlmodel import select

from autopack.domain.lifecycle import AttemptState, PhaseTransition
from autopack.store.db import read_session
from autopack.store.models import Attempt, LlmCall, Phase
from autopack.store.runs import Store
from autopack.store.transitions import move_phase

HISTORY_LIMIT = 50


def output_history(store: Store, category: str, complexity: str, builder: str = "single",
                   limit: int = HISTORY_LIMIT) -> list[int]:
    """Output tokens of the builder calls that completed phases of this category and complexity (newest
    first), made by this builder mode (an agent's calls are turns, not whole changes)."""
    with read_session(store.engine) as session:
        return list(session.exec(
            select(LlmCall.output_tokens)
            .join(Attempt, Attempt.id == LlmCall.attempt_id).join(Phase, Phase.pk == Attempt.phase_pk)
            .where(LlmCall.role == "builder", LlmCall.status == "ok", Attempt.state == AttemptState.COMPLETE,
                   func.coalesce(Attempt.builder, "single") == builder,
                   Phase.spec["category"].as_string() == category,
                   Phase.spec["complexity"].as_string() == complexity)
            .order_by(LlmCall.id.desc()).limit(limit)
        ).all())


def set_escalated_budget(store: Store, phase_pk: int, budget: int) -> None:
    """Persist an escalated budget on the phase, so later attempts and drains start from it."""
    with store.transactions.atomic() as session:
        session.execute(update(Phase).where(Phase.pk == phase_pk).values(escalated_budget=budget))


def escalated_budget(store: Store, phase_pk: int) -> int | None:
    with read_session(store.engine) as session:
        return session.get(Phase, phase_pk).escalated_budget


def doctor_counts(store: Store, run_id: str, phase_id: str) -> tuple[int, int]:
    """Attempts diagnosed by the doctor so far: (in this phase, in this run) — durable across restarts."""
    with read_session(store.engine) as session:
        base = select(func.count(distinct(LlmCall.attempt_id))).where(LlmCall.run_id == run_id,
                                                                      LlmCall.role == "doctor")
        return (session.exec(base.where(LlmCall.phase_id == phase_id)).one(), session.exec(base).one())


def doctor_tokens_median(store: Store, limit: int = 200) -> tuple[int, int]:
    """(median input+output tokens of past doctor calls, sample size), over this database."""
    with read_session(store.engine) as session:
        samples = session.exec(
            select(LlmCall.input_tokens + LlmCall.output_tokens + LlmCall.cache_read_tokens
                   + LlmCall.cache_write_tokens)
            .where(LlmCall.role == "doctor", LlmCall.status == "ok").order_by(LlmCall.id.desc()).limit(limit)
        ).all()
    return (int(median(samples)) if samples else 0, len(samples))


def release_claim(store: Store, phase_pk: int) -> None:
    """Put a claimed phase back to queued as it was before the claim (a cost cap stopped it before any attempt)."""
    with store.transactions.atomic() as session:
        move_phase(session, PhaseTransition.RELEASE, phase_pk, claimed_by=None, lease_expires_at=None)
