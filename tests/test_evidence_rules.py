"""The goal-evidence rules themselves (autopack.domain.evidence), on hand-made reports: which
files are tests for each toolchain, where a file-less test id lives, and the judge's edge cases."""

from __future__ import annotations

import pytest

from autopack.domain.evidence import RunRecord, Rules, judge
from autopack.domain.test_files import Change, Layout, belongs_to, has_inline_tests, is_test_file, touched_tests
from autopack.junit import TestOutcome
from autopack.testrun import TestReport


@pytest.mark.parametrize("path, expected", [
    ("tests/test_ops.py", True), ("test_ops.py", True), ("pkg/ops_test.py", True), ("tests/conftest.py", True),
    ("tests/data/cases.json", True), ("pkg/testing.py", False), ("pkg/ops.py", False), ("contest.py", False),
    ("src/ops.test.ts", True), ("src/ops.spec.js", True), ("src/__tests__/ops.js", True), ("test/ops.mjs", True),
    ("src/ops.ts", False), ("latest.js", False),
    ("calc/ops_test.go", True), ("calc/testdata/golden.txt", True), ("calc/ops.go", False),
    ("tests/ops.rs", True), ("src/ops.rs", False),
    ("src/test/java/com/x/OpsTest.java", True), ("src/main/java/com/x/Ops.java", False),
    ("shop/tests.py", True), ("src/main/java/com/x/OpsIT.java", True),
    ("README.md", False), ("docs/testing.md", False),
])
def test_test_files_follow_each_toolchains_naming(path: str, expected: bool) -> None:
    assert is_test_file(path) is expected


def test_a_rust_source_with_a_test_module_holds_tests() -> None:
    assert has_inline_tests("src/ops.rs", "pub fn add() {}\n#[cfg(test)]\nmod tests {}\n")
    assert not has_inline_tests("src/ops.rs", "pub fn add() {}\n")
    assert not has_inline_tests("src/ops.py", "#[cfg(test)]")


@pytest.mark.parametrize("test_id, path, layout, expected", [
    ("example.com/calc::TestMul", "mul_test.go", Layout("example.com/calc", {"mul_test.go": frozenset({"TestMul"})}), True),
    ("example.com/calc::TestMul/negative", "mul_test.go", Layout("example.com/calc", {"mul_test.go": frozenset({"TestMul"})}), True),
    ("example.com/calc::TestAdd", "mul_test.go", Layout("example.com/calc", {"mul_test.go": frozenset({"TestMul"})}), False),
    ("example.com/calc/sub::TestX", "sub/x_test.go", Layout("example.com/calc"), True),
    ("example.com/calc::TestX", "sub/x_test.go", Layout("example.com/calc"), False),
    ("com.x.OpsTest::adds", "src/test/java/com/x/OpsTest.java", Layout(), True),
    ("com.x.OpsTest$Nested::adds", "src/test/java/com/x/OpsTest.java", Layout(), True),
    ("com.y.OpsTest::adds", "src/test/java/com/x/OpsTest.java", Layout(), False),
    ("ops (tests/ops.rs)::adds", "tests/ops.rs", Layout(), True),
    ("calc (src/lib.rs)::ops::tests::adds", "src/ops.rs", Layout(), True),
    ("calc (src/lib.rs)::other::tests::adds", "src/ops.rs", Layout(), False),
])
def test_a_file_less_test_id_is_placed_by_its_shape(test_id, path, layout, expected) -> None:
    assert belongs_to(TestOutcome(test_id, "passed"), [path], layout) is expected


def report(*outcomes: tuple[str, str], timed_out: bool = False, file: str = "tests/test_x.py",
           errors: tuple[str, ...] = ()) -> TestReport:
    """A pytest-like report: (id, outcome) pairs in ``file``; ``errors``: files that failed to collect."""
    tests = tuple(TestOutcome(test_id, outcome, file) for test_id, outcome in outcomes)
    tests += tuple(TestOutcome(path, "error", path, "ImportError: cannot import name", collection_error=True)
                   for path in errors)
    return TestReport("pytest", 1, timed_out, 1.0, tests, "", 0, False, None)


REQUIRED = Rules(f2p_required=True, tests_may_change=False)
ADDED = [Change("A", "tests/test_x.py")]


def judged(baseline: TestReport, after: TestReport, f2p: TestReport | None, rules: Rules = REQUIRED,
           changes=ADDED, fixed=(), newly_skipped=(), old: TestReport | None = None):
    touched = touched_tests(changes, [], baseline.by_id(), after.outcomes)
    return judge(rules, touched, baseline, after, fixed, newly_skipped,
                 RunRecord("f2p", "t1", (), f2p) if f2p is not None else None,
                 RunRecord("old_tests", "t2", (), old) if old is not None else None)


def test_a_test_whose_file_cannot_be_collected_at_the_base_errors_there() -> None:
    found = judged(report(), report(("tests.test_x::t", "passed")), report(errors=("tests/test_x.py",)))
    assert found.data["tests"] == [{"id": "tests.test_x::t", "before": "error", "after": "passed"}]
    assert found.failure_kind is None


def test_a_fail_to_pass_run_that_timed_out_counts_the_hung_tests_as_failing_there() -> None:
    found = judged(report(), report(("tests.test_x::t", "passed")), report(timed_out=True))
    assert found.data["tests"] == [{"id": "tests.test_x::t", "before": "failed", "after": "passed"}]
    assert found.data["fail_to_pass"] == ["tests.test_x::t"]


def test_one_touched_test_failing_after_denies_the_evidence_of_the_others() -> None:
    baseline = report(("tests.test_x::old", "failed"))
    after = report(("tests.test_x::old", "failed"), ("tests.test_x::new", "passed"))
    found = judged(baseline, after, report(("tests.test_x::old", "failed"), ("tests.test_x::new", "failed")),
                   changes=[Change("M", "tests/test_x.py")])
    assert found.failure_kind == "no_goal_evidence"
    assert "touched tests fail on the new code: tests.test_x::old" in found.reasons[0]


def test_missing_evidence_is_recorded_but_does_not_fail_where_it_is_not_required() -> None:
    same = report(("tests.test_x::t", "passed"))
    found = judged(report(), same, same, rules=Rules(f2p_required=False, tests_may_change=False))
    assert found.failure_kind is None and found.data["rules"]["f2p"] == "not required"


def test_a_baseline_skipped_test_may_stay_skipped_and_an_allowed_skip_is_named_by_node_id() -> None:
    after = report(("tests.test_x::t", "skipped"))
    rules = Rules(f2p_required=False, tests_may_change=False, allow_skip=("tests/test_x.py::t",))
    assert judged(report(("tests.test_x::t", "skipped")), after, None, rules, changes=[]).failure_kind is None
    assert judged(report(("tests.test_x::t", "passed")), after, None, rules, changes=[],
                  newly_skipped=("tests.test_x::t",)).failure_kind is None
    strict = Rules(f2p_required=False, tests_may_change=False)
    assert judged(report(("tests.test_x::t", "passed")), after, None, strict, changes=[],
                  newly_skipped=("tests.test_x::t",)).failure_kind == "tests_skipped"


def test_weakening_wins_over_the_other_rules_and_an_unloadable_base_file_is_weakened_too() -> None:
    baseline = report(("tests.test_x::t", "passed"))
    after = report(("tests.test_x::t", "passed"))
    old = report(errors=("tests/test_x.py",))
    found = judged(baseline, after, report(("tests.test_x::t", "passed")), changes=[Change("M", "tests/test_x.py")],
                   old=old, newly_skipped=())
    assert [kind for kind, _ in found.problems] == ["tests_weakened", "no_goal_evidence"]
    assert found.data["weakened"][0]["base_version"] == "error"


def test_a_run_at_the_base_that_stopped_before_any_test_is_no_evidence() -> None:
    stopped = TestReport("pytest", 4, False, 1.0, (TestOutcome("build::pytest", "error", None, "usage error",
                                                               collection_error=True),), "", 0, False, None)
    found = judged(report(), report(("tests.test_x::t", "passed")), stopped)
    assert found.data["tests"][0]["before"] == "unknown" and found.failure_kind == "no_goal_evidence"
    assert "stopped before it could show tests.test_x::t" in found.reasons[0]


def test_a_conftest_that_cannot_be_imported_at_the_base_errors_the_tests_below_it() -> None:
    broken = report(errors=("tests/conftest.py",))
    found = judged(report(), report(("tests.test_x::t", "passed")), broken,
                   changes=[Change("A", "tests/test_x.py"), Change("M", "tests/conftest.py")])
    assert found.data["tests"][0]["before"] == "error" and found.failure_kind is None
    elsewhere = judged(report(), report(("tests.test_x::t", "passed")), report(errors=("other/conftest.py",)),
                       changes=[Change("A", "tests/test_x.py"), Change("M", "other/conftest.py")])
    assert elsewhere.data["tests"][0]["before"] == "unknown"
