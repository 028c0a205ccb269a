"""Everything about one run, as a JSON-ready dict: its phases, each attempt in order, and their diffs.

An attempt carries its model, builder, budget, turns, tokens and cost (builder and doctor
calls), the verdict with its reasons, delta and evidence, the failure, the digest it was
given and the advice (pattern hint or doctor diagnosis) its failure produced, the test runs
it made, and its diff: the commit (``git show``) of a completed attempt, the saved patch of
a failed one, or, where neither can be read here (another machine's run, a pruned state
directory), the capped copy the store keeps. Transcripts and test output are included on request.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from typing import Any

from autopack.store.queries import USAGE_SUMS, run_status, usage_dict
from autopack.store.sql import Readable, py_time, stored_json
from autopack.text import DIFF_MAX_BYTES, capped_diff
from autopack.userfiles import read_regular

STORY_SCHEMA = 1
GIT_TIMEOUT_S = 60
_EVENT_KINDS = ("failure_digest", "advice", "doctor_skipped", "escalation")


def run_story(db: Readable, run_id: str, *, phase_id: str | None = None, attempt: int | None = None,
              transcripts: bool = False, logs: bool = False) -> dict[str, Any] | None:
    """The run's story (None: no such run); only ``phase_id`` (and its attempt ``attempt``) when given.

    Raises LookupError naming what is missing when the phase or the attempt does not exist.
    """
    status = run_status(db, run_id)
    if status is None:
        return None
    phases = status["phases"]
    if phase_id is not None:
        phases = [p for p in phases if p["id"] == phase_id]
        if not phases:
            raise LookupError(f"run '{run_id}' has no phase '{phase_id}'")
    with db.read() as conn:
        repo_root, = conn.execute("SELECT repo_root FROM runs WHERE id = ?", (run_id,)).fetchone()
        specs = {pid: stored_json(spec) for pid, spec in conn.execute(
            "SELECT phase_id, spec FROM phases WHERE run_id = ?", (run_id,))}
        attempts = _attempts(conn, run_id)
        by_role = {role: usage_dict(rest) for role, *rest in conn.execute(
            f"SELECT role, {USAGE_SUMS} FROM llm_calls WHERE run_id = ? GROUP BY role ORDER BY role", (run_id,))}
        by_phase = {pid: usage_dict(rest) for pid, *rest in conn.execute(
            f"SELECT coalesce(phase_id, ''), {USAGE_SUMS} FROM llm_calls WHERE run_id = ? GROUP BY 1 ORDER BY 1",
            (run_id,))}
    for phase in phases:
        chosen = attempts.get(phase["id"], [])
        if attempt is not None:
            chosen = [a for a in chosen if a["number"] == attempt]
            if not chosen:
                raise LookupError(f"phase '{phase['id']}' of run '{run_id}' has no attempt {attempt}")
        phase.pop("transcripts", None)
        phase["goal"] = specs.get(phase["id"], {}).get("goal", "")
        phase["attempt_list"] = chosen
        for entry in chosen:
            entry["diff"] = _diff(repo_root, entry)
            if transcripts:
                entry["transcript"] = _transcript(db, run_id, phase["id"], entry["number"])
            if not logs:
                for test_run in entry["test_runs"]:
                    test_run.pop("output_tail")
    order = {p["id"]: n for n, p in enumerate(status["phases"])}  # plan order; calls of no phase last
    by_phase = dict(sorted(by_phase.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))
    return {"schema": STORY_SCHEMA, "run": {**status["run"], "repo_root": repo_root}, "phases": phases,
            "cost_by_role": by_role, "cost_by_phase": by_phase}


def _attempts(conn: Any, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every attempt of the run by phase id, in order, with usage, events and test runs."""
    rows = conn.execute(
        "SELECT a.id, p.phase_id, a.number, a.state, a.step, a.model, coalesce(a.builder, 'single'), a.budget, "
        'a.budget_source, a.failure_kind, a.failure_fingerprint, a.failure_message, a.decision, a."commit", '
        "a.patch_path, a.patch, a.patch_bytes, a.apply_stats, a.builder_ms, a.tests_ms, a.wall_ms, a.started_at, a.finished_at "
        "FROM attempts a JOIN phases p ON p.pk = a.phase_pk WHERE a.run_id = ? ORDER BY p.position, a.number",
        (run_id,)).fetchall()
    usage: dict[int, dict[str, Any]] = defaultdict(dict)
    for attempt_id, role, *rest in conn.execute(
            f"SELECT attempt_id, role, {USAGE_SUMS} FROM llm_calls WHERE run_id = ? AND attempt_id IS NOT NULL "
            "GROUP BY attempt_id, role", (run_id,)):
        usage[attempt_id][role] = usage_dict(rest)
    turns = dict(conn.execute(
        "SELECT t.attempt_id, count(DISTINCT t.turn) FROM transcript_turns t JOIN attempts a ON a.id = t.attempt_id "
        "WHERE a.run_id = ? GROUP BY t.attempt_id", (run_id,)))
    events: dict[int, list[tuple[str, dict]]] = defaultdict(list)
    for attempt_id, kind, data in conn.execute(
            f"SELECT attempt_id, kind, data FROM events WHERE run_id = ? AND attempt_id IS NOT NULL "
            f"AND kind IN ({', '.join('?' for _ in _EVENT_KINDS)}) ORDER BY id", (run_id, *_EVENT_KINDS)):
        events[attempt_id].append((kind, stored_json(data, required=False) or {}))
    test_runs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (attempt_id, kind, command, exit_code, timed_out, duration, passed, failed, errors, skipped, total,
         tail, truncated, log_path) in conn.execute(
            "SELECT attempt_id, kind, command, exit_code, timed_out, duration_s, passed, failed, errors, skipped, "
            "total, output_tail, output_truncated, log_path FROM test_runs WHERE run_id = ? AND attempt_id IS NOT NULL "
            "AND kind != 'confirmed' ORDER BY id", (run_id,)):
        test_runs[attempt_id].append({
            "kind": kind, "command": command, "exit_code": exit_code, "timed_out": bool(timed_out),
            "duration_s": round(float(duration or 0), 3),
            "counts": {"passed": passed, "failed": failed, "errors": errors, "skipped": skipped, "total": total},
            "output_tail": tail or "", "output_truncated": bool(truncated), "log_path": log_path})
    by_phase: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        (attempt_id, phase_id, number, state, step, model, builder, budget, budget_source, kind, fingerprint,
         message, decision, commit, patch_path, patch, patch_bytes, apply_stats, builder_ms, tests_ms, wall_ms, started, finished) = row
        decision = stored_json(decision, required=False)
        roles = usage.get(attempt_id, {})
        given = [data.get("text") for k, data in events[attempt_id] if k == "failure_digest"]
        by_phase[phase_id].append({
            "number": number, "state": state, "step": step, "model": model, "builder": builder,
            "budget": budget, "budget_source": budget_source, "turns": turns.get(attempt_id, 0),
            "usage": roles, **_total(roles),
            "failure": {"kind": kind, "fingerprint": fingerprint, "message": message} if kind else None,
            "decision": decision, "evidence": (decision or {}).get("evidence"),
            "given_digest": given[0] if given else None, "next_digest": None,
            "advice": [{"kind": k, **data} for k, data in events[attempt_id] if k != "failure_digest"],
            "commit": commit, "patch_path": patch_path, "stored_patch": (patch, patch_bytes), "apply_stats": stored_json(apply_stats, required=False),
            "builder_ms": builder_ms, "tests_ms": tests_ms, "wall_ms": wall_ms,
            "started_at": _iso(started), "finished_at": _iso(finished), "test_runs": test_runs.get(attempt_id, []),
        })
    for chosen in by_phase.values():
        for before, after in zip(chosen, chosen[1:]):
            before["next_digest"] = after["given_digest"]
    return by_phase


def _total(roles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tokens and cost of an attempt over all its calls (builder and doctor)."""
    tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    for usage in roles.values():
        for key in tokens:
            tokens[key] += usage["tokens"][key]
    return {"tokens": tokens, "cost_usd": round(sum(u["cost_usd"] for u in roles.values()), 6)}


def _iso(stored: str | None) -> str | None:
    when = py_time(stored)
    return when.isoformat() if when else None


def _transcript(db: Readable, run_id: str, phase_id: str, number: int) -> list[dict[str, Any]]:
    from autopack.store.transcripts import attempt_transcript

    shown = attempt_transcript(db, run_id, phase_id, number)
    return shown["exchanges"] if shown else []


def _diff(repo_root: str, attempt: dict[str, Any]) -> dict[str, Any] | None:
    """The attempt's change: its commit's patch, or its saved patch; the store's copy when neither can
    be read here; None when it changed nothing."""
    stored, size = attempt.pop("stored_patch")
    if attempt["commit"]:
        shown = _commit_diff(repo_root, attempt["commit"])
    elif attempt["patch_path"]:
        shown = _patch_file(attempt["patch_path"])
    else:
        shown = None
    if stored is None or (shown is not None and "missing" not in shown):
        return shown
    local = {"commit": shown.get("commit"), "local": shown["missing"]} if shown else {}
    return {"source": "store", "text": stored, "truncated": (size or 0) > DIFF_MAX_BYTES, **local}


def diff_source(diff: dict[str, Any], *, path: bool = True) -> str:
    """Where a diff was read from, for its heading: a commit, a saved patch (``path``: naming the
    file, which only this machine has), or the store's copy."""
    if diff["source"] == "commit":
        return f"commit {diff['commit']}"
    if diff["source"] == "patch":
        return f"saved patch {diff['path']}" if path else "saved patch"
    return f"commit {diff['commit']}, as the store keeps it" if diff.get("commit") else "as the store keeps it"


def _patch_file(path: str) -> dict[str, Any]:
    try:
        data = read_regular(path, DIFF_MAX_BYTES)
    except OSError as error:
        return {"source": "patch", "path": path, "text": "", "truncated": False,
                "missing": f"the saved patch {path} cannot be read ({error.strerror or error})"}
    return {"source": "patch", "path": path, **_capped(data)}


def _commit_diff(repo_root: str, commit: str) -> dict[str, Any]:
    command = ["git", "-c", "core.quotepath=off", "show", "--no-color", "--no-ext-diff", "--no-textconv",
               "--format=commit %H%nAuthor: %an <%ae>%nDate:   %aI%n%n%w(0,4,4)%B", "--stat", "--patch", commit]
    try:
        done = subprocess.run(command, cwd=repo_root, capture_output=True, timeout=GIT_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"source": "commit", "commit": commit, "text": "", "truncated": False,
                "missing": f"git show {commit} in {repo_root} failed: {error}"}
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return {"source": "commit", "commit": commit, "text": "", "truncated": False,
                "missing": f"git show {commit} in {repo_root} failed: {why[0] if why else done.returncode}"}
    return {"source": "commit", "commit": commit, **_capped(done.stdout)}


def _capped(data: bytes) -> dict[str, Any]:
    text, truncated = capped_diff(data)
    return {"text": text, "truncated": truncated}


def attempt_outcome(attempt: dict[str, Any]) -> str:
    """One phrase for an attempt's outcome: ``complete``, ``failed: regression``, ``running (tests)``."""
    if attempt["state"] == "running":
        return f"running ({attempt['step']})"
    failure = attempt["failure"]
    return f"{attempt['state']}: {failure['kind']}" if failure else attempt["state"]
