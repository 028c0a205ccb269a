"""Decide COMPLETE or FAILED for a phase attempt by comparing test outcomes with the baseline.

``decide`` is pure: it reads only the reports and facts it is given. The rules are
DESIGN.md's "Finalizer rules"; the JSON shape is contract 4's ``decision``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Sequence

from autopack.testrun import TestOutcome, TestReport

BROKEN = frozenset({"failed", "error"})
IDS_PER_REASON = 5


@dataclass(frozen=True)
class Delta:
    """How the attempt's per-test outcomes differ from the baseline's."""

    new_failures: tuple[str, ...]
    fixed: tuple[str, ...]
    still_failing: tuple[str, ...]
    removed: tuple[str, ...]
    flaky: tuple[str, ...]
    collection_errors: tuple[str, ...]
    newly_skipped: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {field.name: list(getattr(self, field.name)) for field in fields(self)}


@dataclass(frozen=True)
class Decision:
    """The verdict, every reason for it, the delta and the absolute result."""

    verdict: Literal["complete", "failed"]
    reasons: tuple[str, ...]
    delta: Delta
    failure_kind: str | None
    absolute: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "delta": self.delta.to_dict(),
            "failure_kind": self.failure_kind,
            "absolute": dict(self.absolute),
        }


def new_failures_to_confirm(baseline: TestReport, report: TestReport) -> list[TestOutcome]:
    """Tests to re-run before calling them regressions: failing or erroring now but not in
    the baseline (including tests the baseline did not have). Collection errors are
    excluded: they block without a re-run."""
    before = baseline.by_id()
    return [
        outcome
        for outcome in report.outcomes
        if outcome.outcome in BROKEN
        and not outcome.collection_error
        and (outcome.test_id not in before or before[outcome.test_id].outcome not in BROKEN)
    ]


def decide(
    baseline: TestReport,
    report: TestReport,
    *,
    rerun: TestReport | None,
    files_changed: int,
    deliverables_missing: Sequence[str],
    allow_noop: bool,
) -> Decision:
    """Judge one attempt. FAILED when any rule fires, each adding a reason; the rules run
    in priority order, so ``failure_kind`` is the first one's: timeout, collection_error,
    regression, tests_removed, report_invalid, deliverables_missing, no_op."""
    usable = not report.timed_out and report.junit_error is None
    delta = _delta(baseline, report, rerun) if usable else Delta((), (), (), (), (), ())
    counts = report.counts()
    problems: list[tuple[str, str]] = []

    if report.timed_out:
        problems.append(("timeout", f"the test command timed out after {report.duration_s:.0f} s"))
    if delta.collection_errors:
        problems.append(("collection_error", f"new collection/import errors: {_ids(delta.collection_errors)}"))
    if delta.new_failures:
        confirmed = "failed again on re-run" if rerun is not None else "not re-run"
        problems.append(("regression", f"newly failing tests ({confirmed}): {_ids(delta.new_failures)}"))
    if delta.removed:
        problems.append(("tests_removed", f"tests that passed in the baseline are gone: {_ids(delta.removed)}"))
    if not report.timed_out:
        problems.extend(("report_invalid", reason) for reason in _report_problems(report, counts))
    if deliverables_missing:
        problems.append(("deliverables_missing", "deliverables missing: " + _ids(deliverables_missing)))
    if files_changed == 0 and not allow_noop:
        problems.append(("no_op", "nothing was applied (0 files changed) and allow_noop is false"))

    absolute = {"exit_code": report.exit_code, "timed_out": report.timed_out, **counts}
    if problems:
        reasons = tuple(reason for _, reason in problems)
        return Decision("failed", reasons, delta, problems[0][0], absolute)
    return Decision("complete", _completion_reasons(delta, counts, files_changed), delta, None, absolute)


def missing_deliverables(root: Path, deliverables: Sequence[str]) -> list[str]:
    """The deliverables absent under ``root`` (this helper, unlike ``decide``, reads files).

    ``"dir/"`` needs at least one file somewhere under it; any other entry must be a file.
    """
    missing = []
    for entry in deliverables:
        path = root / entry
        if entry.endswith("/"):
            present = path.is_dir() and any(child.is_file() for child in path.rglob("*"))
        else:
            present = path.is_file()
        if not present:
            missing.append(entry)
    return missing


def _delta(baseline: TestReport, report: TestReport, rerun: TestReport | None) -> Delta:
    before = baseline.by_id()
    now = report.by_id()
    again = rerun.by_id() if rerun is not None else {}
    baseline_collection_errors = set(baseline.collection_errors())
    to_confirm = {outcome.test_id for outcome in new_failures_to_confirm(baseline, report)}

    new_failures: list[str] = []
    flaky: list[str] = []
    fixed: list[str] = []
    still_failing: list[str] = []
    newly_skipped: list[str] = []
    added: list[str] = []
    collection_errors: list[str] = []
    for test_id, outcome in now.items():
        previous = before.get(test_id)
        if previous is None:
            added.append(test_id)
        if outcome.collection_error and test_id not in baseline_collection_errors:
            collection_errors.append(test_id)
        elif test_id in to_confirm:
            passed_again = test_id in again and again[test_id].outcome == "passed"
            (flaky if passed_again else new_failures).append(test_id)
        elif previous is None:
            continue
        elif previous.outcome in BROKEN and outcome.outcome in BROKEN:
            still_failing.append(test_id)
        elif previous.outcome in BROKEN and outcome.outcome == "passed":
            fixed.append(test_id)
        elif previous.outcome == "passed" and outcome.outcome == "skipped":
            newly_skipped.append(test_id)
    removed = [test_id for test_id, old in before.items() if old.outcome == "passed" and test_id not in now]
    return Delta(
        new_failures=tuple(new_failures),
        fixed=tuple(fixed),
        still_failing=tuple(still_failing),
        removed=tuple(removed),
        flaky=tuple(flaky),
        collection_errors=tuple(collection_errors),
        newly_skipped=tuple(newly_skipped),
        added=tuple(added),
    )


def _report_problems(report: TestReport, counts: dict[str, int]) -> list[str]:
    if report.junit_error is not None:
        return [f"the test report is unusable: {report.junit_error}"]
    if counts["total"] == 0:
        return [f"the test report is empty: no tests ran (exit code {report.exit_code})"]
    broken = counts["failed"] + counts["error"]
    if report.exit_code == 0 and broken:
        return [f"the test command exited 0 but the report has {broken} failures/errors"]
    if report.exit_code != 0 and not broken:
        return [f"the test command exited {report.exit_code} but the report has no failures or errors"]
    return []


def _completion_reasons(delta: Delta, counts: dict[str, int], files_changed: int) -> tuple[str, ...]:
    summary = f"no regressions: {counts['passed']} passed"
    broken = counts["failed"] + counts["error"]
    if broken:
        summary += f", {broken} failed ({len(delta.still_failing)} already failing in baseline)"
    if counts["skipped"]:
        summary += f", {counts['skipped']} skipped"
    if delta.fixed:
        summary += f", {len(delta.fixed)} fixed"
    reasons = [summary]
    if delta.added:
        reasons.append(f"{len(delta.added)} new tests: " + _ids(delta.added))
    if delta.flaky:
        reasons.append("flaky (failed, then passed on re-run; not blocking): " + _ids(delta.flaky))
    if delta.newly_skipped:
        reasons.append("passed in the baseline, skipped now (not blocking): " + _ids(delta.newly_skipped))
    if files_changed == 0:
        reasons.append("no files changed (allowed: allow_noop is true)")
    return tuple(reasons)


def _ids(test_ids: Sequence[str]) -> str:
    shown = ", ".join(test_ids[:IDS_PER_REASON])
    hidden = len(test_ids) - IDS_PER_REASON
    return f"{shown} (+{hidden} more)" if hidden > 0 else shown
