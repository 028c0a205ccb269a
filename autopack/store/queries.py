"""Read models for `status`, computed with SQL aggregates (never by loading every row)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from autopack.domain.lifecycle import ACTIVE_STATES, AttemptState, PhaseState, RunState
from autopack.store import STATUS_SCHEMA
from autopack.store.sql import Readable, chunks, marks, py_time, stored_json
from autopack.store.transcripts import transcript_counts

# usage totals of a set of ledger rows (read from the covering index ix_llm_calls_run_role_usage)
USAGE_SUMS = ("coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cache_read_tokens), 0), "
              "coalesce(sum(cache_write_tokens), 0), coalesce(sum(cost_usd), 0.0), "
              "coalesce(sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END), 0)")
_NEWEST_FIRST = "ORDER BY created_at DESC, id DESC"


def derive_run_state(by_state: dict[str, int]) -> RunState:
    """A run's state follows from its phases: running, queued, complete or failed."""
    if any(by_state.get(s) for s in ACTIVE_STATES):
        return RunState.RUNNING
    if by_state.get(PhaseState.QUEUED):
        return RunState.QUEUED
    if sum(by_state.values()) and by_state.get(PhaseState.COMPLETE, 0) == sum(by_state.values()):
        return RunState.COMPLETE
    return RunState.FAILED if by_state else RunState.QUEUED


def usage_dict(row: Any) -> dict[str, Any]:
    """Tokens, cost and unpriced calls of a ``USAGE_SUMS`` row."""
    inp, out, cread, cwrite, cost, unpriced = row
    return {
        "tokens": {"input": int(inp), "output": int(out), "cache_read": int(cread), "cache_write": int(cwrite)},
        "cost_usd": round(float(cost), 6),
        "unpriced_calls": int(unpriced),
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def count_runs(db: Readable) -> int:
    """How many runs the store holds."""
    with db.read() as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def run_exists(db: Readable, run_id: str) -> bool:
    with db.read() as conn:
        return conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None


def list_runs(db: Readable, limit: int | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` runs (None: every run), newest first, with phases counted by state,
    usage and last update. Only the listed runs' phases and ledger rows are aggregated, named by their
    ids (PostgreSQL reads a list of ids through the indexes; given a subquery it scans the whole ledger)."""
    listed = "" if limit is None else " LIMIT ?"
    with db.read() as conn:
        runs = conn.execute(f"SELECT id, goal, branch, created_at FROM runs {_NEWEST_FIRST}{listed}",
                            () if limit is None else (limit,)).fetchall()
        scopes = [("", [])] if limit is None else [
            (f"WHERE run_id IN ({marks(ids)})", ids) for ids in chunks([run[0] for run in runs])]
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        updated: dict[str, str] = {}
        usage: dict[str, dict[str, Any]] = {}
        for where, ids in scopes:
            for run_id, state, n, last in conn.execute(
                    f"SELECT run_id, state, count(*), max(updated_at) FROM phases {where} GROUP BY run_id, state", ids):
                counts[run_id][state] = n
                if last and (run_id not in updated or last > updated[run_id]):  # stored text sorts as time does
                    updated[run_id] = last
            usage.update((row[0], usage_dict(row[1:])) for row in conn.execute(
                f"SELECT run_id, {USAGE_SUMS} FROM llm_calls {where} GROUP BY run_id", ids))
        empty = usage_dict((0, 0, 0, 0, 0.0, 0))
        return [
            {"id": run_id, "goal": goal, "state": derive_run_state(counts[run_id]), "branch": branch,
             "phases": dict(sorted(counts[run_id].items())), **usage.get(run_id, empty),
             "created_at": _iso(py_time(created)), "updated_at": _iso(py_time(updated.get(run_id, created)))}
            for run_id, goal, branch, created in runs
        ]


def run_status(db: Readable, run_id: str) -> dict[str, Any] | None:
    """Contract 4: the run, its usage totals and every phase with its decision and last failure."""
    transcripts = transcript_counts(db, run_id)
    with db.read() as conn:
        run = conn.execute("SELECT id, goal, branch, base_commit, worktree, plan_path, flags, created_at "
                           "FROM runs WHERE id = ?", (run_id,)).fetchone()
        if run is None:
            return None
        phases = conn.execute(
            'SELECT pk, phase_id, state, attempts, max_attempts, "commit", spec, decision, failure_kind, '
            "failure_fingerprint, failure_message, parked_reason, updated_at "
            "FROM phases WHERE run_id = ? ORDER BY position", (run_id,)).fetchall()
        usage = usage_dict(conn.execute(f"SELECT {USAGE_SUMS} FROM llm_calls WHERE run_id = ?", (run_id,)).fetchone())
        completing = dict(conn.execute(
            f"SELECT phase_pk, model FROM attempts WHERE run_id = ? AND state = '{AttemptState.COMPLETE}'", (run_id,)))
        executors = conn.execute(
            "SELECT id, pid, host, phase_id, step, heartbeat_at FROM executors "
            "WHERE run_id = ? AND stopped_at IS NULL ORDER BY started_at, id", (run_id,)).fetchall()
        by_state: dict[str, int] = defaultdict(int)
        for phase in phases:
            by_state[phase[2]] += 1
        rid, goal, branch, base_commit, worktree, plan_path, flags, created = run
        return {
            "schema": STATUS_SCHEMA,
            "run": {
                "id": rid, "goal": goal, "state": derive_run_state(by_state), "branch": branch,
                "base_commit": base_commit, "worktree": worktree, "plan_path": plan_path,
                "flags": stored_json(flags), **usage, "created_at": _iso(py_time(created)),
                "executors": [{"id": e, "pid": pid, "host": host, "phase": phase_id, "step": step,
                               "heartbeat_at": _iso(py_time(beat))}
                              for e, pid, host, phase_id, step, beat in executors],
            },
            "phases": [_phase_dict(row, completing.get(row[0]), transcripts.get(row[0], [])) for row in phases],
        }


def _phase_dict(row: tuple, completed_by: str | None, transcripts: list[dict[str, Any]]) -> dict[str, Any]:
    (_, phase_id, state, attempts, max_attempts, commit, spec, decision, failure_kind, fingerprint, message,
     parked, updated) = row
    spec = stored_json(spec)
    last_failure = None
    if failure_kind:
        last_failure = {"kind": failure_kind, "fingerprint": fingerprint, "message": message}
    return {
        "id": phase_id, "state": state, "attempts": attempts,
        "max_attempts": max_attempts, "commit": commit,
        "category": spec.get("category"), "depends_on": spec.get("depends_on", []),
        "decision": stored_json(decision, required=False), "last_failure": last_failure,
        "model": completed_by, "parked": parked,
        "updated_at": _iso(py_time(updated)),
        "transcripts": transcripts,
    }


def recorded_head(db: Readable, run_id: str) -> str | None:
    """The commit the store records a run's branch at: that of its last completed attempt whose commit is
    still its phase's; None before any (the branch is then at the run's base commit)."""
    with db.read() as conn:
        found = conn.execute(
            'SELECT a."commit" FROM attempts a JOIN phases p ON p.pk = a.phase_pk WHERE a.run_id = ? '
            'AND p.state = ? AND a."commit" = p."commit" ORDER BY a.id DESC LIMIT 1',
            (run_id, PhaseState.COMPLETE)).fetchone()
    return found[0] if found else None
