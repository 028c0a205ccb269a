"""Who is working and what is waiting: live executors, silent executors, long-queued phases."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from autopack.domain.lifecycle import PhaseState
from autopack.store.sql import Readable, db_time, py_time

WAITING_LIMIT = 50


def activity(db: Readable, now: datetime, lease_s: float, waiting_after_s: float) -> dict[str, Any]:
    """Executors with a fresh heartbeat, executors gone silent without stopping, and phases
    queued for longer than ``waiting_after_s`` in runs no live executor is working on."""
    fresh_since = now - timedelta(seconds=lease_s)
    fresh = db_time(fresh_since)
    with db.read() as conn:
        running = conn.execute("SELECT id, pid, host, run_id, phase_id, step, heartbeat_at, started_at "
                               "FROM executors WHERE stopped_at IS NULL ORDER BY started_at, id").fetchall()
        waiting = conn.execute(
            f"SELECT run_id, phase_id, updated_at FROM phases p WHERE state = '{PhaseState.QUEUED}' AND updated_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.run_id = p.run_id AND e.stopped_at IS NULL "
            "AND e.heartbeat_at >= ?) ORDER BY updated_at, pk LIMIT ?",
            (db_time(now - timedelta(seconds=waiting_after_s)), fresh, WAITING_LIMIT)).fetchall()

        def describe(row: tuple) -> dict[str, Any]:
            executor_id, pid, host, run, phase, step, beat, started = row
            return {"id": executor_id, "pid": pid, "host": host, "run": run, "phase": phase, "step": step,
                    "heartbeat_age_s": round((now - py_time(beat)).total_seconds(), 1),
                    "started_at": py_time(started).isoformat()}

        return {
            "executors": [describe(row) for row in running if py_time(row[6]) >= fresh_since],
            "stale_executors": [describe(row) for row in running if py_time(row[6]) < fresh_since],
            "waiting_phases": [{"run": r, "phase": p, "queued_for_s": round((now - py_time(u)).total_seconds())}
                               for r, p, u in waiting],
        }
