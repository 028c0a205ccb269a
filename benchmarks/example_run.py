"""autopack's own cost per attempt, from the recorded attempts of the example run (examples/calc).

Overhead per attempt = wall - builder - tests, as the runner records them: everything
autopack does around the LLM call and the test subprocesses (state writes, git, edits,
finalizing). Test-suite executions per attempt leave out the run's first baseline,
which no cache can avoid; targeted re-runs of newly failing tests are counted apart.
"""

from __future__ import annotations

import shutil
import sqlite3
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import Figure
from benchmarks.timing import autopack_argv, autopack_env, run_once

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "calc"
OVERHEAD_LIMIT_MS = 100.0
EXECUTIONS_LIMIT = 1.0


@dataclass(frozen=True)
class RunRecord:
    """What one example run recorded."""

    attempts: int
    overheads_ms: list[int]
    full_suite_runs: int  # baselines, attempt runs and whole-suite re-runs
    reruns: int  # re-runs of failing tests alone
    evidence_runs: int = 0  # goal evidence: f2p and old_tests runs (the touched test files only)
    evidence_s: float = 0.0  # their total duration
    attempt_runs_s: float = 0.0  # the attempts' whole-suite runs' total duration

    @property
    def overhead_ms(self) -> float:
        return sum(self.overheads_ms) / len(self.overheads_ms)

    @property
    def executions_after_first_baseline(self) -> float:
        return (self.full_suite_runs - 1) / self.attempts


def run_example(workdir: Path, example: Path = EXAMPLE) -> RunRecord:
    """Copy the example to ``workdir``, make its target a git repository, run it, read the record."""
    project = workdir / "calc"
    shutil.copytree(example, project, ignore=shutil.ignore_patterns(".autopack", "__pycache__"))
    env = autopack_env()
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                       cwd=project / "target", env=env, check=True, capture_output=True)
    db = workdir / "autopack.db"
    run_once(autopack_argv("run", "plan.toml", "--db", str(db)), project, env)
    return read_record(db)


def read_record(db: Path) -> RunRecord:
    conn = sqlite3.connect(db)
    try:
        overheads = [row[0] for row in conn.execute(
            "SELECT wall_ms - builder_ms - tests_ms FROM attempts WHERE state IN ('complete', 'failed') ORDER BY id")]
        kinds = dict(conn.execute("SELECT kind, count(*) FROM test_runs GROUP BY kind").fetchall())
        seconds = dict(conn.execute("SELECT kind, sum(duration_s) FROM test_runs GROUP BY kind").fetchall())
    finally:
        conn.close()
    full = ("baseline", "attempt", "rerun_suite", "baseline_rerun_suite")
    evidence = ("f2p", "old_tests")
    return RunRecord(len(overheads), overheads, sum(kinds.get(kind, 0) for kind in full),
                     kinds.get("rerun", 0) + kinds.get("baseline_rerun", 0),
                     sum(kinds.get(kind, 0) for kind in evidence), sum(seconds.get(kind) or 0.0 for kind in evidence),
                     seconds.get("attempt") or 0.0)


def example_figures(repeats: int) -> list[Figure]:
    """Median over ``repeats`` example runs of each run's mean overhead and executions per attempt."""
    records = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
            records.append(run_example(Path(scratch)))
    detail = {"runs": repeats, "attempts_per_run": records[0].attempts,
              "overhead_ms_per_attempt": [r.overheads_ms for r in records]}
    executions = [r.executions_after_first_baseline for r in records]
    with_reruns = [(r.full_suite_runs - 1 + r.reruns) / r.attempts for r in records]
    return [
        Figure("overhead per attempt (example)", statistics.median(r.overhead_ms for r in records), "ms",
               OVERHEAD_LIMIT_MS, detail),
        Figure("test-suite runs per attempt (example)", statistics.median(executions), "count",
               EXECUTIONS_LIMIT, {"full_suite_runs_per_run": records[0].full_suite_runs,
                                  "targeted_reruns_per_run": records[0].reruns,
                                  "with_targeted_reruns": statistics.median(with_reruns)}),
        # Goal evidence's cost as a ratio within each run: its runs' time over the attempts' suite runs' time.
        Figure("goal-evidence time / attempt suite time (example)",
               statistics.median(r.evidence_s / r.attempt_runs_s for r in records if r.attempt_runs_s), "ratio",
               None, {"evidence_runs_per_run": records[0].evidence_runs,
                      "evidence_runs_per_attempt": records[0].evidence_runs / records[0].attempts}),
    ]
