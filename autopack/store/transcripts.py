"""Attempt transcripts, the read side: turns per attempt (for `status --json`) and one attempt in full.

A transcript row is one model exchange: the messages it added to the conversation (secrets
redacted, tool results capped as the model saw them) and the answer. An escalated retry of a
cut-off turn is a second row with the same turn number and no new messages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from autopack.store.sql import Readable, py_time, stored_json

TRANSCRIPT_SCHEMA = 1


def transcript_counts(db: Readable, run_id: str) -> dict[int, list[dict[str, Any]]]:
    """Per phase pk, its attempts in order: number, builder mode and turns recorded."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT a.phase_pk, a.number, coalesce(a.builder, 'single'), count(DISTINCT t.turn) "
            "FROM attempts a LEFT JOIN transcript_turns t ON t.attempt_id = a.id WHERE a.run_id = ? "
            "GROUP BY a.id ORDER BY a.phase_pk, a.number", (run_id,)).fetchall()
    counts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for phase_pk, number, builder, turns in rows:
        counts[phase_pk].append({"attempt": number, "builder": builder, "turns": turns})
    return counts


def attempt_transcript(db: Readable, run_id: str, phase_id: str, attempt: int | None = None) -> dict[str, Any] | None:
    """The transcript of attempt ``attempt`` (None: the last one) of a phase; None when there is no such attempt."""
    with db.read() as conn:
        row = conn.execute(
            "SELECT a.id, a.number, coalesce(a.builder, 'single'), a.state, a.model, a.failure_kind, a.failure_message "
            "FROM attempts a JOIN phases p ON p.pk = a.phase_pk WHERE p.run_id = ? AND p.phase_id = ? "
            + ("AND a.number = ? " if attempt is not None else "") + "ORDER BY a.number DESC LIMIT 1",
            (run_id, phase_id, attempt) if attempt is not None else (run_id, phase_id)).fetchone()
        if row is None:
            return None
        attempt_id, number, builder, state, model, kind, message = row
        turns = conn.execute("SELECT turn, max_tokens, request, response, created_at FROM transcript_turns "
                             "WHERE attempt_id = ? ORDER BY id", (attempt_id,)).fetchall()
        exchanges = [{"turn": turn, "max_tokens": max_tokens, "request": stored_json(request),
                      "response": stored_json(response), "at": py_time(created).isoformat()}
                     for turn, max_tokens, request, response, created in turns]
    return {
        "schema": TRANSCRIPT_SCHEMA, "run": run_id, "phase": phase_id, "attempt": number, "builder": builder,
        "model": model, "state": state, "failure_kind": kind, "failure_message": message, "exchanges": exchanges,
    }
