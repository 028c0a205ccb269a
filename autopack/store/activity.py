"""Who is working and what is waiting: live executors, silent executors, long-queued phases."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists
from sqlmodel import select

from autopack.store.db import read_session
from autopack.store.models import Executor, Phase
from autopack.store.runs import Store

WAITING_LIMIT = 50


def activity(store: Store, now: datetime, lease_s: float, waiting_after_s: float) -> dict[str, Any]:
    """Executors with a fresh heartbeat, executors gone silent without stopping, and phases
    queued for longer than ``waiting_after_s`` in runs no live executor is working on."""
    fresh_after = now - timedelta(seconds=lease_s)
    live_on_run = exists().where(Executor.run_id == Phase.run_id, Executor.stopped_at.is_(None),
                                 Executor.heartbeat_at >= fresh_after)
    with read_session(store.engine) as session:
        running = list(session.exec(select(Executor).where(Executor.stopped_at.is_(None))
                                    .order_by(Executor.started_at)))
        waiting = session.exec(
            select(Phase.run_id, Phase.phase_id, Phase.updated_at)
            .where(Phase.state == "queued", Phase.updated_at < now - timedelta(seconds=waiting_after_s), ~live_on_run)
            .order_by(Phase.updated_at).limit(WAITING_LIMIT)
        ).all()

    def describe(e: Executor) -> dict[str, Any]:
        return {"id": e.id, "pid": e.pid, "host": e.host, "run": e.run_id, "phase": e.phase_id, "step": e.step,
                "heartbeat_age_s": round((now - e.heartbeat_at).total_seconds(), 1),
                "started_at": e.started_at.isoformat()}

    return {
        "executors": [describe(e) for e in running if e.heartbeat_at >= fresh_after],
        "stale_executors": [describe(e) for e in running if e.heartbeat_at < fresh_after],
        "waiting_phases": [{"run": r, "phase": p, "queued_for_s": round((now - u).total_seconds())}
                           for r, p, u in waiting],
    }
