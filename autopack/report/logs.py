"""A run's test runs and the log (or JUnit XML) of each, for `autopack logs`.

Every test run an attempt or the land gate made is listed with where its log can be read: the
local file on the machine that ran it, while it is the file recorded (the same size), or the
store's copy, which every machine sharing the store can read. A stored log longer than the copy
ends with the output's last bytes, which the store keeps too.
"""

from __future__ import annotations

from typing import Any

from autopack.store.sql import Readable
from autopack.test_logs import STORED_JUNIT_BYTES, STORED_LOG_BYTES, read_own_file, stored_text

LOG_LIST_SCHEMA = 1
_LISTED = (
    "SELECT t.id, p.phase_id, a.number, t.kind, t.command, t.exit_code, t.timed_out, t.duration_s, t.passed, "
    "t.failed, t.errors, t.skipped, t.total, t.output_bytes, t.log_path, f.log_bytes, f.log IS NOT NULL, "
    "f.junit IS NOT NULL, f.junit_bytes FROM test_runs t LEFT JOIN attempts a ON a.id = t.attempt_id "
    "LEFT JOIN phases p ON p.pk = a.phase_pk LEFT JOIN test_run_files f ON f.test_run_id = t.id "
    "WHERE t.run_id = ? AND t.kind != 'confirmed' ORDER BY t.id")


def test_runs(db: Readable, run_id: str) -> list[dict[str, Any]] | None:
    """Every test run of the run in order (None: no such run), each with where its log is."""
    with db.read() as conn:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            return None
        rows = conn.execute(_LISTED, (run_id,)).fetchall()
    listed = []
    for (test_run_id, phase_id, number, kind, command, exit_code, timed_out, duration, passed, failed, errors,
         skipped, total, output_bytes, log_path, log_bytes, log_stored, junit_stored, junit_bytes) in rows:
        listed.append({
            "id": test_run_id, "phase": phase_id, "attempt": number, "kind": kind, "command": command,
            "exit_code": exit_code, "timed_out": bool(timed_out), "duration_s": round(float(duration or 0), 3),
            "counts": {"passed": passed, "failed": failed, "errors": errors, "skipped": skipped, "total": total},
            "output_bytes": output_bytes, "log_path": log_path,
            "log": _log_place(log_path, log_bytes, bool(log_stored)),
            "junit": ("stored" if junit_stored else
                      f"not stored: {junit_bytes:,} bytes, over {STORED_JUNIT_BYTES:,}" if junit_bytes else "none"),
        })
    return listed


def _log_place(log_path: str | None, log_bytes: int | None, stored: bool) -> str:
    """"here" (the local file is the recorded one), "stored", "stored, cut" or "none"."""
    if _local_log(log_path, log_bytes) is not None:
        return "here"
    if stored:
        return "stored, cut" if (log_bytes or 0) > STORED_LOG_BYTES else "stored"
    return "none"


def _local_log(log_path: str | None, log_bytes: int | None) -> bytes | None:
    """The local log when it is the one recorded (its size; any size for a test run recorded before
    the store kept logs)."""
    data, size = read_own_file(log_path)
    if data is None or (log_bytes is not None and size != log_bytes):
        return None
    return data


def log_text(db: Readable, entry: dict[str, Any]) -> tuple[str, str] | None:
    """(the test run's log, where it was read) for an entry of ``test_runs``; None: not here, not stored."""
    with db.read() as conn:
        row = conn.execute("SELECT f.log, f.log_bytes, t.output_tail FROM test_runs t LEFT JOIN test_run_files f "
                           "ON f.test_run_id = t.id WHERE t.id = ?", (entry["id"],)).fetchone()
    blob, log_bytes, tail = row
    local = _local_log(entry["log_path"], log_bytes)
    if local is not None:
        return local.decode("utf-8", errors="replace"), entry["log_path"]
    text = stored_text(blob)
    if text is None:
        return None
    if log_bytes > STORED_LOG_BYTES:
        text += (f"\n[autopack: the store keeps the log's first {STORED_LOG_BYTES:,} of {log_bytes:,} bytes; "
                 f"the output's last {len((tail or '').encode()):,} bytes follow]\n{tail or ''}")
    return text, "the store"


def junit_text(db: Readable, entry: dict[str, Any]) -> str | None:
    """The test run's stored JUnit XML (None: none stored)."""
    with db.read() as conn:
        row = conn.execute("SELECT junit FROM test_run_files WHERE test_run_id = ?", (entry["id"],)).fetchone()
    return stored_text(row[0]) if row else None
