"""Test commands and per-test results beyond pytest: detection, JUnit dialects, converters,
build errors, and real Node / Rust / Maven / Go projects judged by the finalizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from autopack.errors import UsageError
from autopack.finalizer import decide
from autopack.plan import load_plan
from autopack.testoutput import build_errors, convert_output
from autopack.testrun import TestReport, parse_junit, run_tests
from autopack.toolchains import TestCommand, ecosystem_of, resolve_test_command

FIXTURES = Path(__file__).parent / "fixtures" / "toolchains"


def make(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run(root: Path, test: TestCommand, env: dict[str, str] | None = None, name: str = "run") -> TestReport:
    artifacts = root.parent / f"{root.name}-artifacts"
    return run_tests(test.command, root, timeout_s=300, log_path=artifacts / f"{name}.log",
                     junit_path=artifacts / f"{name}.xml", junit_xml=test.junit_xml,
                     converter=test.converter, ecosystem=test.ecosystem,
                     env={**os.environ, **(env or {})})


def judge(baseline: TestReport, report: TestReport):
    return decide(baseline, report, rerun=None, files_changed=1, deliverables_missing=(), allow_noop=False)


# --- detection ----------------------------------------------------------------------


def package_json(test_script: str | None = None, **extra: object) -> str:
    data: dict[str, object] = {"name": "p", "version": "1.0.0", **extra}
    if test_script is not None:
        data["scripts"] = {"test": test_script}
    return json.dumps(data)


@pytest.mark.parametrize(
    "files, ecosystem, command, junit_xml, converter",
    [
        ({"pyproject.toml": ""}, "python", "python -m pytest -q", None, None),
        ({"package.json": package_json()}, "node", "node --test --test-reporter=spec", None, None),
        ({"package.json": package_json('echo "Error: no test specified" && exit 1')}, "node",
         "node --test", None, None),
        ({"package.json": package_json("vitest run")}, "node", "--reporter=junit", None, None),
        ({"package.json": package_json("jest", devDependencies={"jest": "^29", "jest-junit": "^16"})},
         "node", "--reporters=jest-junit", None, None),
        ({"package.json": package_json("node --test test/*.test.js")}, "node",
         'NODE_OPTIONS="$NODE_OPTIONS --test-reporter=spec', None, None),
        ({"go.mod": "module x\n"}, "go", "go test -json ./...", None, "go-test-json"),
        ({"Cargo.toml": "[package]\n"}, "rust", "cargo test --no-fail-fast", None, "libtest"),
        ({"pom.xml": "<project/>"}, "java-maven", "mvn -B -fae test",
         "**/target/surefire-reports/TEST-*.xml", None),
        ({"pom.xml": "<project/>", "mvnw": ""}, "java-maven", "./mvnw -B -fae test",
         "**/target/surefire-reports/TEST-*.xml", None),
        ({"build.gradle.kts": ""}, "java-gradle", "gradle test --continue",
         "**/build/test-results/test/TEST-*.xml", None),
        ({"settings.gradle": "", "gradlew": ""}, "java-gradle", "./gradlew test --continue",
         "**/build/test-results/test/TEST-*.xml", None),
        ({"README.md": "hello"}, "python", "python -m pytest -q", None, None),
    ],
)
def test_detection_picks_a_command_that_yields_per_test_results(
    tmp_path, monkeypatch, files, ecosystem, command, junit_xml, converter
):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no gotestsum, no cargo-nextest
    test = resolve_test_command(make(tmp_path, files), None, None)
    assert (test.ecosystem, test.junit_xml, test.converter) == (ecosystem, junit_xml, converter)
    assert command in test.command
    assert test.reason


def test_detection_uses_gotestsum_and_a_nextest_junit_profile_when_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    go = resolve_test_command(make(tmp_path / "go", {"go.mod": "module x\n"}), None, None)
    assert go.command == 'gotestsum --junitfile "$AUTOPACK_JUNIT_FILE" -- ./...'
    assert go.converter is None and "gotestsum" in go.reason

    rust = make(tmp_path / "rust", {"Cargo.toml": "[package]\n"})
    assert resolve_test_command(rust, None, None).converter == "libtest"  # nextest without a JUnit profile
    make(rust, {".config/nextest.toml": '[profile.ci.junit]\npath = "junit.xml"\n'})
    nextest = resolve_test_command(rust, None, None)
    assert nextest.command == "cargo nextest run --no-fail-fast --profile ci"
    assert nextest.junit_xml == "target/nextest/ci/junit.xml" and nextest.converter is None


def test_the_first_toolchain_wins_and_the_reason_names_the_others(tmp_path):
    root = make(tmp_path, {"pyproject.toml": "", "package.json": package_json(), "go.mod": "module x\n"})
    test = resolve_test_command(root, None, None)
    assert test.ecosystem == "python"
    assert "also found node, go" in test.reason and "run.test_command" in test.reason


@pytest.mark.parametrize(
    "script, needle",
    [("jest --coverage", "jest-junit"), ("mocha", "run.test_command and run.junit_xml")],
)
def test_node_scripts_without_a_junit_reporter_are_refused_with_what_to_do(tmp_path, script, needle):
    root = make(tmp_path, {"package.json": package_json(script)})
    with pytest.raises(UsageError, match=needle):
        resolve_test_command(root, None, None)


def test_an_unreadable_package_json_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="package.json: cannot read it as JSON"):
        resolve_test_command(make(tmp_path, {"package.json": "{nope"}), None, None)


def test_an_explicit_command_always_wins(tmp_path):
    root = make(tmp_path, {"package.json": package_json("mocha"), "Cargo.toml": ""})
    explicit = resolve_test_command(root, "mvn -o test", "target/surefire-reports")
    assert explicit == TestCommand("mvn -o test", "target/surefire-reports", "java-maven",
                                   explicit.reason, None)
    assert "set in the plan" in explicit.reason
    assert resolve_test_command(root, "cargo test -q", None).converter == "libtest"
    assert resolve_test_command(root, "go test -json ./...", None).converter == "go-test-json"
    plain_go = resolve_test_command(root, "go test ./...", None)
    assert plain_go.converter is None and "$AUTOPACK_JUNIT_FILE" in plain_go.reason
    assert resolve_test_command(root, "uv run pytest -x", None).ecosystem == "python"
    with pytest.raises(UsageError, match="run.junit_xml .* run.test_command is not set"):
        resolve_test_command(root, None, "reports/junit.xml")


@pytest.mark.parametrize(
    "command, ecosystem",
    [("./gradlew test", "java-gradle"), ("cd api && npx vitest run", "node"), ("CI=1 cargo test", "rust"),
     ("make test", "custom"), ("python3 -m pytest", "python"), ("gotestsum -- ./...", "go")],
)
def test_ecosystem_of_a_hand_written_command(command, ecosystem):
    assert ecosystem_of(command) == ecosystem


def test_a_plan_without_test_command_leaves_it_to_detection(tmp_path):
    body = '[run]\nid = "r"\ngoal = "g"\n{extra}\n[[phases]]\nid = "a"\ngoal = "x"\n'
    (tmp_path / "detect.toml").write_text(body.format(extra=""))
    (tmp_path / "set.toml").write_text(body.format(extra='test_command = "cargo test"'))
    detect, explicit = load_plan(tmp_path / "detect.toml"), load_plan(tmp_path / "set.toml")
    assert detect.run.test_command is None and "test_command" not in detect.to_dict()["run"]
    assert explicit.run.test_command == "cargo test" and explicit.to_dict()["run"]["test_command"] == "cargo test"


# --- JUnit reports and build output of each ecosystem -------------------------------

SUREFIRE = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="{cls}" tests="2" failures="{failures}" errors="0" skipped="0">
  <testcase name="adds" classname="{cls}" time="0.01"/>
  <testcase name="subtracts" classname="{cls}" time="0.01">{failure}</testcase>
</testsuite>
"""

MAVEN_COMPILE_ERROR = """\
[INFO] --- maven-compiler-plugin:3.11.0:compile (default-compile) @ api ---
[ERROR] COMPILATION ERROR :
[ERROR] {root}/api/src/main/java/calc/Ops.java:[7,20] incompatible types: java.lang.String cannot be converted to int
[INFO] 1 error
[INFO] BUILD FAILURE
[ERROR] Failed to execute goal org.apache.maven.plugins:maven-compiler-plugin:3.11.0:compile (default-compile) \
on project api: Compilation failure
[ERROR] {root}/api/src/main/java/calc/Ops.java:[7,20] incompatible types: java.lang.String cannot be converted to int
"""


def surefire(cls: str, failing: bool = False) -> str:
    failure = '<failure message="expected: &lt;1&gt; but was: &lt;2&gt;"/>' if failing else ""
    return SUREFIRE.format(cls=cls, failures=int(failing), failure=failure)


def test_surefire_reports_of_several_modules_are_merged_and_stale_ones_never_read(tmp_path):
    root = make(tmp_path / "repo", {
        "samples/api.xml": surefire("calc.ApiTest"),
        "samples/core.xml": surefire("calc.CoreTest", failing=True),
        "samples/compile.log": MAVEN_COMPILE_ERROR.format(root=tmp_path / "repo"),
    })
    reports = "**/target/surefire-reports/TEST-*.xml"
    write = ("mkdir -p api/target/surefire-reports core/target/surefire-reports"
             " && cp samples/api.xml api/target/surefire-reports/TEST-calc.ApiTest.xml"
             " && cp samples/core.xml core/target/surefire-reports/TEST-calc.CoreTest.xml; exit 1")
    baseline = run(root, TestCommand(write, reports, "java-maven", "t"), name="baseline")
    assert sorted(o.test_id for o in baseline.outcomes) == [
        "calc.ApiTest::adds", "calc.ApiTest::subtracts", "calc.CoreTest::adds", "calc.CoreTest::subtracts"]
    assert baseline.counts()["failed"] == 1

    # A compile failure writes no reports: the previous ones are deleted first, the build error is reported.
    broken = run(root, TestCommand("cat samples/compile.log; exit 1", reports, "java-maven", "t"), name="broken")
    assert [o.test_id for o in broken.outcomes] == ["build::api (compile)"]
    error = broken.outcomes[0]
    assert error.collection_error and error.outcome == "error" and str(root) not in error.message
    assert error.message == ("api/src/main/java/calc/Ops.java:[7,20] incompatible types: "
                             "java.lang.String cannot be converted to int")
    decision = judge(baseline, broken)
    assert decision.verdict == "failed" and decision.failure_kind == "collection_error"
    assert decision.delta.collection_errors == ("build::api (compile)",)


GRADLE_LOG = """\
> Task :app:compileJava FAILED
{root}/app/src/main/java/calc/Ops.java:7: error: incompatible types: String cannot be converted to int
        return a + "b";
               ^
1 error

FAILURE: Build failed with an exception.
* What went wrong:
Execution failed for task ':app:compileJava'.
> Compilation failed; see the compiler error output for details.
"""


def test_gradle_results_directory_and_compile_failure(tmp_path):
    root = make(tmp_path / "repo", {
        "samples/TEST-calc.OpsTest.xml": surefire("calc.OpsTest"),
        "samples/TEST-calc.MoreTest.xml": surefire("calc.MoreTest", failing=True),
        "samples/compile.log": GRADLE_LOG.format(root=tmp_path / "repo"),
    })
    results = "app/build/test-results/test"
    write = f"mkdir -p {results} && cp samples/*.xml {results}/; exit 1"
    report = run(root, TestCommand(write, results, "java-gradle", "t"))
    assert report.counts() == {"passed": 3, "failed": 1, "error": 0, "skipped": 0, "total": 4}

    broken = run(root, TestCommand("cat samples/compile.log; exit 1", results, "java-gradle", "t"))
    assert [(o.test_id, o.collection_error) for o in broken.outcomes] == [("build::app:compileJava", True)]
    assert broken.outcomes[0].message == (
        "app/src/main/java/calc/Ops.java:7: error: incompatible types: String cannot be converted to int")


def test_node_junit_dialects(tmp_path):
    """node's reporter (file attribute of recent releases, nested describe), and file-level
    failures of node, vitest and jest-junit."""
    root = tmp_path / "repo"
    node = f"""<?xml version="1.0" encoding="utf-8"?>
<testsuites>
  <testcase name="adds" time="0.001" classname="test" file="{root}/test/a.test.js"/>
  <testcase name="adds" time="0.001" classname="test" file="{root}/test/b.test.js">
    <failure type="testCodeFailure" message="5 !== 6">AssertionError</failure>
  </testcase>
  <testsuite name="math" tests="1" failures="0" skipped="0">
    <testsuite name="negatives" tests="1" failures="0" skipped="1">
      <testcase name="skips" time="0" classname="test" file="{root}/test/a.test.js">
        <skipped message="later"/>
      </testcase>
    </testsuite>
  </testsuite>
  <testcase name="{root}/test/broken.test.js" time="0.07" classname="test">
    <failure type="testCodeFailure" message="test failed">[Error: test failed]</failure>
  </testcase>
</testsuites>"""
    vitest = """<testsuites name="vitest tests">
  <testsuite name="src/broken.test.ts" tests="1" failures="1">
    <testcase classname="src/broken.test.ts" name="src/broken.test.ts" time="0">
      <failure message="Transform failed with 1 error" type="Error">ERROR: Unexpected ";"</failure>
    </testcase>
  </testsuite>
  <testsuite name="src/ops.test.ts" tests="1">
    <testcase classname="src/ops.test.ts" name="negatives &gt; adds" time="0.001"/>
  </testsuite>
</testsuites>"""
    jest = """<testsuites name="jest tests">
  <testsuite name="__tests__/broken.test.js" errors="1" tests="0">
    <testcase classname="Test suite failed to run" name="__tests__/broken.test.js" time="0">
      <error>SyntaxError: Unexpected token (1:28)</error>
    </testcase>
  </testsuite>
  <testsuite name="undefined" tests="1">
    <testcase classname="__tests__/ops.test.js" name=" adds" time="0.002"/>
  </testsuite>
</testsuites>"""
    make(root, {"node.xml": node, "vitest.xml": vitest, "jest.xml": jest})
    outcomes = {o.test_id: o for o in parse_junit([root / "node.xml", root / "vitest.xml", root / "jest.xml"],
                                                  ecosystem="node", root=root)}
    assert {test_id: (o.outcome, o.collection_error) for test_id, o in outcomes.items()} == {
        "test/a.test.js::adds": ("passed", False),
        "test/b.test.js::adds": ("failed", False),
        "test/a.test.js::math > negatives > skips": ("skipped", False),
        "test/broken.test.js": ("error", True),
        "src/broken.test.ts::src/broken.test.ts": ("error", True),
        "src/ops.test.ts::negatives > adds": ("passed", False),
        "__tests__/broken.test.js": ("error", True),
        "__tests__/ops.test.js::adds": ("passed", False),
    }
    assert outcomes["test/a.test.js::adds"].file == "test/a.test.js"
    # Without the node rules the same report keeps the generic classname::name ids.
    assert {o.test_id for o in parse_junit([root / "node.xml"])} == {
        "test::adds", "test::skips", f"test::{root}/test/broken.test.js"}


def test_typescript_compile_errors_block_like_collection_errors(tmp_path):
    root = tmp_path / "repo"
    tsc = (f"{root}/src/ops.ts(3,5): error TS2322: Type 'string' is not assignable to type 'number'.\n"
           "\x1b[96msrc/util.ts\x1b[0m:\x1b[93m1\x1b[0m:\x1b[93m9\x1b[0m - \x1b[91merror\x1b[0m"
           "\x1b[90m TS2304: \x1b[0mCannot find name 'x'.\n")
    make(root, {"ok.xml": surefire("ops.test.ts"), "tsc.log": tsc})
    passing = run(root, TestCommand('cp ok.xml "$AUTOPACK_JUNIT_FILE"', None, "node", "t"), name="baseline")
    assert passing.junit_error is None and passing.counts()["passed"] == 2
    broken = run(root, TestCommand("cat tsc.log; exit 2", None, "node", "t"), name="tsc")
    assert broken.junit_error is None
    assert [(o.test_id, o.message) for o in broken.outcomes] == [
        ("build::src/ops.ts", "src/ops.ts(3,5): error TS2322: Type 'string' is not assignable to type 'number'."),
        ("build::src/util.ts", "src/util.ts:1:9 - error TS2304: Cannot find name 'x'."),
    ]
    decision = judge(passing, broken)
    assert decision.failure_kind == "collection_error"
    assert set(decision.delta.collection_errors) == {"build::src/ops.ts", "build::src/util.ts"}
    # The tests could not run: hidden by the build errors, not counted as removed.
    assert "ops.test.ts::adds" in decision.delta.not_collected and decision.delta.removed == ()


def test_a_custom_command_can_write_to_autopack_junit_file_and_other_output_is_not_scanned(tmp_path):
    root = make(tmp_path / "repo", {"ok.xml": surefire("Suite")})
    custom = TestCommand('echo "error[E0425]: not a build"; cp ok.xml "$AUTOPACK_JUNIT_FILE"', None, "custom", "t")
    report = run(root, custom)
    assert report.junit_error is None and {o.test_id for o in report.outcomes} == {"Suite::adds", "Suite::subtracts"}
    missing = run(root, TestCommand("true", None, "custom", "t"), name="missing")
    assert missing.outcomes == () and "set junit_xml" in (missing.junit_error or "")


GO_JSON = [
    {"Action": "run", "Package": "x/calc", "Test": "TestAdd"},
    {"Action": "output", "Package": "x/calc", "Test": "TestAdd", "Output": "=== RUN   TestAdd\n"},
    {"Action": "output", "Package": "x/calc", "Test": "TestAdd", "Output": "    ops_test.go:7: got 1\n"},
    {"Action": "fail", "Package": "x/calc", "Test": "TestAdd", "Elapsed": 0},
    {"Action": "run", "Package": "x/calc", "Test": "TestTable/pos"},
    {"Action": "pass", "Package": "x/calc", "Test": "TestTable/pos", "Elapsed": 0},
    {"Action": "run", "Package": "x/calc", "Test": "TestSkip"},
    {"Action": "skip", "Package": "x/calc", "Test": "TestSkip", "Elapsed": 0},
    {"Action": "fail", "Package": "x/calc", "Elapsed": 0.1},
    {"Action": "run", "Package": "x/crash", "Test": "TestPanics"},
    {"Action": "output", "Package": "x/crash", "Output": "panic: boom\n"},
    {"Action": "fail", "Package": "x/crash", "Elapsed": 0.1},
    {"Action": "output", "Package": "x/main", "Output": "FAIL\tx/main\t0.01s\n"},
    {"Action": "fail", "Package": "x/main", "Elapsed": 0.1},
    # go >= 1.24 reports build failures as events
    {"ImportPath": "x/new [x/new.test]", "Action": "build-output", "Output": "new/a.go:3:9: undefined: y\n"},
    {"ImportPath": "x/new [x/new.test]", "Action": "build-fail"},
    {"Action": "output", "Package": "x/new", "Output": "FAIL\tx/new [build failed]\n"},
    {"Action": "fail", "Package": "x/new", "Elapsed": 0, "FailedBuild": "x/new [x/new.test]"},
]
GO_OLD_BUILD_FAILURE = "# x/old [x/old.test]\nold/b.go:5:2: undefined: z\nFAIL\tx/old [build failed]\n"


def test_go_test_json_is_converted_per_test_with_build_failures_as_collection_errors(tmp_path):
    text = "\n".join(json.dumps(event) for event in GO_JSON) + "\n" + GO_OLD_BUILD_FAILURE
    outcomes = {o.test_id: o for o in convert_output("go-test-json", text, tmp_path)}
    assert {test_id: (o.outcome, o.collection_error) for test_id, o in outcomes.items()} == {
        "x/calc::TestAdd": ("failed", False),
        "x/calc::TestTable/pos": ("passed", False),
        "x/calc::TestSkip": ("skipped", False),
        "x/crash::TestPanics": ("failed", False),
        "x/main::[package]": ("error", False),
        "build::x/new": ("error", True),
        "build::x/old": ("error", True),
    }
    assert outcomes["x/calc::TestAdd"].message == "ops_test.go:7: got 1"
    assert "panic: boom" in outcomes["x/crash::TestPanics"].message
    assert outcomes["build::x/new"].message == "new/a.go:3:9: undefined: y"
    assert outcomes["build::x/old"].message == "old/b.go:5:2: undefined: z"
    # `go test` that refuses to start (an import no module provides) still yields a collection error.
    refused = convert_output("go-test-json", "calc/ops.go:2:8: no required module provides package x/nothere\n",
                             tmp_path)
    assert [(o.test_id, o.collection_error) for o in refused] == [("build::calc", True)]


LIBTEST = """\
   Compiling calc v0.1.0 (/work/calc)
     Running unittests src/lib.rs (target/debug/deps/calc-c6626fb655a8d231)

running 3 tests
test tests::adds ... ok
test tests::subtracts ... FAILED
test tests::slow ... ignored, needs a database

failures:

---- tests::subtracts stdout ----

thread 'tests::subtracts' panicked at src/lib.rs:16:9:
assertion `left == right` failed

failures:
    tests::subtracts

test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

     Running tests/api.rs (target/debug/deps/api-9b1013df2ff383a5)

running 1 test
test adds ... ok

   Doc-tests calc

running 1 test
test src/lib.rs - add (line 3) ... ok
"""


def test_libtest_output_is_converted_per_binary(tmp_path):
    outcomes = {o.test_id: o for o in convert_output("libtest", LIBTEST, tmp_path)}
    assert {test_id: o.outcome for test_id, o in outcomes.items()} == {
        "calc (src/lib.rs)::tests::adds": "passed",
        "calc (src/lib.rs)::tests::subtracts": "failed",
        "calc (src/lib.rs)::tests::slow": "skipped",
        "api (tests/api.rs)::adds": "passed",
        "calc (doc)::src/lib.rs - add (line 3)": "passed",
    }
    assert outcomes["calc (src/lib.rs)::tests::subtracts"].message == (
        "thread 'tests::subtracts' panicked at src/lib.rs:16:9:\nassertion `left == right` failed")
    compile_error = (f"error[E0425]: cannot find value `c` in this scope\n --> {tmp_path}/src/lib.rs:7:9\n\n"
                     "error: could not compile `calc` (lib) due to 1 previous error\n"
                     "error: could not compile `calc` (lib test) due to 1 previous error\n")
    errors = convert_output("libtest", compile_error, tmp_path)
    assert [(o.test_id, o.collection_error) for o in errors] == [("build::calc", True)]
    assert errors[0].message == "error[E0425]: cannot find value `c` in this scope\n --> src/lib.rs:7:9"
    assert build_errors("rust", compile_error, tmp_path) == errors  # the same for cargo-nextest's output


def test_converted_outcomes_are_saved_as_junit_that_reads_back_the_same(tmp_path):
    root = make(tmp_path / "repo", {"go.json": "\n".join(json.dumps(event) for event in GO_JSON)})
    go = TestCommand("cat go.json; exit 1", None, "go", "t", converter="go-test-json")
    report = run(root, go)
    assert report.junit_error is None and len(report.outcomes) == 6
    saved = parse_junit([tmp_path / "repo-artifacts" / "run.xml"])
    assert [(o.test_id, o.outcome, o.collection_error) for o in saved] == [
        (o.test_id, o.outcome, o.collection_error) for o in report.outcomes]
    assert [o.message for o in saved if not o.collection_error] == [
        o.message for o in report.outcomes if not o.collection_error]
    empty = run(root, TestCommand("echo nothing", None, "go", "t", converter="go-test-json"), name="empty")
    assert empty.outcomes == () and "no test results" in (empty.junit_error or "")


# --- real toolchains ----------------------------------------------------------------


@dataclass
class Variant:
    """A change to the fixture project: files to write, and what the finalizer must conclude."""

    files: dict[str, str]
    ids: set[str] = field(default_factory=set)  # new failures / collection errors / added tests


@dataclass
class Toolchain:
    name: str
    programs: tuple[str, ...]
    regression: Variant
    compile_error: Variant
    passing_change: Variant
    env: Callable[[Path], dict[str, str]] = lambda shared: {}
    unusable: Callable[[TestReport], str | None] = lambda report: None


def _maven_unusable(report: TestReport) -> str | None:
    tail = report.output_tail
    if not report.outcomes and ("offline" in tail or "could not be resolved" in tail or "Could not resolve" in tail):
        return "Maven cannot resolve the Surefire/JUnit plugins offline from ~/.m2 (no network here)"
    return None


NODE_ADD = "export function add(a, b) {{\n  return {};\n}}\n"
RUST_LIB = (FIXTURES / "rust" / "src" / "lib.rs").read_text()
JAVA_OPS = (FIXTURES / "java-maven" / "src" / "main" / "java" / "calc" / "Ops.java").read_text()
GO_OPS = (FIXTURES / "go" / "calc" / "ops.go").read_text()

TOOLCHAINS = [
    Toolchain(
        "node", ("node", "npm"),
        regression=Variant({"src/ops.js": NODE_ADD.format("a + Math.abs(b)")},
                           {"negatives > adds a negative", "negatives > is commutative"}),
        compile_error=Variant({"src/ops.js": NODE_ADD.format("a +;")}, {"test/ops.test.js"}),
        passing_change=Variant({"test/zero.test.js": "import { test } from 'node:test';\n"
                                "import assert from 'node:assert/strict';\nimport { add } from '../src/ops.js';\n"
                                "test('adds zero', () => assert.equal(add(4, 0), 4));\n"}, {"adds zero"}),
        env=lambda shared: {"npm_config_update_notifier": "false", "NODE_OPTIONS": ""},
    ),
    Toolchain(
        "rust", ("cargo",),
        regression=Variant({"src/lib.rs": RUST_LIB.replace("    a + b\n", "    a + b.abs()\n")},
                           {"calc (src/lib.rs)::tests::adds_a_negative"}),
        compile_error=Variant({"src/lib.rs": RUST_LIB.replace("    a + b\n", "    a + c\n")}, {"build::calc"}),
        passing_change=Variant(
            {"tests/zero.rs": "#[test]\nfn adds_zero() {\n    assert_eq!(calc::add(4, 0), 4);\n}\n"},
            {"zero (tests/zero.rs)::adds_zero"}),
        env=lambda shared: {"CARGO_TARGET_DIR": str(shared / "cargo-target"), "RUST_BACKTRACE": "0",
                            "CARGO_NET_OFFLINE": "true", "CARGO_TERM_COLOR": "never"},
    ),
    Toolchain(
        "java-maven", ("mvn", "java"),
        regression=Variant({"src/main/java/calc/Ops.java": JAVA_OPS.replace("a + b", "a + Math.abs(b)")},
                           {"calc.OpsTest::addsANegative"}),
        compile_error=Variant({"src/main/java/calc/Ops.java": JAVA_OPS.replace("a + b", 'a + "b"')},
                              {"build::calc (compile)"}),
        passing_change=Variant({"src/test/java/calc/ZeroTest.java": (
            "package calc;\n\nimport static org.junit.jupiter.api.Assertions.assertEquals;\n\n"
            "import org.junit.jupiter.api.Test;\n\nclass ZeroTest {\n    @Test\n    void addsZero() {\n"
            "        assertEquals(4, Ops.add(4, 0));\n    }\n}\n")}, {"calc.ZeroTest::addsZero"}),
        env=lambda shared: {"MAVEN_OPTS": "-XX:TieredStopAtLevel=1"},
        unusable=_maven_unusable,
    ),
    Toolchain(
        "go", ("go",),
        regression=Variant({"calc/ops.go": GO_OPS.replace("return a + b", "return a + abs(b)")
                            + "\nfunc abs(b int) int {\n\tif b < 0 {\n\t\treturn -b\n\t}\n\treturn b\n}\n"},
                           {"example.com/calc/calc::TestTable", "example.com/calc/calc::TestTable/negative"}),
        compile_error=Variant({"calc/ops.go": GO_OPS.replace("return a + b", "return a + c")},
                              {"build::example.com/calc/calc"}),
        passing_change=Variant({"util/zero_test.go": "package util\n\nimport \"testing\"\n\n"
                                "func TestZero(t *testing.T) {\n\tif Twice(0) != 0 {\n"
                                "\t\tt.Fatal(\"Twice(0)\")\n\t}\n}\n"},
                               {"example.com/calc/util::TestZero"}),
        env=lambda shared: {"GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local",
                            "GOCACHE": str(shared / "go-cache")},
    ),
]


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory) -> Path:
    """Build caches shared by every run in this module (cargo target dir, Go build cache)."""
    return tmp_path_factory.mktemp("toolchain-caches")


@pytest.fixture(scope="module")
def baselines() -> dict[str, tuple[TestCommand, TestReport]]:
    """Each toolchain's baseline run, made once by the first test that needs it."""
    return {}


def _requirements(toolchain: Toolchain) -> None:
    missing = [program for program in toolchain.programs if shutil.which(program) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    if toolchain.name == "node":
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
        if major < 20:
            pytest.skip(f"node {major} is too old for --test-reporter-destination (needs 20+)")


def _project(toolchain: Toolchain, root: Path, files: dict[str, str]) -> Path:
    shutil.copytree(FIXTURES / toolchain.name, root)
    return make(root, files) if files else root


def _baseline(toolchain: Toolchain, baselines: dict, shared: Path) -> tuple[TestCommand, TestReport]:
    _requirements(toolchain)
    if toolchain.name not in baselines:
        root = _project(toolchain, shared / f"{toolchain.name}-baseline", {})
        test = resolve_test_command(root, None, None)
        baselines[toolchain.name] = (test, run(root, test, toolchain.env(shared), name="baseline"))
    test, report = baselines[toolchain.name]
    reason = toolchain.unusable(report)
    if reason:
        pytest.skip(reason)
    return test, report


@pytest.mark.parametrize("toolchain", TOOLCHAINS, ids=lambda toolchain: toolchain.name)
def test_real_toolchain_passing_suite_and_a_passing_change(toolchain, baselines, shared_dir, tmp_path):
    test, baseline = _baseline(toolchain, baselines, shared_dir)
    assert test.ecosystem == toolchain.name
    assert baseline.exit_code == 0 and baseline.junit_error is None, baseline.output_tail
    assert baseline.counts()["passed"] >= 3 and not baseline.collection_errors()
    report = run(_project(toolchain, tmp_path / "p", toolchain.passing_change.files), test, toolchain.env(shared_dir))
    decision = judge(baseline, report)
    assert decision.verdict == "complete", (decision.reasons, report.output_tail)
    added = {test_id.split("::")[-1] for test_id in decision.delta.added}
    assert {test_id.split("::")[-1] for test_id in toolchain.passing_change.ids} <= added


@pytest.mark.parametrize("toolchain", TOOLCHAINS, ids=lambda toolchain: toolchain.name)
def test_real_toolchain_regression_fails_the_phase(toolchain, baselines, shared_dir, tmp_path):
    test, baseline = _baseline(toolchain, baselines, shared_dir)
    report = run(_project(toolchain, tmp_path / "p", toolchain.regression.files), test, toolchain.env(shared_dir))
    decision = judge(baseline, report)
    assert decision.failure_kind == "regression", (decision.reasons, report.output_tail)
    assert {t.split("::", 1)[-1] if toolchain.name == "node" else t for t in decision.delta.new_failures} == (
        toolchain.regression.ids)
    assert not decision.delta.collection_errors


@pytest.mark.parametrize("toolchain", TOOLCHAINS, ids=lambda toolchain: toolchain.name)
def test_real_toolchain_compile_error_is_a_collection_error(toolchain, baselines, shared_dir, tmp_path):
    test, baseline = _baseline(toolchain, baselines, shared_dir)
    report = run(_project(toolchain, tmp_path / "p", toolchain.compile_error.files), test, toolchain.env(shared_dir))
    assert report.exit_code != 0 and report.junit_error is None, report.output_tail
    decision = judge(baseline, report)
    assert decision.verdict == "failed" and decision.failure_kind == "collection_error", decision.reasons
    assert set(decision.delta.collection_errors) == toolchain.compile_error.ids
    assert all(o.message for o in report.outcomes if o.collection_error)
