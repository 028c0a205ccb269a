"""Read models for drains and pick-next: drainable phases, parking by rule, what each run cost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from autopack.domain.lifecycle import AttemptState, PhaseState
from autopack.store.sql import SUM_DIGITS, Readable, ReadConn, chunks, json_field, marks, py_time


@dataclass(slots=True)  # not frozen: `drain --dry-run` builds one per drainable phase, and frozen costs 4x
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
    attempts: int


@dataclass(frozen=True)
class ParkRule:
    """Park a failed phase whose last ``identical`` failures share a fingerprint, or after ``max_attempts``."""

    identical: int = 3
    max_attempts: int = 12


# No JSON: a drain and `drain --dry-run` need none of the spec or the plan (pick-next reads what it needs:
# run_types, phase_categories), and parsing it per row was most of their time on PostgreSQL.
_COLUMNS = "run_id, phase_id, pk, state, failure_kind, updated_at, position, parked_reason, escalated_budget, attempts"
# Two branches, not one OR: PostgreSQL turns only a NOT EXISTS of its own into an anti-join on the indexes.
_DRAINABLE = f"""
SELECT {_COLUMNS} FROM phases p WHERE p.state = '{PhaseState.QUEUED}' {{one_run}} AND NOT EXISTS (
    SELECT 1 FROM phase_dependencies d JOIN phases dep ON dep.pk = d.depends_on_pk
    WHERE d.phase_pk = p.pk AND dep.state != '{PhaseState.COMPLETE}')
UNION ALL
SELECT {_COLUMNS} FROM phases p WHERE p.state = '{PhaseState.FAILED}' {{one_run}} {{unparked}}
ORDER BY pk
"""


def drainable_phases(db: Readable, run_id: str | None = None, include_parked: bool = False,
                     rule: ParkRule = ParkRule()) -> list[DrainablePhase]:
    """Queued phases whose dependencies are complete, and failed phases that are not parked.

    A failed phase that the rule would park counts as parked. ``include_parked`` keeps
    parked phases, with the reason.
    """
    with db.read() as conn:
        query = _DRAINABLE.format(unparked="" if include_parked else "AND p.parked_reason IS NULL",
                                  one_run="" if run_id is None else "AND p.run_id = ?")
        rows = conn.execute(query, () if run_id is None else (run_id, run_id)).fetchall()
        created = _created_at(conn, sorted({r[0] for r in rows}))
        stuck = stuck_reasons(conn, [(r[2], r[4], r[9]) for r in rows if r[3] == PhaseState.FAILED and not r[7]], rule)
        failed = PhaseState.FAILED.value
        phases = []
        for r in rows:
            is_failed = r[3] == failed
            phases.append(DrainablePhase(r[0], r[1], r[2], r[3], r[4], py_time(r[5]) if r[4] or is_failed else None,
                                         r[6], created[r[0]], (r[7] or stuck.get(r[2])) if is_failed else None, r[8],
                                         r[9]))
    return [p for p in phases if include_parked or not p.parked_reason]


def _created_at(conn: ReadConn, run_ids: list[str]) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    for chunk in chunks(run_ids):
        for run_id, created in conn.execute(f"SELECT id, created_at FROM runs WHERE id IN ({marks(chunk)})", chunk):
            found[run_id] = py_time(created)
    return found


def run_types(db: Readable, run_ids: list[str]) -> dict[str, str | None]:
    """run id -> its plan's ``run.type`` (None: the plan declares none). A plan is large (on PostgreSQL
    its JSON is stored compressed apart from the row): read it only for the runs asked about."""
    return _json_scalar(db, "runs", "id", run_ids, "plan", "run", "type")


def phase_categories(db: Readable, phase_pks: list[int]) -> dict[int, str | None]:
    """phase pk -> its spec's category (None: not given)."""
    return _json_scalar(db, "phases", "pk", phase_pks, "spec", "category")


def _json_scalar(db: Readable, table: str, key: str, keys: list, column: str, *path: str) -> dict:
    """key -> one scalar inside ``table``'s JSON ``column``, for the rows whose ``key`` is in ``keys``."""
    found: dict = {}
    with db.read() as conn:
        for chunk in chunks(keys):
            found.update(conn.execute(f"SELECT {key}, {json_field(conn, column, *path)} FROM {table} "
                                      f"WHERE {key} IN ({marks(chunk)})", chunk))
    return found


def stuck_reasons(conn: ReadConn, failed: list[tuple[int, str | None, int]],
                  rule: ParkRule) -> dict[int, str]:
    """phase pk -> why the rule parks it, for failed phases given as (pk, failure kind, attempts)."""
    recent: dict[int, list[str | None]] = {}
    for chunk in chunks([pk for pk, _, _ in failed]):
        for pk, fingerprint in conn.execute(
                f"SELECT phase_pk, failure_fingerprint FROM attempts WHERE phase_pk IN ({marks(chunk)}) "
                f"AND state = '{AttemptState.FAILED}' ORDER BY phase_pk, number DESC", chunk):
            recent.setdefault(pk, []).append(fingerprint)
    reasons = {}
    for pk, kind, attempts in failed:
        last = recent.get(pk, [])[: rule.identical]
        if len(last) == rule.identical and last[0] and len(set(last)) == 1:
            reasons[pk] = f"the last {rule.identical} attempts failed the same way ({kind}, fingerprint {last[0]})"
        elif attempts >= rule.max_attempts:
            reasons[pk] = f"{attempts} attempts used (limit {rule.max_attempts})"
    return reasons


def run_costs(db: Readable, run_ids: list[str]) -> dict[str, float]:
    """What each run's priced LLM calls cost."""
    costs: dict[str, float] = {}
    with db.read() as conn:
        for chunk in chunks(run_ids):
            for run_id, cost in conn.execute(f"SELECT run_id, sum(cost_usd) FROM llm_calls "
                                             f"WHERE run_id IN ({marks(chunk)}) GROUP BY run_id", chunk):
                costs[run_id] = round(float(cost or 0.0), SUM_DIGITS)
    return costs
