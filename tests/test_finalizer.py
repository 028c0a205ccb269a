"""The finalizer's verdicts: one case per rule in DESIGN.md's "Finalizer rules"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopack.finalizer import Decision, decide, missing_deliverables, new_failures_to_confirm
from autopack.testrun import TestOutcome, TestReport

CONTRACT_DELTA_KEYS = {"new_failures", "fixed", "still_failing", "removed", "flaky", "collection_errors"}


def report(
    outcomes: dict[str, str] | None = None,
    *,
    exit_code: int | None = None,
    timed_out: bool = False,
    junit_error: str | None = None,
    collection_errors: tuple[str, ...] = (),
) -> TestReport:
    """A report from {test_id: outcome}; exit code 1 when anything failed, else 0."""
    outcomes = dict(outcomes or {})
    items = [TestOutcome(test_id, outcome) for test_id, outcome in outcomes.items()]
    items += [TestOutcome(test_id, "error", collection_error=True) for test_id in collection_errors]
    if exit_code is None and not timed_out:
        exit_code = 1 if any(item.outcome in ("failed", "error") for item in items) else 0
    return TestReport(
        command="python -m pytest",
        exit_code=exit_code,
        timed_out=timed_out,
        duration_s=1.0,
        outcomes=tuple(items),
        output_tail="",
        output_bytes=0,
        output_truncated=False,
        junit_error=junit_error,
    )


BASELINE = report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"})


def judge(now: TestReport, *, baseline: TestReport = BASELINE, rerun: TestReport | None = None,
          files_changed: int = 2, missing: tuple[str, ...] = (), allow_noop: bool = False) -> Decision:
    return decide(baseline, now, rerun=rerun, files_changed=files_changed,
                  deliverables_missing=missing, allow_noop=allow_noop)


CASES = {
    "baseline failure still failing is allowed": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"})),
        "complete", None, {"still_failing": ["t::old_bug"]},
    ),
    "fixed test is recorded": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "passed"})),
        "complete", None, {"fixed": ["t::old_bug"]},
    ),
    "regression confirmed by re-run blocks": (
        dict(now=report({"t::a": "failed", "t::b": "passed", "t::old_bug": "failed"}),
             rerun=report({"t::a": "failed"})),
        "failed", "regression", {"new_failures": ["t::a"]},
    ),
    "regression without a re-run blocks": (
        dict(now=report({"t::a": "error", "t::b": "passed", "t::old_bug": "failed"})),
        "failed", "regression", {"new_failures": ["t::a"]},
    ),
    "re-run lacking the test counts as regression": (
        dict(now=report({"t::a": "failed", "t::b": "passed", "t::old_bug": "failed"}),
             rerun=report({"t::b": "passed"})),
        "failed", "regression", {"new_failures": ["t::a"]},
    ),
    "flaky test passing on re-run does not block": (
        dict(now=report({"t::a": "failed", "t::b": "passed", "t::old_bug": "failed"}),
             rerun=report({"t::a": "passed"})),
        "complete", None, {"flaky": ["t::a"], "new_failures": []},
    ),
    "new test that fails is a failure": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed", "t::new": "failed"}),
             rerun=report({"t::new": "failed"})),
        "failed", "regression", {"new_failures": ["t::new"], "added": ["t::new"]},
    ),
    "new test that passes is added": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed", "t::new": "passed"})),
        "complete", None, {"added": ["t::new"]},
    ),
    "removed passing test blocks": (
        dict(now=report({"t::a": "passed", "t::old_bug": "failed"})),
        "failed", "tests_removed", {"removed": ["t::b"]},
    ),
    "newly skipped is recorded, not blocking": (
        dict(now=report({"t::a": "passed", "t::b": "skipped", "t::old_bug": "failed"})),
        "complete", None, {"newly_skipped": ["t::b"]},
    ),
    "collection error in baseline too is allowed": (
        dict(baseline=report({"t::a": "passed"}, collection_errors=("tests.test_broken",)),
             now=report({"t::a": "passed"}, collection_errors=("tests.test_broken",))),
        "complete", None, {"collection_errors": [], "still_failing": ["tests.test_broken"]},
    ),
    "new collection error blocks": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"},
                        collection_errors=("tests.test_new",))),
        "failed", "collection_error", {"collection_errors": ["tests.test_new"], "new_failures": []},
    ),
    "nothing applied blocks": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"}), files_changed=0),
        "failed", "no_op", {},
    ),
    "nothing applied is fine with allow_noop": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"}), files_changed=0,
             allow_noop=True),
        "complete", None, {},
    ),
    "empty report blocks": (
        dict(baseline=report({}), now=report({}, exit_code=5)),
        "failed", "report_invalid", {},
    ),
    "junit error blocks": (
        dict(now=report({}, exit_code=1, junit_error="no JUnit XML was written")),
        "failed", "report_invalid", {"removed": []},
    ),
    "exit 0 with failures contradicts": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"}, exit_code=0)),
        "failed", "report_invalid", {},
    ),
    "non-zero exit without failures contradicts": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "passed"}, exit_code=3)),
        "failed", "report_invalid", {},
    ),
    "timeout blocks": (
        dict(now=report({}, timed_out=True, junit_error="no JUnit XML was written")),
        "failed", "timeout", {"removed": []},
    ),
    "missing deliverables block": (
        dict(now=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"}),
             missing=("docs/", "src/power.py")),
        "failed", "deliverables_missing", {},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rule(name: str) -> None:
    arguments, verdict, failure_kind, expected_delta = CASES[name]
    decision = judge(**arguments)
    assert decision.verdict == verdict, decision.reasons
    assert decision.failure_kind == failure_kind
    assert decision.reasons, "every decision explains itself"
    delta = decision.delta.to_dict()
    for key, ids in expected_delta.items():
        assert delta[key] == ids, key


def test_failure_kind_follows_priority_and_every_rule_gives_a_reason() -> None:
    now = report({"t::a": "failed", "t::old_bug": "failed"}, collection_errors=("tests.test_x",))
    decision = judge(now, files_changed=0, missing=("README.md",))
    assert decision.failure_kind == "collection_error"
    assert len(decision.reasons) == 5  # collection error, regression, removed, deliverables, no-op
    assert "tests.test_x" in decision.reasons[0]
    assert "t::a" in decision.reasons[1]
    assert "t::b" in decision.reasons[2]
    assert "README.md" in decision.reasons[3]
    assert "nothing was applied" in decision.reasons[4]


def test_complete_reason_explains_the_pass() -> None:
    now = report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed", "t::c": "passed"})
    baseline = report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed", "t::c": "failed"})
    decision = judge(now, baseline=baseline)
    assert decision.reasons[0] == "no regressions: 3 passed, 1 failed (1 already failing in baseline), 1 fixed"


def test_reasons_name_at_most_five_tests() -> None:
    baseline = report({f"t::test_{i}": "passed" for i in range(8)})
    decision = judge(report({}, exit_code=5), baseline=baseline)
    removed_reason = next(reason for reason in decision.reasons if "gone" in reason)
    assert "t::test_4" in removed_reason and "t::test_5" not in removed_reason
    assert removed_reason.endswith("(+3 more)")
    assert len(decision.delta.removed) == 8


def test_decision_json_has_contract_shape() -> None:
    decision = judge(report({"t::a": "passed", "t::b": "failed", "t::old_bug": "failed"}))
    data = json.loads(json.dumps(decision.to_dict()))
    assert set(data) == {"verdict", "reasons", "delta", "failure_kind", "absolute"}
    assert CONTRACT_DELTA_KEYS <= set(data["delta"])
    assert data["delta"]["new_failures"] == ["t::b"]
    assert data["absolute"] == {"exit_code": 1, "timed_out": False, "passed": 1, "failed": 2,
                                "error": 0, "skipped": 0, "total": 3}


def test_tests_to_confirm_are_new_failures_only() -> None:
    now = report({"t::a": "failed", "t::b": "passed", "t::old_bug": "error", "t::new": "error"},
                 collection_errors=("tests.test_x",))
    assert [o.test_id for o in new_failures_to_confirm(BASELINE, now)] == ["t::a", "t::new"]


def test_missing_deliverables(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "power.py").write_text("x = 1\n")
    (tmp_path / "docs" / "empty").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_power.py").write_text("")
    (tmp_path / "notes.md").mkdir()  # a directory is not the file deliverable
    wanted = ["src/power.py", "tests/", "docs/", "notes.md", "CHANGELOG.md", "src/power.py/"]
    assert missing_deliverables(tmp_path, wanted) == ["docs/", "notes.md", "CHANGELOG.md", "src/power.py/"]
