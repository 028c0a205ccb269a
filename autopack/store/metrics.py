"""Per-run facts and metrics for `ab-test`, as SQL aggregates over the requested runs only.

Every query is a GROUP BY over ``run_id IN (...)`` (in chunks, to stay under SQLite's
bound-parameter limit), so the cost grows with the runs compared, never with the
whole ledger loaded into Python.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from autopack.store import CONFIRMED_TEST_RUN
from autopack.domain.lifecycle import PhaseState, RunState
from autopack.store.queries import USAGE_SUMS, derive_run_state
from autopack.store.stats import EVIDENCE_RUN_KINDS
from autopack.store.sql import SUM_DIGITS, Readable, chunks, marks, py_time, stored_json

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
ROLES = ("builder", "doctor")


@dataclass(frozen=True)
class RunFacts:
    """What decides whether two runs are comparable."""

    id: str
    comparable_hash: str
    base_commit: str
    plan: dict[str, Any]  # PlanSpec.to_dict() as recorded
    models: dict[str, str]  # plan's run.models, with "builder" = the model its first attempts used
    cassette: str | None  # the plan's run.cassette as written: where the answers came from (None: live)
    autopack_version: str
    state: str  # derived: complete | failed | running | queued
    flags: dict[str, Any]
    created_at: datetime

    @property
    def finished(self) -> bool:
        return self.state in (RunState.COMPLETE, RunState.FAILED)


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
    test_runs: int  # the gate's executions: baseline, attempt, re-runs, the agent's run_tests
    wall_s: float | None  # last attempt end - first attempt start; None without a finished attempt
    phase_states: dict[str, str] = field(default_factory=dict)
    evidence_runs: int = 0  # goal-evidence executions (f2p, old_tests), counted apart


def run_facts(db: Readable, run_ids: Sequence[str] | None = None) -> dict[str, RunFacts]:
    """Facts of the named runs (those that exist), or of every run when ``run_ids`` is None."""
    columns = "SELECT id, comparable_hash, base_commit, plan, flags, autopack_version, created_at FROM runs"
    with db.read() as conn:
        if run_ids is None:
            rows = conn.execute(columns).fetchall()
            run_ids = [row[0] for row in rows]
        else:
            rows = []
            for chunk in chunks(run_ids):
                rows += conn.execute(f"{columns} WHERE id IN ({marks(chunk)})", chunk)
        states: dict[str, dict[str, int]] = defaultdict(dict)
        builders: dict[str, set[str]] = defaultdict(set)
        for chunk in chunks(run_ids):
            for run_id, state, n in conn.execute(
                    f"SELECT run_id, state, count(*) FROM phases WHERE run_id IN ({marks(chunk)}) "
                    "GROUP BY run_id, state", chunk):
                states[run_id][state] = n
            for run_id, model in conn.execute(
                    f"SELECT DISTINCT run_id, model FROM attempts WHERE run_id IN ({marks(chunk)}) "
                    "AND number = 1 AND model IS NOT NULL", chunk):
                builders[run_id].add(model)
        facts = {}
        for run_id, comparable, base, plan, flags, version, created in rows:
            plan = stored_json(plan)
            models = dict((plan.get("run") or {}).get("models") or {})
            if builders[run_id]:
                models["builder"] = ", ".join(sorted(builders[run_id]))
            facts[run_id] = RunFacts(id=run_id, comparable_hash=comparable, base_commit=base, plan=plan,
                                     models=models, cassette=(plan.get("run") or {}).get("cassette"),
                                     autopack_version=version, state=derive_run_state(states[run_id]),
                                     flags=stored_json(flags), created_at=py_time(created))
        return facts


def run_metrics(db: Readable, run_ids: Sequence[str]) -> dict[str, RunMetrics]:
    """Metrics of each named run; a run with no rows in a table counts zero there."""
    usage: dict[str, dict[str, tuple]] = defaultdict(dict)
    events: dict[str, dict[str, int]] = defaultdict(dict)
    attempts: dict[str, tuple[int, datetime | None, datetime | None]] = {}
    suites: dict[str, int] = {}
    evidence_suites: dict[str, int] = {}
    phases: dict[str, dict[str, str]] = defaultdict(dict)
    with db.read() as conn:
        for chunk in chunks(run_ids):
            among = f"run_id IN ({marks(chunk)})"
            for run_id, role, *sums in conn.execute(
                    f"SELECT run_id, role, {USAGE_SUMS}, count(*) FROM llm_calls WHERE {among} "
                    "GROUP BY run_id, role", chunk):
                usage[run_id][role] = tuple(sums)
            for run_id, kind, n in conn.execute(
                    f"SELECT run_id, kind, count(*) FROM events WHERE {among} "
                    "AND kind IN ('doctor_skipped', 'escalation') GROUP BY run_id, kind", chunk):
                events[run_id][kind] = n
            for run_id, n, first, last in conn.execute(
                    f"SELECT run_id, count(*), min(started_at), max(finished_at) FROM attempts WHERE {among} "
                    "GROUP BY run_id", chunk):
                attempts[run_id] = (n, py_time(first), py_time(last))
            for run_id, evidence, n in conn.execute(
                    f"SELECT run_id, kind IN ({marks(EVIDENCE_RUN_KINDS)}), count(*) FROM test_runs WHERE {among} "
                    "AND kind != ? GROUP BY 1, 2", [*EVIDENCE_RUN_KINDS, *chunk, CONFIRMED_TEST_RUN]):
                (evidence_suites if evidence else suites)[run_id] = n
            for run_id, phase_id, state in conn.execute(
                    f"SELECT run_id, phase_id, state FROM phases WHERE {among} ORDER BY run_id, position", chunk):
                phases[run_id][phase_id] = state
    return {run_id: _metrics(run_id, usage[run_id], events[run_id], attempts.get(run_id, (0, None, None)),
                             suites.get(run_id, 0), phases[run_id], evidence_suites.get(run_id, 0))
            for run_id in run_ids}


def _metrics(run_id: str, usage: dict[str, tuple], events: dict[str, int],
             attempts: tuple[int, datetime | None, datetime | None], test_runs: int,
             phase_states: dict[str, str], evidence_runs: int = 0) -> RunMetrics:
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
        cost_usd=round(float(sum(sums[4] for sums in usage.values())), SUM_DIGITS),
        unpriced_calls=int(sum(sums[5] for sums in usage.values())),
        llm_calls=int(sum(sums[6] for sums in usage.values())),
        doctor_calls=int(usage.get("doctor", (0,) * 7)[6]),
        doctor_skipped=events.get("doctor_skipped", 0),
        phases_complete=sum(1 for state in phase_states.values() if state == PhaseState.COMPLETE),
        phases_total=len(phase_states), attempts=count, escalations=events.get("escalation", 0),
        test_runs=test_runs, wall_s=wall_s, phase_states=dict(phase_states), evidence_runs=evidence_runs,
    )
