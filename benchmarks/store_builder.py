"""Build a state store at scale with SQLAlchemy Core bulk inserts: a year of recorded drains.

The mix is what a busy store looks like: most runs complete, some failed (the failed
phase parked or not, its dependents skipped), some half done with queued phases.
Even-numbered runs chain their phases (each depends on the one before), odd ones do
not, so drains see both blocked and ready queued phases. Runs come in pairs of one
plan whose flags differ only in ``hardening`` (for ab-test). Deterministic: same
scale, same file.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

BUILDER_VERSION = 4
CACHE_DIR = Path("/tmp/autopack-bench")
FAILURE_KINDS = ("regression", "regression", "collection_error", "apply_error", "deliverables_missing",
                 "api_error", "timeout", "no_op")
CATEGORIES = ("feature", "feature", "feature", "bugfix", "tests", "docs", "refactor", "config")
MODELS = ("claude-sonnet-5-5", "claude-haiku-5-5")


@dataclass(frozen=True)
class Scale:
    """How big a store to build; ratios per run are the same at every scale."""

    name: str
    runs: int
    phases_per_run: int = 10
    llm_calls_per_run: int = 100
    test_runs_per_run: int = 10
    outcomes_per_test_run: int = 3
    executors_per_run: int = 10  # every drain and run process registers one: cron every ~5 min for a year


SCALES = {
    "large": Scale("large", runs=10_000),
    "small": Scale("small", runs=400),
    "tiny": Scale("tiny", runs=20),
}


@dataclass(frozen=True)
class BuiltStore:
    path: Path
    scale: str
    counts: dict[str, int]  # rows per table
    build_s: float | None  # None when served from the cache
    sample_run: str  # a run with failed and skipped phases, for `status RUN`
    ab_pairs: list[tuple[str, str]]  # complete (control, treatment) runs of one plan each

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def cached_store(scale: Scale, cache_dir: Path = CACHE_DIR) -> BuiltStore:
    """The store for ``scale`` from ``cache_dir``, built first when missing or out of date."""
    from autopack.store import inspect_database

    path = cache_dir / f"{scale.name}.db"
    meta_path = cache_dir / f"{scale.name}.json"
    key = {"builder_version": BUILDER_VERSION, "schema": schema_tag()}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in key} == key and not inspect_database(path).pending:
            return BuiltStore(path, scale.name, meta["counts"], None, meta["sample_run"],
                              [tuple(p) for p in meta["ab_pairs"]])
    built = build_store(path, scale)
    meta_path.write_text(json.dumps({**key, **built.to_dict()}, indent=1))
    return built


def schema_tag() -> str:
    """Changes with any table, column or index, so a cached store never outlives its schema."""
    from sqlmodel import SQLModel

    import autopack.store.models  # noqa: F401  (registers the tables)

    shape = sorted((t.name, sorted(c.name for c in t.columns), sorted(str(i.name) for i in t.indexes))
                   for t in SQLModel.metadata.sorted_tables)
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:12]


def build_store(path: Path, scale: Scale) -> BuiltStore:
    """Create ``path`` at the latest schema and fill it (replacing any file there)."""
    import time

    from autopack.store import migrate
    from autopack.store.runs import Store

    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    migrate(partial)
    generator = _Generator(scale)
    store = Store(partial)
    try:
        with store.engine.begin() as conn:
            counts = generator.insert_all(conn)
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    partial.rename(path)
    return BuiltStore(path, scale.name, counts, time.perf_counter() - started, generator.sample_run,
                      generator.ab_pairs)


class _Generator:
    """Rows for every table, produced run by run and inserted in chunks."""

    CHUNK = 20_000

    def __init__(self, scale: Scale):
        self.scale = scale
        self.rng = random.Random(20260101)
        self.now = datetime.now(timezone.utc).replace(microsecond=0)
        self.start = self.now - timedelta(days=365)
        self.next_id = {"phase": 1, "attempt": 1, "test_run": 1}
        self.sample_run = ""
        self.ab_pairs: list[tuple[str, str]] = []
        self.rows: dict[str, list[dict]] = {}

    def insert_all(self, conn: Any) -> dict[str, int]:
        from autopack.store import models

        tables = {"runs": models.Run, "phases": models.Phase, "phase_dependencies": models.PhaseDependency,
                  "attempts": models.Attempt, "test_runs": models.SuiteRun, "test_outcomes": models.SuiteOutcome,
                  "baselines": models.Baseline, "llm_calls": models.LlmCall, "events": models.Event,
                  "executors": models.Executor}
        counts = dict.fromkeys(tables, 0)
        self.rows = {name: [] for name in tables}

        def flush(force: bool) -> None:
            for name, table in tables.items():  # parents before children: foreign keys are on
                if self.rows[name] and (force or len(self.rows[name]) >= self.CHUNK):
                    conn.execute(table.__table__.insert(), self.rows[name])
                    counts[name] += len(self.rows[name])
                    self.rows[name] = []

        executors = list(self._executors())
        conn.execute(models.Executor.__table__.insert(), executors)
        counts["executors"] = len(executors)
        for index in range(self.scale.runs):
            self._run(index)
            if index % 50 == 49:
                flush(force=True)
        flush(force=True)
        return counts

    def _executors(self) -> Iterator[dict]:
        total = self.scale.runs * self.scale.executors_per_run
        for n in range(total):
            when = self.start + timedelta(seconds=n * 365 * 86400 / total)
            yield {"id": f"exec{n:012d}", "pid": 1000 + n % 30000, "host": "bench", "command": "autopack drain",
                   "run_id": None, "started_at": when, "heartbeat_at": when + timedelta(minutes=4),
                   "stopped_at": when + timedelta(minutes=4)}

    def _executor_at(self, index: int) -> str:
        """An executor of about the time of run ``index``."""
        per_run = self.scale.executors_per_run
        return f"exec{index * per_run + self.rng.randrange(per_run):012d}"

    def _take(self, kind: str) -> int:
        value = self.next_id[kind]
        self.next_id[kind] += 1
        return value

    def _run(self, index: int) -> None:
        scale = self.scale
        run_id = f"bench-{index:05d}"
        created = self.start + timedelta(seconds=index * 365 * 86400 / scale.runs)
        plan_index = index // 2
        flags = {"hardening": bool(index % 2)}
        chained = plan_index % 2 == 0
        phases = [self._phase_spec(plan_index, n, chained) for n in range(scale.phases_per_run)]
        plan = {"run": {"id": run_id, "goal": f"Benchmark plan {plan_index}", "repo": ".",
                        "test_command": "python -m pytest -q", "flags": flags, "models": {}, "limits": {}},
                "phases": phases}
        comparable = hashlib.sha256(f"plan-{plan_index}".encode()).hexdigest()
        self.rows["runs"].append({
            "id": run_id, "goal": plan["run"]["goal"], "plan_path": f"/srv/plans/plan-{plan_index}.toml",
            "plan_hash": hashlib.sha256(run_id.encode()).hexdigest(), "comparable_hash": comparable,
            "plan": plan, "flags": flags, "repo_root": "/srv/repo", "subdir": "", "base_commit": "b" * 40,
            "branch": f"autopack/{run_id}", "worktree": f"/srv/repo/.autopack/worktrees/{run_id}",
            "autopack_version": "0.1.0", "created_at": created,
        })
        states = self._phase_states(index)
        if index % 2 and all(s == "complete" for s in states) and len(self.ab_pairs) < 400:
            control_states = self._phase_states(index - 1)
            if all(s == "complete" for s in control_states):
                self.ab_pairs.append((f"bench-{index - 1:05d}", run_id))
        if not self.sample_run and "failed" in states and "skipped" in states:
            self.sample_run = run_id
        clock = created + timedelta(minutes=1)
        pks: list[int] = []
        attempts: list[tuple[int, datetime]] = []
        for n, (spec, state) in enumerate(zip(phases, states)):
            pk = self._take("phase")
            pks.append(pk)
            clock, phase_attempts = self._phase(run_id, pk, n, spec, state, clock, self._executor_at(index))
            attempts += phase_attempts
            for dep in spec["depends_on"]:
                self.rows["phase_dependencies"].append({"phase_pk": pk, "depends_on_pk": pks[int(dep[1:]) - 1]})
        self._test_runs(run_id, attempts)
        self._llm_calls(run_id, [p["id"] for p in phases], attempts)

    def _phase_spec(self, plan_index: int, n: int, chained: bool) -> dict:
        return {"id": f"p{n + 1:02d}", "goal": f"Step {n + 1} of plan {plan_index}: change the module and its tests",
                "category": CATEGORIES[(plan_index + n) % len(CATEGORIES)], "complexity": "low",
                "scope": [f"src/mod{n}.py", "tests/"], "context": ["src/__init__.py"],
                "deliverables": [f"tests/test_mod{n}.py"], "acceptance": ["the new tests pass"],
                "depends_on": [f"p{n:02d}"] if chained and n else [], "allow_noop": False, "max_attempts": 3}

    def _phase_states(self, index: int) -> list[str]:
        """Per run: 80 % complete, 10 % failed (then skipped if chained), 10 % part done, rest queued."""
        size = self.scale.phases_per_run
        roll = random.Random(index).random()
        cut = 1 + random.Random(-index).randrange(size - 1)
        if roll < 0.8:
            return ["complete"] * size
        if roll < 0.9:
            after = "skipped" if (index // 2) % 2 == 0 else "complete"
            return ["complete"] * cut + ["failed"] + [after] * (size - cut - 1)
        return ["complete"] * cut + ["queued"] * (size - cut)

    def _phase(self, run_id: str, pk: int, n: int, spec: dict, state: str, clock: datetime,
               executor_id: str) -> tuple[datetime, list[tuple[int, datetime]]]:
        rng = self.rng
        tries = {"complete": 1 + (rng.random() < 0.15), "failed": 3}.get(state, 0)
        kind = rng.choice(FAILURE_KINDS) if state == "failed" else None
        attempts = []
        for number in range(1, tries + 1):
            attempt_id = self._take("attempt")
            wall = rng.randint(20_000, 240_000)
            builder, tests = int(wall * 0.6), int(wall * 0.35)
            ok = state == "complete" and number == tries
            failure = None if ok else (kind or "regression")
            self.rows["attempts"].append({
                "id": attempt_id, "phase_pk": pk, "run_id": run_id, "number": number,
                "executor_id": executor_id, "state": "complete" if ok else "failed",
                "step": "commit" if ok else "failed", "model": MODELS[0], "failure_kind": failure,
                "failure_fingerprint": hashlib.sha1(f"{failure}{pk}".encode()).hexdigest()[:16] if failure else None,
                "failure_message": f"{failure}: tests/test_mod{n}.py::test_case failed" if failure else None,
                "apply_stats": {"files_written": 2, "files_changed": 2}, "decision": _decision(ok, failure),
                "tree_sha": hashlib.sha1(f"tree{attempt_id}".encode()).hexdigest(),
                "commit": hashlib.sha1(f"commit{attempt_id}".encode()).hexdigest() if ok else None,
                "builder_ms": builder, "tests_ms": tests, "wall_ms": wall + 80,
                "started_at": clock, "finished_at": clock + timedelta(milliseconds=wall),
            })
            attempts.append((attempt_id, clock))
            clock += timedelta(milliseconds=wall + 500)
            if failure and rng.random() < 0.3:
                self.rows["events"].append({"run_id": run_id, "phase_id": spec["id"], "attempt_id": attempt_id,
                                            "kind": rng.choice(("escalation", "doctor_skipped")), "data": {},
                                            "created_at": clock})
        parked = state == "failed" and rng.random() < 0.5
        self.rows["phases"].append({
            "pk": pk, "run_id": run_id, "phase_id": spec["id"], "position": n, "spec": spec, "state": state,
            "attempts": tries, "pass_attempts": tries, "max_attempts": 3,
            "commit": hashlib.sha1(f"commit{attempts[-1][0]}".encode()).hexdigest() if state == "complete" else None,
            "decision": _decision(state == "complete", kind) if tries else None,
            "failure_kind": kind, "failure_fingerprint": hashlib.sha1(f"{kind}{pk}".encode()).hexdigest()[:16] if kind else None,
            "failure_message": f"{kind}: tests/test_mod{n}.py::test_case failed" if kind else None,
            "claimed_by": None, "lease_expires_at": None,
            "parked_reason": "the last 3 attempts failed the same way" if parked else None,
            "escalated_budget": 32_000 if state == "failed" and rng.random() < 0.3 else None,
            "updated_at": clock,
        })
        return clock, attempts

    def _test_runs(self, run_id: str, attempts: list[tuple[int, datetime]]) -> None:
        if not attempts:
            return
        for n in range(self.scale.test_runs_per_run):
            attempt_id, when = attempts[n % len(attempts)]
            test_run_id = self._take("test_run")
            kind = "baseline" if n == 0 else "attempt"
            self.rows["test_runs"].append({
                "id": test_run_id, "run_id": run_id, "attempt_id": attempt_id, "kind": kind,
                "tree_sha": hashlib.sha1(f"tree{test_run_id}".encode()).hexdigest(),
                "command": "python -m pytest -q", "exit_code": 0, "timed_out": False, "duration_s": 4.2,
                "passed": 40, "failed": 0, "errors": 0, "skipped": 1, "total": 41, "junit_error": None,
                "output_tail": "40 passed, 1 skipped in 4.20s", "output_bytes": 2048, "output_truncated": False,
                "log_path": None, "created_at": when,
            })
            if kind == "baseline":
                self.rows["baselines"].append({"tree_sha": self.rows["test_runs"][-1]["tree_sha"],
                                               "command_hash": "c" * 32, "test_run_id": test_run_id,
                                               "created_at": when})
            self.rows["test_outcomes"] += [
                {"test_run_id": test_run_id, "test_id": f"tests/test_mod.py::test_{k}", "outcome": "passed",
                 "file": "tests/test_mod.py", "message": "", "duration_s": 0.01, "collection_error": False}
                for k in range(self.scale.outcomes_per_test_run)
            ]

    def _llm_calls(self, run_id: str, phase_ids: list[str], attempts: list[tuple[int, datetime]]) -> None:
        rng = self.rng
        for n in range(self.scale.llm_calls_per_run):
            attempt_id, when = attempts[n % len(attempts)] if attempts else (None, self.start)
            doctor = n % 5 == 4
            inp, out = rng.randint(2_000, 30_000), rng.randint(200, 4_000)
            self.rows["llm_calls"].append({
                "run_id": run_id, "phase_id": phase_ids[n % len(phase_ids)], "attempt_id": attempt_id,
                "role": "doctor" if doctor else "builder", "model": MODELS[doctor], "max_tokens": 16_000,
                "input_tokens": inp, "output_tokens": out, "cache_read_tokens": rng.randint(0, 20_000),
                "cache_write_tokens": rng.randint(0, 2_000), "stop_reason": "tool_use",
                "latency_ms": rng.randint(2_000, 40_000), "request_id": f"req_{run_id}_{n}",
                "cost_usd": None if n % 97 == 0 else round((inp * 3 + out * 15) / 1e6, 6),
                "predicted_tokens": out, "http_status": 200, "status": "ok", "error": None,
                "created_at": when + timedelta(seconds=n),
            })


def _decision(complete: bool, failure: str | None) -> dict:
    verdict = "complete" if complete else "failed"
    reason = "no test that passed in the baseline fails" if complete else f"{failure}: a test regressed"
    return {"verdict": verdict, "reasons": [reason], "failure_kind": None if complete else failure,
            "absolute": {"exit_code": 0 if complete else 1, "passed": 40, "failed": 0 if complete else 1},
            "delta": {"new_failures": [] if complete else ["tests/test_mod.py::test_1"], "fixed": [],
                      "still_failing": [], "removed": [], "flaky": [], "collection_errors": []}}
