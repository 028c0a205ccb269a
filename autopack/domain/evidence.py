"""Goal evidence (contract 5): what a COMPLETE phase must prove beyond "nothing broke". Pure.

The engine (``autopack.engine.evidence_runs``) finds the phase's changed test files, runs
the touched tests at the base code (fail-to-pass) and the base version of changed test
files on the new code (old tests), and hands the reports to :func:`judge`, which applies
the four rules and returns the decision's ``evidence`` object:

- **fail-to-pass** (``no_goal_evidence``): at least one touched test fails, errors or does
  not exist at the base and passes on the new code (a baseline failure the phase fixed
  without touching its file counts too), and every touched test passes on the new code;
  enforced where ``require_f2p`` holds, recorded everywhere.
- **acceptance_tests** (``acceptance_failed``): each exists and passes after, and fails or
  does not exist before.
- **old tests on new code** (``tests_weakened``): a test of a changed pre-existing test
  file's base version that fails on the new code where its edited version passes, unless
  ``tests_may_change``.
- **skips** (``tests_skipped``): a baseline-passing test now skipped (or xfail), unless
  listed in ``allow_skip``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Mapping, Sequence

from autopack.domain.lifecycle import FailureKind
from autopack.domain.test_files import NO_LAYOUT, Layout, Touched, belongs_to, ids_of, project_path
from autopack.junit import TestOutcome

BROKEN = frozenset({"failed", "error"})
ABSENT = "absent"  # the test did not exist on that tree
UNKNOWN = "unknown"  # the evidence run stopped before it could show the test either way
IDS_SHOWN = 5
# The rules in the order their kinds win when several fire (the first is the decision's failure_kind).
RULE_ORDER = (FailureKind.TESTS_WEAKENED, FailureKind.TESTS_SKIPPED, FailureKind.ACCEPTANCE_FAILED,
              FailureKind.NO_GOAL_EVIDENCE)

@dataclass(frozen=True)
class RunRecord:
    """One evidence run: its kind (f2p / old_tests), the tree it ran on, what it selected, its report."""

    kind: str
    tree: str
    select: tuple[str, ...]
    report: Any  # TestReport
    test_run_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tree": self.tree, "select": list(self.select), "test_run_id": self.test_run_id,
                "exit_code": self.report.exit_code, "timed_out": self.report.timed_out,
                "junit_error": self.report.junit_error, "counts": self.report.counts()}


@dataclass(frozen=True)
class Rules:
    """What a phase must prove, from its plan keys and category."""

    f2p_required: bool
    tests_may_change: bool
    acceptance_tests: tuple[str, ...] = ()
    allow_skip: tuple[str, ...] = ()


@dataclass
class Evidence:
    """The verdict of the goal-evidence rules and the decision's ``evidence`` object."""

    data: dict[str, Any]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, reason) in RULE_ORDER

    @property
    def failure_kind(self) -> str | None:
        return self.problems[0][0] if self.problems else None

    @property
    def reasons(self) -> list[str]:
        return [reason for _, reason in self.problems]

    @property
    def summary(self) -> str:
        return self.data["summary"]

    def details(self) -> str:
        """For the next attempt's digest: the weakened tests with their files' diffs, then each
        touched test's outcome before and after."""
        lines = []
        for test in self.data.get("weakened", [])[:IDS_SHOWN]:
            lines.append(f"{test['id']}: its base version is {test['base_version']} on the new code"
                         + (f": {test['message'].strip()}" if test["message"].strip() else ""))
        for path, diff in self.data.get("diffs", {}).items():
            lines += [f"The phase's change to {path}:", diff.rstrip()]
        for entry in self.data.get("acceptance", []):
            if "problem" in entry:
                lines.append(f"acceptance test {entry['id']}: {entry['problem']}")
        lines += [f"{test['id']}: {test['before']} before the phase, {test['after']} after" for test in self.data["tests"][:20]]
        return "\n".join(lines)


def outcome_on(report: Any | None, test_id: str, file: str | None, layout: Layout = NO_LAYOUT,
               applied: Sequence[str] = ()) -> str:
    """A test's outcome in an evidence run: ``error`` when its file, directory (a conftest.py) or
    build unit could not be collected there; a run that timed out counts it as failed there (it
    hung on that code); ``absent`` when the run ran its file (or, without a file, ran tests) and
    the test was not among them; ``unknown`` when the run reported nothing that would show it
    (the runner stopped before any test): no evidence either way."""
    if report is None:
        return ABSENT
    found = report.by_id().get(test_id)
    if found is not None:
        return "error" if found.collection_error else found.outcome
    if report.timed_out:
        return "failed"
    here = project_path(file, layout.file_prefix) if file else None
    probe = TestOutcome(test_id, "passed", file)
    for error in report.outcomes:
        if not error.collection_error:
            continue
        where = project_path(error.file, layout.file_prefix) if error.file else None
        if (where and here and _covers(where, here)) or (where and belongs_to(probe, [where], layout)) \
                or _build_unit_holds(error.test_id, test_id) \
                or (here is None and project_path(error.test_id, layout.file_prefix) in applied):
            return "error"
    ran = [o for o in report.outcomes if not o.collection_error]
    if here is not None:
        ran = [o for o in report.outcomes if o.file and project_path(o.file, layout.file_prefix) == here]
    return ABSENT if ran else UNKNOWN


def _covers(error_file: str, test_file: str) -> bool:
    """A collection error in ``error_file`` keeps ``test_file`` from running: the same file, or a
    conftest.py (or directory) above it."""
    scope = PurePosixPath(error_file.rstrip("/"))
    if scope.name == "conftest.py":
        scope = scope.parent
    return str(scope) in (".", "") or PurePosixPath(test_file) == scope or scope in PurePosixPath(test_file).parents


def _build_unit_holds(error_id: str, test_id: str) -> bool:
    """A build error's unit (``build::<package or file>``) is the suite of the test's id."""
    unit = error_id.partition("::")[2] if error_id.startswith("build::") else None
    return bool(unit) and test_id.partition("::")[0] in (unit, unit.rstrip("/"))


def judge(rules: Rules, touched: Touched, baseline: Any, after: Any, fixed: Sequence[str],
          newly_skipped: Sequence[str], f2p: RunRecord | None = None, old_tests: RunRecord | None = None,
          diffs: Mapping[str, str] | None = None) -> Evidence:
    """Apply contract 5's rules. ``baseline``/``after``: the gate's reports; ``fixed``/``newly_skipped``:
    the regression delta's; ``f2p``: the touched tests at the base with the test-file changes;
    ``old_tests``: the reverted test files on the new code; ``diffs``: each reverted file's diff."""
    before_ids, after_ids = baseline.by_id(), after.by_id()
    applied = set(touched.applied_at_base)

    def before(test_id: str) -> str:
        outcome = after_ids.get(test_id)
        if f2p is not None and (outcome is None or belongs_to(outcome, applied, touched.layout)
                                or test_id in f2p.report.by_id()):
            return outcome_on(f2p.report, test_id, outcome.file if outcome else None, touched.layout,
                              touched.applied_at_base)
        previous = before_ids.get(test_id)
        if previous is None:
            return ABSENT
        return "error" if previous.collection_error else previous.outcome

    touched_ids = list(touched.ids)
    if touched.unattributed and f2p is not None:
        for outcome in f2p.report.outcomes:
            previous, now = before_ids.get(outcome.test_id), after_ids.get(outcome.test_id)
            if (outcome.file is None and not outcome.collection_error and now is not None
                    and outcome.test_id not in touched.ids and (previous is None or previous.outcome != outcome.outcome)):
                touched_ids.append(outcome.test_id)
    tests = [{"id": test_id, "before": before(test_id), "after": after_ids[test_id].outcome}
             for test_id in touched_ids]
    f2p_ids = [t["id"] for t in tests if t["after"] == "passed" and (t["before"] in BROKEN or t["before"] == ABSENT)]
    fixed_alone = [test_id for test_id in fixed if test_id not in set(touched_ids)]
    still_broken = [t["id"] for t in tests if t["after"] in BROKEN]
    problems: dict[str, list[str]] = {}

    # fail-to-pass
    shown_run = "no test file changed" if not touched.test_files else \
        f"ran {_count(touched_ids, 'touched test')} at the base" if f2p is not None else "no touched test ran"
    if f2p is not None and f2p.report.junit_error is not None and not f2p_ids:
        shown_run += f" (its report was unusable: {f2p.report.junit_error})"
    unknown = [t["id"] for t in tests if t["before"] == UNKNOWN]
    if unknown and not f2p_ids:
        shown_run += f"; the run at the base stopped before it could show {_ids(unknown)} (see its log)"
    if not (f2p_ids or fixed_alone) or still_broken:
        if not (f2p_ids or fixed_alone):
            why = f"no test fails before the phase and passes after ({shown_run})"
        else:
            why = "touched tests fail on the new code: " + _ids(still_broken)
        if rules.f2p_required:
            problems.setdefault(FailureKind.NO_GOAL_EVIDENCE, []).append(
                why + "; add a test that fails on the old code and passes on the new (or set require_f2p = false)")
        f2p_rule = "missing" if rules.f2p_required else "not required"
    else:
        f2p_rule = "met"

    # acceptance tests
    acceptance = []
    for wanted in rules.acceptance_tests:
        match = next((o for o in after.outcomes if wanted in ids_of(o, touched.layout.file_prefix)), None)
        entry = {"id": wanted, "after": match.outcome if match else ABSENT,
                 "before": before(match.test_id) if match else ABSENT}
        if match is None:
            entry["problem"] = "does not exist after the phase (no test with that id ran)"
        elif match.outcome != "passed":
            entry["problem"] = f"{match.outcome} after the phase"
        elif entry["before"] == "passed":
            entry["problem"] = "already passes before the phase, so it proves nothing"
        elif entry["before"] == UNKNOWN:
            entry["problem"] = "could not be shown to fail before the phase (the run at the base stopped first)"
        acceptance.append(entry)
        if "problem" in entry:
            problems.setdefault(FailureKind.ACCEPTANCE_FAILED, []).append(f"acceptance test {wanted} {entry['problem']}")

    # old tests on new code
    weakened = []
    if old_tests is not None:
        # The old-tests tree differs from the new one only by the reverted test files: a test that
        # fails there and passes on the new tree passes because of their edits, whichever file it is in.
        for outcome in old_tests.report.outcomes:
            if outcome.outcome not in BROKEN:
                continue
            now = after_ids.get(outcome.test_id)
            if outcome.collection_error:  # the base version cannot even be loaded against the new code
                if (now is None or not now.collection_error) and (
                        not outcome.file or project_path(outcome.file, touched.layout.file_prefix) in touched.reverted):
                    weakened.append({"id": outcome.test_id, "base_version": "error", "after": "collected",
                                     "file": outcome.file, "message": outcome.message[:300]})
                continue
            if now is not None and now.outcome == "passed":
                weakened.append({"id": outcome.test_id, "base_version": outcome.outcome, "after": "passed",
                                 "file": outcome.file, "message": outcome.message[:300]})
        if weakened:
            files = sorted({w["file"] for w in weakened if w["file"]})
            problems.setdefault(FailureKind.TESTS_WEAKENED, []).append(
                "the base version of changed test files fails on the new code, so the edits made them pass: "
                + _ids([w["id"] for w in weakened]) + (f" (in {', '.join(files)})" if files else "")
                + "; change the code, not what the tests assert (or set tests_may_change = true)")
    if rules.tests_may_change:
        old_rule = "not checked: tests_may_change"
    elif not touched.reverted:
        old_rule = "no pre-existing test file changed"
    else:
        old_rule = "weakened" if weakened else "met"

    # skips
    allowed = set(rules.allow_skip)
    skipped = [test_id for test_id in newly_skipped
               if not (ids_of(after_ids[test_id], touched.layout.file_prefix) & allowed if test_id in after_ids else test_id in allowed)]
    if skipped:
        problems.setdefault(FailureKind.TESTS_SKIPPED, []).append(
            "tests that passed in the baseline are skipped now: " + _ids(skipped)
            + "; make them pass, or list them in allow_skip")

    data: dict[str, Any] = {
        "test_files": list(touched.test_files),
        "touched": touched_ids,
        "runs": [run.to_dict() for run in (f2p, old_tests) if run is not None],
        "tests": tests,
        "fail_to_pass": f2p_ids,
        "fixed": fixed_alone,
        "rules": {"f2p": f2p_rule, "acceptance": ("failed" if FailureKind.ACCEPTANCE_FAILED in problems else "met")
                  if acceptance else "none", "old_tests": old_rule, "skips": "violated" if skipped else "met"},
    }
    if acceptance:
        data["acceptance"] = acceptance
    if weakened:
        data["weakened"] = weakened
        data["diffs"] = {path: diff for path, diff in (diffs or {}).items()
                         if any(w["file"] == path for w in weakened)}
    if skipped:
        data["skipped"] = skipped
    data["summary"] = _summary(data, f2p_ids, fixed_alone, rules)
    ordered = [(kind.value, reason) for kind in RULE_ORDER for reason in problems.get(kind, [])]
    return Evidence(data, ordered)


def _summary(data: dict[str, Any], f2p_ids: Sequence[str], fixed: Sequence[str], rules: Rules) -> str:
    """One line: "f2p: 2 tests fail before, pass after; old tests pass on the new code"."""
    parts = []
    if f2p_ids or fixed:
        said = []
        if f2p_ids:
            said.append(f"{_count(f2p_ids, 'test')} fail before, pass after")
        if fixed:
            said.append(f"{_count(fixed, 'baseline failure')} fixed")
        parts.append("f2p: " + ", ".join(said))
    else:
        parts.append("f2p: none" + ("" if rules.f2p_required else " (not required)"))
    if data["rules"]["old_tests"] in ("met", "weakened"):
        parts.append("old tests pass on the new code" if data["rules"]["old_tests"] == "met"
                     else f"{_count(data['weakened'], 'old test')} weakened")
    if "acceptance" in data:
        ok = sum("problem" not in entry for entry in data["acceptance"])
        parts.append(f"acceptance {ok}/{len(data['acceptance'])}")
    if data.get("skipped"):
        parts.append(f"{_count(data['skipped'], 'test')} newly skipped")
    return "; ".join(parts)


def _count(items: Sequence[Any], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _ids(test_ids: Sequence[str]) -> str:
    shown = ", ".join(test_ids[:IDS_SHOWN])
    hidden = len(test_ids) - IDS_SHOWN
    return f"{shown} (+{hidden} more)" if hidden > 0 else shown
