"""Decide COMPLETE or FAILED for a phase attempt by comparing test outcomes with the baseline.

``decide`` is pure: it reads only the reports and facts it is given. The rules are
DESIGN.md's "Finalizer rules"; the JSON shape is contract 4's ``decision``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from autopack.testoutput import BUILD_PREFIX
from autopack.testrun import TestOutcome, TestReport

BROKEN = frozenset({"failed", "error"})
IDS_PER_REASON = 5
ERROR_LINE_CHARS = 200
NO_OP_REASON = "nothing was applied (0 files changed) and allow_noop is false"

_PYTEST_ERROR_LINE = re.compile(r"^E\s+(?P<text>\S.*)$")  # pytest marks the failure's own lines with "E"
_PYTHON_LOCATION = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_PYTHON_EXCEPTION = re.compile(r"^\s*[\w.]*(Error|Exception|Exit|Interrupt)\b:?")
_ANY_ERROR = re.compile(r"\berror\b", re.IGNORECASE)
_NOT_THE_CAUSE = {"collection failure", "internal error"}  # pytest's generic first lines


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
    order_dependent: tuple[str, ...] = ()  # new failures that pass alone and fail again in the whole suite
    not_collected: tuple[str, ...] = ()  # baseline tests hidden by a new collection error (not "removed")
    moved: tuple[tuple[str, str], ...] = ()  # (removed id, added id) pairs: the same test under a new id

    def to_dict(self) -> dict[str, list[Any]]:
        return {field.name: [list(item) if isinstance(item, tuple) else item for item in getattr(self, field.name)]
                for field in fields(self)}


@dataclass(frozen=True)
class Decision:
    """The verdict, every reason for it, the delta and the absolute result."""

    verdict: Literal["complete", "failed"]
    reasons: tuple[str, ...]
    delta: Delta
    failure_kind: str | None
    absolute: dict[str, Any]
    evidence: dict[str, Any] | None = None  # contract 5's goal evidence, once judged

    def to_dict(self) -> dict[str, Any]:
        data = {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "delta": self.delta.to_dict(),
            "failure_kind": self.failure_kind,
            "absolute": dict(self.absolute),
        }
        if self.evidence is not None:
            data["evidence"] = self.evidence
        return data

    def with_evidence(self, evidence: Any) -> Decision:
        """This (complete) decision judged by the goal-evidence rules (``autopack.domain.evidence``):
        failed with the first rule's kind when any fires, else complete with the summary as a reason."""
        if evidence.problems:
            return replace(self, verdict="failed", reasons=tuple(evidence.reasons), failure_kind=evidence.failure_kind,
                           evidence=evidence.data)
        return replace(self, reasons=(*self.reasons, "goal evidence: " + evidence.summary), evidence=evidence.data)


def new_failures_to_confirm(baseline: TestReport | None, report: TestReport) -> list[TestOutcome]:
    """Tests to re-run before calling them regressions: failing or erroring now but not in
    the baseline (including tests the baseline did not have; every broken test when there is
    no baseline). Collection errors are excluded: they block without a re-run."""
    before = baseline.by_id() if baseline is not None else {}
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
    rerun_alone: TestReport | None = None,
) -> Decision:
    """Judge one attempt. FAILED when any rule fires, each adding a reason; the rules run
    in priority order, so ``failure_kind`` is the first one's: timeout, collection_error,
    regression, tests_removed, report_invalid, deliverables_missing, no_op.

    ``rerun`` is the whole test command run again, the context the new failures failed in:
    a new failure that passes there is flaky, any other is a regression. ``rerun_alone``
    (the new failures re-run on their own) only tells the regressions apart: one that
    passes alone but fails again in ``rerun`` is order-dependent.
    """
    usable = not report.timed_out and report.junit_error is None
    delta = _delta(baseline, report, rerun, rerun_alone) if usable else Delta((), (), (), (), (), ())
    counts = report.counts()
    now = report.by_id()
    problems: list[tuple[str, str]] = []

    if report.timed_out:
        problems.append(("timeout", f"the test command timed out after {report.duration_s:.0f} s"))
    if delta.collection_errors:
        reason = "new collection/import errors: " + _errors([now[test_id] for test_id in delta.collection_errors])
        if delta.not_collected:
            reason += f"; {_count(delta.not_collected, 'test')} in the broken modules could not run"
        problems.append(("collection_error", reason))
    for how, test_ids in _by_confirmation(delta.new_failures, rerun, rerun_alone).items():
        problems.append(("regression", f"newly failing tests ({how}): {_ids(test_ids)}"))
    moved_away = {old for old, _ in delta.moved}
    gone = [test_id for test_id in delta.removed if test_id not in moved_away]
    if gone:
        problems.append(("tests_removed", f"tests that passed in the baseline are gone: {_ids(gone)}"))
    if delta.moved:
        pairs = [f"{old} \u2192 {new}" for old, new in delta.moved]
        problems.append(("tests_removed", "tests that passed in the baseline moved to new ids, so the baseline "
                                          f"cannot vouch for them: {_ids(pairs)}"))
    if not report.timed_out:
        problems.extend(("report_invalid", reason) for reason in _report_problems(report, counts, delta))
    if deliverables_missing:
        problems.append(("deliverables_missing", "deliverables missing: " + _ids(deliverables_missing)))
    if files_changed == 0 and not allow_noop:
        problems.append(("no_op", NO_OP_REASON))

    absolute = {"exit_code": report.exit_code, "timed_out": report.timed_out, **counts}
    if problems:
        reasons = tuple(reason for _, reason in problems)
        return Decision("failed", reasons, delta, problems[0][0], absolute)
    return Decision("complete", _completion_reasons(delta, counts, files_changed), delta, None, absolute)


def confirmed_report(report: TestReport, rerun: TestReport | None) -> TestReport:
    """``report`` as a baseline should hold it: each test that failed there but passed when the
    whole suite was re-run (``rerun``) takes its re-run outcome, so a flaky failure is never
    cached as failing (it would hide that test's real regression later)."""
    if rerun is None:
        return report
    again = rerun.by_id()
    outcomes = tuple(
        again[o.test_id] if _flaky(o, again.get(o.test_id)) else o for o in report.outcomes
    )
    return report if outcomes == report.outcomes else replace(report, outcomes=outcomes)


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


def _delta(baseline: TestReport, report: TestReport, rerun: TestReport | None,
           rerun_alone: TestReport | None) -> Delta:
    before = baseline.by_id()
    now = report.by_id()
    again = rerun.by_id() if rerun is not None else {}
    alone = rerun_alone.by_id() if rerun_alone is not None else {}
    baseline_collection_errors = set(baseline.collection_errors())
    to_confirm = {outcome.test_id for outcome in new_failures_to_confirm(baseline, report)}

    new_failures: list[str] = []
    order_dependent: list[str] = []
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
            if _flaky(outcome, again.get(test_id)):
                flaky.append(test_id)
                continue
            new_failures.append(test_id)
            if _order_dependent(again.get(test_id), alone.get(test_id)):
                order_dependent.append(test_id)
        elif previous is None:
            continue
        elif previous.outcome in BROKEN and outcome.outcome in BROKEN:
            still_failing.append(test_id)
        elif previous.outcome in BROKEN and outcome.outcome == "passed":
            fixed.append(test_id)
        elif previous.outcome == "passed" and outcome.outcome == "skipped":
            newly_skipped.append(test_id)
    missing = [test_id for test_id in before if test_id not in now]
    hidden = _hidden_by([now[test_id] for test_id in collection_errors], missing, before, report)
    removed = [test_id for test_id in missing if before[test_id].outcome == "passed" and test_id not in hidden]
    return Delta(
        new_failures=tuple(new_failures),
        fixed=tuple(fixed),
        still_failing=tuple(still_failing),
        removed=tuple(removed),
        flaky=tuple(flaky),
        collection_errors=tuple(collection_errors),
        newly_skipped=tuple(newly_skipped),
        added=tuple(added),
        order_dependent=tuple(order_dependent),
        not_collected=tuple(test_id for test_id in missing if test_id in hidden),
        moved=_moved(removed, added, before, now),
    )


def _flaky(outcome: TestOutcome, again: TestOutcome | None) -> bool:
    """Broken in the first run, passed when the whole suite was run again."""
    return (outcome.outcome in BROKEN and not outcome.collection_error
            and again is not None and again.outcome == "passed")


def _order_dependent(again: TestOutcome | None, alone: TestOutcome | None) -> bool:
    return again is not None and again.outcome in BROKEN and alone is not None and alone.outcome == "passed"


def _by_confirmation(new_failures: Sequence[str], rerun: TestReport | None,
                     rerun_alone: TestReport | None) -> dict[str, list[str]]:
    """The new failures grouped by what their re-runs showed, in the words of the reason."""
    again = rerun.by_id() if rerun is not None else {}
    alone = rerun_alone.by_id() if rerun_alone is not None else {}
    groups: dict[str, list[str]] = {}
    for test_id in new_failures:
        in_suite, solo = again.get(test_id), alone.get(test_id)
        if _order_dependent(in_suite, solo):
            how = "order-dependent: they pass when re-run alone and fail again when the whole suite is re-run"
        elif in_suite is not None:
            how = "failed again on re-run" if in_suite.outcome in BROKEN else f"{in_suite.outcome} on re-run"
        elif solo is not None and solo.outcome in BROKEN:
            how = "failed again on re-run"
        elif any(report is not None and report.timed_out for report in (rerun, rerun_alone)):
            how = "not confirmed: the re-run timed out"
        elif solo is not None:
            how = f"{solo.outcome} when re-run alone, not re-run with the whole suite"
        elif rerun is None and rerun_alone is None:
            how = "not re-run"
        else:
            how = "missing from the re-run's report"
        groups.setdefault(how, []).append(test_id)
    return groups


def _hidden_by(errors: Sequence[TestOutcome], missing: Sequence[str], before: dict[str, TestOutcome],
               report: TestReport) -> set[str]:
    """The missing baseline tests that new collection errors kept from running: all of them
    when no test ran at all, else those in a broken module, directory or build unit."""
    if not errors:
        return set()
    if all(outcome.collection_error for outcome in report.outcomes):
        return set(missing)
    return {test_id for test_id in missing if any(_covers(error, test_id, before[test_id].file) for error in errors)}


def _covers(error: TestOutcome, test_id: str, file: str | None) -> bool:
    if error.file and file:
        scope = Path(error.file.rstrip("/"))
        if scope.name == "conftest.py":
            scope = scope.parent
        if scope == Path(".") or Path(file) == scope or scope in Path(file).parents:
            return True
    unit = error.test_id.removeprefix(BUILD_PREFIX)
    return test_id.startswith((unit + "::", unit + ".", unit + " ("))


def _moved(removed: Sequence[str], added: Sequence[str], before: dict[str, TestOutcome],
           now: dict[str, TestOutcome]) -> tuple[tuple[str, str], ...]:
    """Removed tests paired with added ones of the same name: in the same file (e.g. moved
    into a class), or anywhere when that name was removed once and added once."""
    def name(test_id: str) -> str:
        return test_id.rpartition("::")[2]

    pairs: list[tuple[str, str]] = []
    taken: set[str] = set()
    for old in removed:
        candidates = [new for new in added if name(new) == name(old) and new not in taken]
        same_file = [new for new in candidates if before[old].file and now[new].file == before[old].file]
        unique = len(candidates) == 1 and sum(name(other) == name(old) for other in removed) == 1
        match = same_file[0] if len(same_file) == 1 else candidates[0] if unique else None
        if match is not None:
            pairs.append((old, match))
            taken.add(match)
    return tuple(pairs)


def _report_problems(report: TestReport, counts: dict[str, int], delta: Delta) -> list[str]:
    if report.junit_error is not None:
        return [f"the test report is unusable: {report.junit_error}"]
    if all(outcome.collection_error for outcome in report.outcomes):
        if delta.collection_errors:
            return []  # the collection errors' reason says why nothing ran
        empty = f"the test report is empty: no tests ran (exit code {report.exit_code})"
        old_errors = [outcome for outcome in report.outcomes if outcome.collection_error]
        if old_errors:
            empty += "; the baseline had the same collection/import errors: " + _errors(old_errors)
        return [empty]
    broken = counts["failed"] + counts["error"]
    if report.exit_code == 0 and broken:
        return [f"the test command exited 0 but the report has {broken} failures/errors"]
    if report.exit_code != 0 and not broken:
        return [f"the test command exited {report.exit_code} but the report has no failures or errors"]
    return []


def _completion_reasons(delta: Delta, counts: dict[str, int], files_changed: int) -> tuple[str, ...]:
    parts = [f"{counts['passed']} passed"]
    if delta.still_failing:
        parts.append(f"{len(delta.still_failing)} failed (already failing in baseline)")
    if delta.flaky:
        parts.append(f"{len(delta.flaky)} flaky (passed on re-run)")
    if counts["skipped"]:
        parts.append(f"{counts['skipped']} skipped")
    if delta.fixed:
        parts.append(f"{len(delta.fixed)} fixed")
    reasons = ["no regressions: " + ", ".join(parts)]
    if delta.added:
        reasons.append(f"{_count(delta.added, 'new test')}: " + _ids(delta.added))
    if delta.flaky:
        reasons.append("flaky (failed, then passed when the whole suite was re-run; not blocking): "
                       + _ids(delta.flaky))
    if delta.newly_skipped:
        reasons.append("passed in the baseline, skipped now (not blocking): " + _ids(delta.newly_skipped))
    if files_changed == 0:
        reasons.append("no files changed (allowed: allow_noop is true)")
    return tuple(reasons)


def _errors(errors: Sequence[TestOutcome]) -> str:
    """Collection errors named with the line that says what broke, at most IDS_PER_REASON."""
    return _ids([f"{error.test_id} ({line})" if (line := _error_line(error.message)) else error.test_id
                 for error in errors], separator="; ")


def _error_line(message: str) -> str:
    """The line of an error message that says what broke: pytest's last ``E`` line (with the
    file and line of a syntax error), else the last Python exception line, else the first
    line naming an error, else the last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    marked = [match.group("text") for match in map(_PYTEST_ERROR_LINE.match, lines) if match]
    if marked:
        line = marked[-1]
        where = next((match for match in map(_PYTHON_LOCATION.search, reversed(marked)) if match), None)
        if where is not None and where.group(0) not in line:
            line += f" ({where.group('file')}, line {where.group('line')})"
    else:
        candidates = [line for line in lines if line.lower() not in _NOT_THE_CAUSE]
        exceptions = [line for line in candidates if _PYTHON_EXCEPTION.match(line)]
        named = [line for line in candidates if _ANY_ERROR.search(line)]
        line = exceptions[-1] if exceptions else named[0] if named else candidates[-1] if candidates else ""
    return line if len(line) <= ERROR_LINE_CHARS else line[: ERROR_LINE_CHARS - 1] + "\u2026"


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _ids(test_ids: Sequence[str], separator: str = ", ") -> str:
    shown = separator.join(test_ids[:IDS_PER_REASON])
    hidden = len(test_ids) - IDS_PER_REASON
    return f"{shown} (+{hidden} more)" if hidden > 0 else shown
