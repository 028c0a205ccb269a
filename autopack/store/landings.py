"""The landings of runs (`autopack land`): written once each, read by `land` and `status`."""

from __future__ import annotations

from typing import Any

from autopack.store.models import Landing


def record_landing(store: Any, **fields: Any) -> int:
    """Keep one landing (the columns of ``models.Landing``); returns its id."""
    with store.transactions.atomic() as session:
        row = Landing(**fields)
        session.add(row)
        session.flush()
        return row.id


def landings(db: Any, run_id: str) -> list[dict[str, Any]]:
    """The run's landings, oldest first."""
    with db.read() as conn:
        found = conn.execute("SELECT method, base_branch, base_before, landed_commit, partial, remote, pr_url, "
                             "created_at FROM landings WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
    keys = ("method", "base_branch", "base_before", "landed_commit", "partial", "remote", "pr_url", "created_at")
    return [dict(zip(keys, row)) for row in found]
