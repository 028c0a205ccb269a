"""Telemetry over the ledger and the attempts (`autopack status --stats`), as SQL aggregates."""

from __future__ import annotations

from typing import Any

from autopack.domain.lifecycle import AttemptState, FailureKind, PhaseState
from autopack.llm.budget import TRUNCATING_STOPS, TRUNCATION_UTILISATION
from autopack.store.queries import USAGE_SUMS
from autopack.store.sql import Readable, chunks, json_field, marks, stored_json

# A builder call counts as truncated as the builder judges it (llm.budget.is_truncated): a truncating
# stop, or at least 95 % of its max_tokens used.
TRUNCATED = (f"(stop_reason IN ({', '.join(repr(stop) for stop in TRUNCATING_STOPS)}) "
             f"OR (max_tokens > 0 AND output_tokens >= {TRUNCATION_UTILISATION!r} * max_tokens))")

EVIDENCE_RUN_KINDS = ("f2p", "old_tests")  # the test runs goal evidence adds (contract 5)
EVIDENCE_FAILURES = frozenset({FailureKind.NO_GOAL_EVIDENCE, FailureKind.ACCEPTANCE_FAILED,
                               FailureKind.TESTS_WEAKENED, FailureKind.TESTS_SKIPPED})

# The estimation error per (category, complexity), summed per phase first so that a phase's spec is parsed
# once, not once per call (on the large store 2.3 s -> 0.7 s on SQLite, 2.0 s -> 0.9 s on PostgreSQL);
# MATERIALIZED keeps PostgreSQL from running that sum again in each parallel worker. An agent turn's
# budget is a cap, not an estimate: only single-call attempts count.
_SMAPE = """
WITH per_phase AS MATERIALIZED (
    SELECT a.phase_pk, count(*) AS calls,
           sum(abs(c.predicted_tokens - c.output_tokens) * 2.0 / (c.predicted_tokens + c.output_tokens)) AS error
    FROM llm_calls c JOIN attempts a ON a.id = c.attempt_id
    WHERE c.role = 'builder' AND c.status = 'ok' AND c.predicted_tokens IS NOT NULL
      AND (a.builder IS NULL OR a.builder = 'single') AND c.predicted_tokens + c.output_tokens > 0 {scope}
    GROUP BY a.phase_pk)
SELECT {category}, {complexity}, sum(x.calls), sum(x.error) / sum(x.calls)
FROM per_phase x JOIN phases p ON p.pk = x.phase_pk GROUP BY 1, 2 ORDER BY 1, 2
"""


def telemetry(db: Readable, run_id: str | None = None) -> dict[str, Any]:
    """Truncation, escalation, estimation error, doctor, failure kinds, cache and cost figures."""
    scope, params = ("AND run_id = ?", (run_id,)) if run_id else ("", ())

    with db.read() as conn:
        def one(query: str) -> Any:
            return conn.execute(query, params).fetchone()

        calls, truncated = one(f"SELECT count(*), coalesce(sum(CASE WHEN {TRUNCATED} THEN 1 ELSE 0 END), 0) FROM llm_calls "
                               f"WHERE role = 'builder' AND status = 'ok' {scope}")
        escalations = [row[0] for row in conn.execute(
            f"SELECT attempt_id FROM events WHERE kind = 'escalation' {scope}", params)]
        escalated_ok = sum(conn.execute(f"SELECT count(*) FROM attempts WHERE id IN ({marks(chunk)}) "
                                        f"AND state = '{AttemptState.COMPLETE}'", chunk).fetchone()[0]
                           for chunk in chunks(sorted({a for a in escalations if a is not None})))
        smape_rows = conn.execute(_SMAPE.format(category=json_field(conn, "p.spec", "category"),
                                                complexity=json_field(conn, "p.spec", "complexity"),
                                                scope=scope.replace("run_id", "c.run_id")), params).fetchall()
        doctor_calls = one(f"SELECT count(*) FROM llm_calls WHERE role = 'doctor' {scope}")[0]
        skipped = [stored_json(row[0], required=False) for row in conn.execute(
            f"SELECT data FROM events WHERE kind = 'doctor_skipped' {scope}", params)]
        kinds = conn.execute(f"SELECT failure_kind, count(*) FROM attempts WHERE failure_kind IS NOT NULL {scope} "
                             "GROUP BY failure_kind", params).fetchall()
        evidence_runs = dict(conn.execute(
            f"SELECT kind, count(*) FROM test_runs WHERE kind IN ({marks(EVIDENCE_RUN_KINDS)}) {scope} GROUP BY kind",
            (*EVIDENCE_RUN_KINDS, *params)))
        inp, _, cread, cwrite, cost, unpriced = one(f"SELECT {USAGE_SUMS} FROM llm_calls WHERE 1 = 1 {scope}")
        completed = one(f"SELECT count(*) FROM phases WHERE state = '{PhaseState.COMPLETE}' {scope}")[0]
        attempts_by_builder = dict(conn.execute(
            f"SELECT coalesce(builder, 'single'), count(*) FROM attempts WHERE 1 = 1 {scope} GROUP BY 1", params))
        calls_by_builder = conn.execute(
            "SELECT coalesce(a.builder, 'single'), count(*), coalesce(sum(c.input_tokens), 0), "
            "coalesce(sum(c.cache_read_tokens), 0), coalesce(sum(c.cache_write_tokens), 0) FROM llm_calls c "
            f"JOIN attempts a ON a.id = c.attempt_id WHERE c.role = 'builder' {scope.replace('run_id', 'c.run_id')} "
            "GROUP BY 1", params).fetchall()

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
        "estimation_smape": [{"category": c, "complexity": x, "calls": int(n), "smape": round(float(s), 4)}
                             for c, x, n, s in smape_rows],
        "doctor": {"calls": doctor_calls, "skipped": len(skipped), "tokens_avoided": int(sum(avoided)),
                   "skipped_by_reason": _count(d.get("reason") for d in skipped if d)},
        "failure_kinds": dict(sorted(kinds, key=lambda kv: (-kv[1], kv[0]))),
        "goal_evidence": {"runs": {kind: evidence_runs.get(kind, 0) for kind in EVIDENCE_RUN_KINDS},
                          "failures": {kind: n for kind, n in sorted(kinds) if kind in EVIDENCE_FAILURES}},
        "cache_hit_ratio": round(cread / prompt_tokens, 4) if prompt_tokens else None,
        "by_builder": _by_builder(attempts_by_builder, calls_by_builder),
        "cost_usd": round(float(cost), 6),
        "unpriced_calls": int(unpriced),
        "completed_phases": completed,
        "cost_per_completed_phase": round(float(cost) / completed, 6) if completed else None,
    }


def _by_builder(attempts: dict[str, int], calls: list[tuple]) -> dict[str, dict[str, Any]]:
    """Per builder mode: attempts, builder calls (an agent makes one per turn) and their cache hit ratio."""
    modes: dict[str, dict[str, Any]] = {mode: {"attempts": n, "builder_calls": 0, "cache_hit_ratio": None}
                                        for mode, n in attempts.items()}
    for mode, n, inp, cread, cwrite in calls:
        prompt = inp + cread + cwrite
        modes.setdefault(mode, {"attempts": 0})
        modes[mode].update(builder_calls=n, cache_hit_ratio=round(cread / prompt, 4) if prompt else None)
    return dict(sorted(modes.items()))


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts
