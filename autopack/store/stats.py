"""Telemetry over the ledger and the attempts (`autopack status --stats`), as SQL aggregates."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, or_
from sqlmodel import select

from autopack.llm.budget import TRUNCATING_STOPS, TRUNCATION_UTILISATION
from autopack.store.db import read_session
from autopack.store.models import Attempt, Event, LlmCall, Phase
from autopack.store.runs import Store

# A builder call counts as truncated as the builder judges it (llm.budget.is_truncated): a truncating
# stop, or at least 95 % of its max_tokens used.
TRUNCATED = or_(LlmCall.stop_reason.in_(TRUNCATING_STOPS),
                and_(LlmCall.max_tokens > 0, LlmCall.output_tokens >= TRUNCATION_UTILISATION * LlmCall.max_tokens))


def _scoped(query: Any, column: Any, run_id: str | None) -> Any:
    return query.where(column == run_id) if run_id else query


def telemetry(store: Store, run_id: str | None = None) -> dict[str, Any]:
    """Truncation, escalation, estimation error, doctor, failure kinds, cache and cost figures."""
    with read_session(store.engine) as session:
        builder_ok = _scoped(select(func.count(), func.coalesce(func.sum(case((TRUNCATED, 1),
                                                                            else_=0)), 0))
                             .where(LlmCall.role == "builder", LlmCall.status == "ok"), LlmCall.run_id, run_id)
        calls, truncated = session.exec(builder_ok).one()

        escalations = session.exec(_scoped(select(Event.attempt_id).where(Event.kind == "escalation"),
                                           Event.run_id, run_id)).all()
        escalated_ok = 0
        if escalations:
            escalated_ok = session.exec(select(func.count()).where(
                Attempt.id.in_([a for a in escalations if a is not None]), Attempt.state == "complete")).one()

        category = Phase.spec["category"].as_string()
        complexity = Phase.spec["complexity"].as_string()
        error = func.abs(LlmCall.predicted_tokens - LlmCall.output_tokens) * 2.0 / (
            LlmCall.predicted_tokens + LlmCall.output_tokens)
        smape_rows = session.exec(_scoped(
            select(category, complexity, func.count(), func.avg(error))
            .join(Attempt, Attempt.id == LlmCall.attempt_id).join(Phase, Phase.pk == Attempt.phase_pk)
            .where(LlmCall.role == "builder", LlmCall.status == "ok", LlmCall.predicted_tokens.is_not(None),
                   LlmCall.predicted_tokens + LlmCall.output_tokens > 0)
            .group_by(category, complexity), LlmCall.run_id, run_id)).all()

        doctor_calls = session.exec(_scoped(select(func.count()).where(LlmCall.role == "doctor"),
                                            LlmCall.run_id, run_id)).one()
        skipped = session.exec(_scoped(select(Event.data).where(Event.kind == "doctor_skipped"),
                                       Event.run_id, run_id)).all()

        kinds = session.exec(_scoped(select(Attempt.failure_kind, func.count()).where(Attempt.failure_kind.is_not(None))
                                     .group_by(Attempt.failure_kind), Attempt.run_id, run_id)).all()

        inp, cread, cwrite, cost, unpriced = session.exec(_scoped(select(
            func.coalesce(func.sum(LlmCall.input_tokens), 0), func.coalesce(func.sum(LlmCall.cache_read_tokens), 0),
            func.coalesce(func.sum(LlmCall.cache_write_tokens), 0), func.coalesce(func.sum(LlmCall.cost_usd), 0.0),
            func.coalesce(func.sum(case((LlmCall.cost_usd.is_(None), 1), else_=0)), 0)), LlmCall.run_id, run_id)).one()
        completed = session.exec(_scoped(select(func.count()).where(Phase.state == "complete"),
                                         Phase.run_id, run_id)).one()

    prompt_tokens = inp + cread + cwrite
    avoided = [d.get("tokens_avoided") or 0 for d in skipped if d]
    return {
        "schema": 1,
        "run_id": run_id,
        "builder_calls": calls,
        "truncation_rate": round(truncated / calls, 4) if calls else None,
        "truncated_calls": truncated,
        "escalations": len(escalations),
        "completed_after_escalation": escalated_ok,
        "estimation_smape": [{"category": c, "complexity": x, "calls": n, "smape": round(float(s), 4)}
                             for c, x, n, s in smape_rows],
        "doctor": {"calls": doctor_calls, "skipped": len(skipped), "tokens_avoided": int(sum(avoided)),
                   "skipped_by_reason": _count(d.get("reason") for d in skipped if d)},
        "failure_kinds": dict(sorted(kinds, key=lambda kv: (-kv[1], kv[0]))),
        "cache_hit_ratio": round(cread / prompt_tokens, 4) if prompt_tokens else None,
        "cost_usd": round(float(cost), 6),
        "unpriced_calls": int(unpriced),
        "completed_phases": completed,
        "cost_per_completed_phase": round(float(cost) / completed, 6) if completed else None,
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
