"""The attempt's test runs: the baseline (cached by tree and environment), each recorded suite run,
and the re-runs that confirm a new failure before it counts (autopack.confirm)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from autopack.confirm import Reruns, record_confirmed, rerun_suspects
from autopack.errors import writing
from autopack.events import TestsRan
from autopack.finalizer import new_failures_to_confirm
from autopack.test_logs import files_to_store
from autopack.testrun import TestReport, is_pytest

if TYPE_CHECKING:
    from autopack.runner import RunContext


def baseline_report(ctx: RunContext, attempt_id: int, timings: dict[str, int]) -> TestReport:
    """Outcomes at the branch head, from the cache when this tree was tested before; a fresh
    run's failures are re-run like an attempt's, so a flaky one is not cached as failing."""
    tree_sha = ctx.workspace.head_tree()
    cached = ctx.store.baseline_for(tree_sha, ctx.baseline_key)
    if cached is not None:
        return ctx.store.test_report(cached)
    report, test_run_id = run_suite(ctx, attempt_id, "baseline", tree_sha, timings)
    reruns = confirm(ctx, attempt_id, None, report, timings, kind_prefix="baseline_")
    confirmed, confirmed_id = record_confirmed(ctx.store, ctx.run.id, attempt_id, tree_sha, report, test_run_id,
                                               reruns)
    ctx.store.save_baseline(tree_sha, ctx.baseline_key, confirmed_id)
    ctx.workspace.reset_clean()  # the suite may leave files behind; the builder starts clean
    return confirmed


def run_suite(ctx: RunContext, attempt_id: int, kind: str, tree_sha: str | None,
               timings: dict[str, int], select: tuple[str, ...] = (), cwd: Path | None = None
               ) -> tuple[TestReport, int]:
    """Run the test command (in the run's project root, or ``cwd``: the evidence worktree) and record it."""
    log_path = ctx.artifacts / "logs" / f"attempt-{attempt_id}-{kind}.log"
    junit_path = ctx.artifacts / "junit" / f"attempt-{attempt_id}-{kind}.xml"
    with writing(log_path.parent, "the test logs"):
        log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    report = ctx.run_tests(cwd or ctx.workspace.project_root, log_path=log_path, select=select,
                           junit_path=junit_path)
    timings["tests_ms"] += int((time.monotonic() - t0) * 1000)
    test_run_id = ctx.store.record_test_run(ctx.run.id, attempt_id, kind, tree_sha, report, log_path,
                                            files_to_store(log_path, junit_path))
    ctx.workspace.check_seal()
    phase_id, number = ctx.current or (None, None)
    ctx.observer.notify(TestsRan(run_id=ctx.run.id, phase_id=phase_id, attempt=number, kind=kind,
                                 counts=report.counts(), exit_code=report.exit_code))
    return report, test_run_id


def confirm(ctx: RunContext, attempt_id: int, baseline: TestReport | None, report: TestReport,
             timings: dict[str, int], kind_prefix: str = "") -> Reruns:
    """Re-run the tests that broke in ``report`` and not in ``baseline`` (all that broke, without
    one) in the context they failed in (see autopack.confirm)."""
    def run(kind: str, select: tuple[str, ...]) -> TestReport:
        return run_suite(ctx, attempt_id, kind_prefix + kind, None, timings, select=select)[0]
    suspects = [] if report.timed_out else new_failures_to_confirm(baseline, report)
    return rerun_suspects(suspects, run, pytest=is_pytest(ctx.test_command))
