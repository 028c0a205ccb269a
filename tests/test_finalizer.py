"""The finalizer's verdicts: one case per rule in DESIGN.md's "Finalizer rules"; how suspects are re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopack.finalizer import Decision, confirmed_report, decide, missing_deliverables, new_failures_to_confirm
from autopack.testrun import TestOutcome, TestReport

CONTRACT_DELTA_KEYS = {"new_failures", "fixed", "still_failing", "removed", "flaky", "collection_errors"}


def report(
    outcomes: dict[str, str] | None = None,
    *,
    exit_code: int | None = None,
    timed_out: bool = False,
    junit_error: str | None = None,
    collection_errors: tuple[str, ...] = (),
    files: dict[str, str] | None = None,
    messages: dict[str, str] | None = None,
) -> TestReport:
    """A report from {test_id: outcome}; exit code 1 when anything failed, else 0. ``files`` and
    ``messages`` give a test's (or collection error's) file and message."""
    outcomes = dict(outcomes or {})
    files, messages = files or {}, messages or {}
    items = [TestOutcome(test_id, outcome, file=files.get(test_id), message=messages.get(test_id, ""))
             for test_id, outcome in outcomes.items()]
    items += [TestOutcome(test_id, "error", file=files.get(test_id), message=messages.get(test_id, ""),
                          collection_error=True) for test_id in collection_errors]
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
          rerun_alone: TestReport | None = None, files_changed: int = 2, missing: tuple[str, ...] = (),
          allow_noop: bool = False) -> Decision:
    alone = {} if rerun_alone is None else {"rerun_alone": rerun_alone}
    return decide(baseline, now, rerun=rerun, files_changed=files_changed, deliverables_missing=missing,
                  allow_noop=allow_noop, **alone)


A_FAILS = report({"t::a": "failed", "t::b": "passed", "t::old_bug": "failed"})
MODULE_TESTS = report({"t::a": "passed", "tests.test_x::test_1": "passed", "tests.test_x.TestK::test_2": "passed",
                       "tests.test_y::test_3": "passed"})


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
    "passing only when re-run alone is not flaky": (
        dict(now=A_FAILS, rerun_alone=report({"t::a": "passed"})),
        "failed", "regression", {"new_failures": ["t::a"], "flaky": [], "order_dependent": []},
    ),
    "passing alone but failing again in the whole suite is order-dependent": (
        dict(now=A_FAILS, rerun_alone=report({"t::a": "passed"}), rerun=A_FAILS),
        "failed", "regression", {"new_failures": ["t::a"], "flaky": [], "order_dependent": ["t::a"]},
    ),
    "failing alone is a regression without a whole-suite re-run": (
        dict(now=A_FAILS, rerun_alone=report({"t::a": "failed"})),
        "failed", "regression", {"new_failures": ["t::a"], "order_dependent": []},
    ),
    "passing when the whole suite is re-run is flaky": (
        dict(now=A_FAILS, rerun_alone=report({"t::a": "passed"}), rerun=report({"t::a": "passed", "t::b": "passed"})),
        "complete", None, {"flaky": ["t::a"], "new_failures": [], "order_dependent": []},
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
    "a module's collection error hides its tests: not removed": (
        dict(baseline=MODULE_TESTS,
             now=report({"t::a": "passed", "tests.test_y::test_3": "passed"}, collection_errors=("tests.test_x",))),
        "failed", "collection_error",
        {"removed": [], "not_collected": ["tests.test_x::test_1", "tests.test_x.TestK::test_2"]},
    ),
    "a collection error hides the tests of its file or directory": (
        dict(baseline=report({"t::a": "passed", "tests.sub.test_s::test_1": "passed", "pkg::test_2": "passed"},
                             files={"tests.sub.test_s::test_1": "tests/sub/test_s.py", "pkg::test_2": "pkg/t.py"}),
             now=report({"t::a": "passed"}, collection_errors=("tests.sub", "build::pkg/t.py"),
                        files={"tests.sub": "tests/sub", "build::pkg/t.py": "pkg/t.py"})),
        "failed", "collection_error", {"removed": [], "not_collected": ["tests.sub.test_s::test_1", "pkg::test_2"]},
    ),
    "a test deleted beside a collection error elsewhere is still removed": (
        dict(baseline=MODULE_TESTS,
             now=report({"t::a": "passed", "tests.test_x::test_1": "passed", "tests.test_x.TestK::test_2": "passed"},
                        collection_errors=("tests.test_z",))),
        "failed", "collection_error", {"removed": ["tests.test_y::test_3"], "not_collected": []},
    ),
    "a session stopped before any test (broken conftest) hides every test": (
        dict(now=report({}, exit_code=4, collection_errors=("build::tests/conftest.py",))),
        "failed", "collection_error", {"removed": [], "not_collected": ["t::a", "t::b", "t::old_bug"]},
    ),
    "a session error the baseline had too, with no test run, is an empty report": (
        dict(baseline=report({}, exit_code=4, collection_errors=("build::pytest",)),
             now=report({}, exit_code=4, collection_errors=("build::pytest",))),
        "failed", "report_invalid", {"collection_errors": [], "still_failing": ["build::pytest"]},
    ),
    "a test moved into a class is paired with its new id and still fails": (
        dict(baseline=report({"tests.test_a::test_x": "passed", "tests.test_a::test_y": "passed"}),
             now=report({"tests.test_a.TestA::test_x": "passed", "tests.test_a::test_y": "passed"})),
        "failed", "tests_removed",
        {"removed": ["tests.test_a::test_x"], "added": ["tests.test_a.TestA::test_x"],
         "moved": [["tests.test_a::test_x", "tests.test_a.TestA::test_x"]]},
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
    assert decision.reasons[0] == "no regressions: 3 passed, 1 failed (already failing in baseline), 1 fixed"


def test_a_completion_with_a_flaky_test_says_flaky_not_failed() -> None:
    decision = judge(A_FAILS, rerun=report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"}))
    assert decision.verdict == "complete"
    assert decision.reasons[0] == ("no regressions: 1 passed, 1 failed (already failing in baseline), "
                                   "1 flaky (passed on re-run)")
    only_flaky = judge(report({"t::a": "failed", "t::b": "passed"}), baseline=report({"t::a": "passed", "t::b": "passed"}),
                       rerun=report({"t::a": "passed", "t::b": "passed"}))
    assert only_flaky.reasons[0] == "no regressions: 1 passed, 1 flaky (passed on re-run)"


@pytest.mark.parametrize("rerun_alone, rerun, words", [
    (None, None, "(not re-run)"),
    ({"t::a": "failed"}, None, "(failed again on re-run)"),
    (None, {"t::a": "error"}, "(failed again on re-run)"),
    ({"t::a": "passed"}, {"t::a": "failed"}, "(order-dependent: they pass when re-run alone and fail again when "
                                             "the whole suite is re-run)"),
    ({"t::a": "passed"}, None, "(passed when re-run alone, not re-run with the whole suite)"),
    (None, {"t::a": "skipped"}, "(skipped on re-run)"),
    ({"t::b": "passed"}, {"t::b": "passed"}, "(missing from the re-run's report)"),
    ({"t::a": "passed"}, "timed out", "(not confirmed: the re-run timed out)"),
])
def test_a_regression_says_what_its_re_runs_showed(rerun_alone, rerun, words) -> None:
    in_suite = report({}, timed_out=True) if rerun == "timed out" else report(rerun) if rerun else None
    decision = judge(A_FAILS, rerun_alone=report(rerun_alone) if rerun_alone else None, rerun=in_suite)
    assert decision.failure_kind == "regression"
    assert decision.reasons == (f"newly failing tests {words}: t::a",)


def test_a_collection_error_names_its_error_line_and_counts_the_hidden_tests() -> None:
    message = ("collection failure\ntests/conftest.py:1: in <module>\n    import pkg\n"
               'E     File "pkg/__init__.py", line 1\nE       def broken(:\nE                  ^\n'
               "E   SyntaxError: invalid syntax")
    now = report({}, exit_code=4, collection_errors=("build::tests/conftest.py",),
                 messages={"build::tests/conftest.py": message})
    decision = judge(now)
    assert decision.reasons == ("new collection/import errors: build::tests/conftest.py (SyntaxError: invalid "
                                "syntax (pkg/__init__.py, line 1)); 3 tests in the broken modules could not run",)
    assert decision.delta.removed == ()


@pytest.mark.parametrize("message, line", [
    ("collection failure\nbad module", "bad module"),
    ("internal error\nTraceback (most recent call last):\n  File \"x.py\", line 3, in hook\n"
     "    raise ValueError('error here')\nValueError: hook broke", "ValueError: hook broke"),
    ("python -m pytest: error: unrecognized arguments: --nope\n  inifile: None\n  rootdir: /p",
     "python -m pytest: error: unrecognized arguments: --nope"),
    ("error[E0425]: cannot find value `y` in this scope\n --> src/lib.rs:2:5\nerror: could not compile `calc`",
     "error[E0425]: cannot find value `y` in this scope"),
    ("E   ModuleNotFoundError: No module named 'requests'", "ModuleNotFoundError: No module named 'requests'"),
    ("", ""),
])
def test_the_error_line_of_a_collection_error(message, line) -> None:
    now = report({"t::a": "passed", "t::b": "passed", "t::old_bug": "failed"}, collection_errors=("m",),
                 messages={"m": message})
    expected = f"m ({line})" if line else "m"
    assert judge(now).reasons[0] == f"new collection/import errors: {expected}"


def test_confirmed_report_takes_the_whole_suite_re_runs_passes() -> None:
    first = report({"t::a": "failed", "t::b": "passed", "t::old_bug": "failed", "t::c": "error"},
                   collection_errors=("tests.test_x",))
    again = report({"t::a": "passed", "t::b": "failed", "t::old_bug": "failed", "t::c": "passed",
                    "tests.test_x": "passed"})
    confirmed = confirmed_report(first, again)
    assert {o.test_id: o.outcome for o in confirmed.outcomes} == {
        "t::a": "passed", "t::b": "passed", "t::old_bug": "failed", "t::c": "passed", "tests.test_x": "error"}
    assert confirmed.exit_code == first.exit_code and confirmed.command == first.command
    assert confirmed_report(first, None) is first
    assert confirmed_report(BASELINE, BASELINE) is BASELINE


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
    assert all(isinstance(data["delta"][key], list) for key in data["delta"])
    assert data["delta"]["new_failures"] == ["t::b"]
    assert data["absolute"] == {"exit_code": 1, "timed_out": False, "passed": 1, "failed": 2,
                                "error": 0, "skipped": 0, "total": 3}


def test_tests_to_confirm_are_new_failures_only() -> None:
    now = report({"t::a": "failed", "t::b": "passed", "t::old_bug": "error", "t::new": "error"},
                 collection_errors=("tests.test_x",))
    assert [o.test_id for o in new_failures_to_confirm(BASELINE, now)] == ["t::a", "t::new"]
    assert [o.test_id for o in new_failures_to_confirm(None, now)] == ["t::a", "t::old_bug", "t::new"]


def test_missing_deliverables(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "power.py").write_text("x = 1\n")
    (tmp_path / "docs" / "empty").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_power.py").write_text("")
    (tmp_path / "notes.md").mkdir()  # a directory is not the file deliverable
    wanted = ["src/power.py", "tests/", "docs/", "notes.md", "CHANGELOG.md", "src/power.py/"]
    assert missing_deliverables(tmp_path, wanted) == ["docs/", "notes.md", "CHANGELOG.md", "src/power.py/"]


SUSPECTS = (TestOutcome("tests.test_b::test_one", "failed", file="tests/test_b.py"),
            TestOutcome("tests.test_b.TestK::test_two[1]", "error", file="tests/test_b.py"))


@pytest.mark.parametrize("pytest_command, suspects, alone, runs", [
    (True, SUSPECTS, {"tests.test_b::test_one": "failed", "tests.test_b.TestK::test_two[1]": "error"},
     [("rerun", ("tests/test_b.py::test_one", "tests/test_b.py::TestK::test_two[1]"))]),
    (True, SUSPECTS, {"tests.test_b::test_one": "failed", "tests.test_b.TestK::test_two[1]": "passed"},
     [("rerun", ("tests/test_b.py::test_one", "tests/test_b.py::TestK::test_two[1]")), ("rerun_suite", ())]),
    (True, SUSPECTS, {"tests.test_b::test_one": "failed"},  # one missing from the re-run alone
     [("rerun", ("tests/test_b.py::test_one", "tests/test_b.py::TestK::test_two[1]")), ("rerun_suite", ())]),
    (True, (TestOutcome("mod::test_x", "failed"),), {}, [("rerun_suite", ())]),  # no file: cannot be named
    (False, SUSPECTS, {}, [("rerun_suite", ())]),  # other runners cannot select tests
    (True, (), {}, []),
], ids=["all-fail-alone", "one-passes-alone", "one-missing-alone", "unnamed", "not-pytest", "no-suspects"])
def test_suspects_are_re_run_alone_then_in_the_whole_suite_unless_all_fail_again(pytest_command, suspects, alone,
                                                                                  runs) -> None:
    from autopack.confirm import rerun_suspects

    made: list[tuple[str, tuple[str, ...]]] = []

    def run(kind: str, select: tuple[str, ...]) -> TestReport:
        made.append((kind, select))
        return report(alone if select else {"tests.test_b::test_one": "failed"})

    reruns = rerun_suspects(suspects, run, pytest=pytest_command)
    assert made == runs
    kinds = [kind for kind, _ in runs]
    assert (reruns.alone is not None, reruns.in_suite is not None) == ("rerun" in kinds, "rerun_suite" in kinds)
