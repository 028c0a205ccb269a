"""pick-next: the deterministic choice of the run to drain next, with its explanation.

score = 10 x drainable phases
      +  5 x drainable phases with a persisted escalated budget
      +  3 x drainable phases whose last failure was transient
      +  1 x age in hours of its oldest drainable phase (capped at 48)
      -  2 x USD already spent on the run
Ties: the older run first, then by run id.

The run type is the plan's `run.type`; without one it is inferred as the most common
category of the run's drainable phases (ties: alphabetical), e.g. "feature" or "docs".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from autopack.domain.lifecycle import TRANSIENT, PhaseState, drain_rank

WEIGHTS = {"drainable": 10.0, "escalated": 5.0, "transient": 3.0, "age_hours": 1.0, "cost_usd": -2.0}
AGE_CAP_HOURS = 48.0
EXPLAINED_RUNS = 5  # the top runs `pick-next --explain` shows


@dataclass(frozen=True)
class RunScore:
    run_id: str
    run_type: str
    type_source: str  # "plan" | "inferred"
    score: float
    components: dict[str, float]  # raw values, before weights
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "run_type": self.run_type, "type_source": self.type_source,
                "score": round(self.score, 3), "components": {k: round(v, 3) for k, v in self.components.items()},
                "weights": WEIGHTS}


def score_runs(db: Any, rule: Any, now: datetime | None = None, limit: int | None = None) -> list[RunScore]:
    """Every run with drainable work (parking by ``rule``, a store.drainable.ParkRule), best first; only
    the best ``limit`` of them when given (their types are read from the JSON of those runs only).

    ``db`` is a store.sql.Readable: a Reader, or a Store."""
    from autopack.store.drainable import drainable_phases, phase_categories, run_costs, run_types

    now = now or datetime.now(timezone.utc)
    by_run: dict[str, list[Any]] = defaultdict(list)
    for phase in drainable_phases(db, rule=rule):
        by_run[phase.run_id].append(phase)
    costs = run_costs(db, sorted(by_run))
    scored = []
    for run_id, phases in by_run.items():
        oldest = min(p.failed_at or p.run_created_at for p in phases)
        components = {
            "drainable": float(len(phases)),
            "escalated": float(sum(1 for p in phases if p.escalated_budget)),
            "transient": float(sum(1 for p in phases if p.state == PhaseState.FAILED and drain_rank(p.failure_kind) == TRANSIENT)),
            "age_hours": min(AGE_CAP_HOURS, max(0.0, (now - oldest).total_seconds() / 3600)),
            "cost_usd": costs.get(run_id, 0.0),
        }
        scored.append((sum(WEIGHTS[k] * v for k, v in components.items()), components, run_id))
    scored.sort(key=lambda s: (-round(s[0], 9), by_run[s[2]][0].run_created_at, s[2]))
    best = scored if limit is None else scored[:limit]
    declared = run_types(db, [run_id for _, _, run_id in best])
    categories = phase_categories(db, [p.phase_pk for _, _, run_id in best if not declared.get(run_id)
                                       for p in by_run[run_id]])
    scores = []
    for score, components, run_id in best:
        phases = by_run[run_id]
        if declared.get(run_id):
            run_type, source = declared[run_id], "plan"
        else:
            counts = Counter(categories.get(p.phase_pk) or "feature" for p in phases)
            run_type, source = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0], "inferred"
        scores.append(RunScore(run_id, run_type, source, score, components, phases[0].run_created_at))
    return scores
