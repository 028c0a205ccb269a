"""Goal evidence (contract 5) through the real CLI: real git repositories, real test runs, the
builder's answers replayed from a cassette. Each case is one run of one phase over the same
project; its answer is written to provoke one rule.

Python cases run pytest; the Node and Go cases (where the toolchain is installed) run the same
rules through ``node --test`` and ``go test -json``.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import rows

OPS = textwrap.dedent('''\
    def add(a, b):
        return a + b


    def sub(a, b):
        return a - b


    def div(a, b):
        return a / b
''')
TEST_OPS = textwrap.dedent('''\
    from calc.ops import add, sub


    def test_add():
        assert add(2, 3) == 5


    def test_sub():
        assert sub(5, 3) == 2
''')
PYTHON_PROJECT = {
    "pytest.ini": "[pytest]\n",
    "calc/__init__.py": "",
    "calc/ops.py": OPS,
    "tests/test_ops.py": TEST_OPS,
    "tests/test_div.py": textwrap.dedent('''\
        import pytest

        from calc.ops import div


        def test_div_by_zero():  # a known bug: fails before any phase
            with pytest.raises(ValueError, match="cannot divide by zero"):
                div(1, 0)
    '''),
    "README.md": "# calc\n",
}
WITH_MUL = OPS + "\n\ndef mul(a, b):\n    return a * b\n"
TEST_MUL = "from calc.ops import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
FIXED_DIV = OPS.replace("    return a / b\n", "    if b == 0:\n        raise ValueError('cannot divide by zero')\n"
                                               "    return a / b\n")
BROKEN_SUB = OPS.replace("return a - b", "return b - a")
WEAKENED_TEST_OPS = TEST_OPS.replace("assert sub(5, 3) == 2", "assert sub(5, 3) == -2")
SKIPPED_TEST_OPS = "import pytest\n" + TEST_OPS.replace("def test_add", "@pytest.mark.skip(reason='later')\ndef test_add")


@dataclass(frozen=True)
class Case:
    id: str
    answers: tuple[dict[str, str], ...]  # per attempt: the files the builder writes
    phase: dict[str, Any] = field(default_factory=dict)  # plan keys besides id/goal/scope
    state: str = "complete"
    kind: str | None = None


PYTHON_CASES = [
    Case("passes-on-old-code", ({"tests/test_more.py": "from calc.ops import add\n\n\ndef test_add_zero():\n"
                                                        "    assert add(0, 0) == 0\n"},),
         state="failed", kind="no_goal_evidence"),
    Case("fail-to-pass", ({"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL},)),
    Case("fixed-bug", ({"calc/ops.py": FIXED_DIV},), {"category": "bugfix"}),
    Case("weakened", ({"calc/ops.py": BROKEN_SUB, "tests/test_ops.py": WEAKENED_TEST_OPS},
                      {"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL}),
         {"max_attempts": 2}),
    Case("skipped", ({"tests/test_ops.py": SKIPPED_TEST_OPS},), {"require_f2p": False},
         state="failed", kind="tests_skipped"),
    Case("skip-allowed", ({"tests/test_ops.py": SKIPPED_TEST_OPS},),
         {"require_f2p": False, "allow_skip": ["tests/test_ops.py::test_add"]}),
    Case("acceptance-missing", ({"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL},),
         {"acceptance_tests": ["tests/test_mul.py::test_mul_negative"]}, state="failed", kind="acceptance_failed"),
    Case("acceptance-still-failing", ({"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL},),
         {"acceptance_tests": ["tests/test_div.py::test_div_by_zero"]}, state="failed", kind="acceptance_failed"),
    Case("acceptance-passes-before", ({"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL},),
         {"acceptance_tests": ["tests/test_ops.py::test_add"]}, state="failed", kind="acceptance_failed"),
    Case("acceptance-met", ({"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL},),
         {"acceptance_tests": ["tests/test_mul.py::test_mul"]}),
    Case("docs", ({"README.md": "# calc\n\nadd, sub and div.\n"},), {"category": "docs"}),
    Case("not-required", ({"tests/test_more.py": "from calc.ops import add\n\n\ndef test_add_zero():\n"
                                                  "    assert add(0, 0) == 0\n"},), {"require_f2p": False}),
]


def answer(phase: str, attempt: int, files: dict[str, str]) -> dict[str, Any]:
    """A cassette line: one Messages API answer writing ``files``."""
    content = [{"type": "tool_use", "id": f"toolu_{phase}_{attempt}_{n}", "name": "write_file",
                "input": {"path": path, "content": text}} for n, (path, text) in enumerate(files.items())]
    body = {"id": f"msg_{phase}_{attempt}", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
            "content": content, "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}
    return {"role": "builder", "phase": phase, "attempt": attempt, "response": {"status": 200, "headers": {},
                                                                                  "body": body}}


def toml_value(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def carry_out(root: Path, files: dict[str, str], cases: list[Case], make_git_project, autopack,
              test_command: str | None = None, subdir: str = "") -> dict[str, Any]:
    """Write the repository (``files``; the project is ``subdir`` in it) and one plan + cassette per case,
    commit, run each case; returns per case its phase from ``status --json``, its test-run kinds and the
    digests its later attempts were given."""
    project = root / "project"
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    for case in cases:
        scope = sorted({path for files in case.answers for path in files})
        plan = ["[run]", f'id = "{case.id}"', 'goal = "Goal evidence"', f'cassette = "{case.id}.jsonl"',
                'builder = "single"']
        if test_command:
            plan.append(f"test_command = {toml_value(test_command)}")
        if subdir:
            plan.append(f"repo = {toml_value(subdir)}")
        plan += ["", "[[phases]]", 'id = "p"', f'goal = "Case {case.id}"', f"scope = {toml_value(scope)}"]
        plan += [f"{key} = {toml_value(value)}" for key, value in {"max_attempts": 1, **case.phase}.items()]
        (project / f"{case.id}.toml").write_text("\n".join(plan) + "\n")
        (project / f"{case.id}.jsonl").write_text("".join(json.dumps(answer("p", n, files)) + "\n"
                                                          for n, files in enumerate(case.answers, 1)))
    make_git_project(project)
    results = {}
    db = project / ".autopack" / "autopack.db"
    for case in cases:
        done = autopack("run", f"{case.id}.toml", cwd=project, timeout=300)
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        status = autopack("status", case.id, "--json", cwd=project)
        assert status.returncode == 0, status.stderr
        [phase] = json.loads(status.stdout)["phases"]
        kinds = [kind for (kind,) in rows(db, "SELECT kind FROM test_runs WHERE run_id = ? ORDER BY id", case.id)]
        digests = [json.loads(data)["text"] for (data,) in rows(
            db, "SELECT data FROM events WHERE run_id = ? AND kind = 'failure_digest' ORDER BY id", case.id)]
        results[case.id] = {"phase": phase, "kinds": kinds, "digests": digests, "exit": done.returncode,
                            "stdout": done.stdout}
    results["_project"] = project
    return results


@pytest.fixture(scope="module")
def python_cases(tmp_path_factory, make_git_project, autopack) -> dict[str, Any]:
    return carry_out(tmp_path_factory.mktemp("evidence"), PYTHON_PROJECT, PYTHON_CASES, make_git_project, autopack,
                     "python -m pytest -q")


@pytest.mark.parametrize("case", PYTHON_CASES, ids=lambda case: case.id)
def test_each_rule_decides_its_case(python_cases, case: Case) -> None:
    phase = python_cases[case.id]["phase"]
    assert (phase["state"], (phase["last_failure"] or {}).get("kind")) == (case.state, case.kind), phase
    assert "evidence" in phase["decision"], "every judged attempt records its evidence"


def evidence(results: dict[str, Any], case_id: str) -> dict[str, Any]:
    return results[case_id]["phase"]["decision"]["evidence"]


def test_a_new_test_that_passes_on_the_old_code_is_no_evidence_and_says_what_ran(python_cases) -> None:
    found = evidence(python_cases, "passes-on-old-code")
    assert found["tests"] == [{"id": "tests.test_more::test_add_zero", "before": "passed", "after": "passed"}]
    assert found["fail_to_pass"] == [] and found["rules"]["f2p"] == "missing"
    [run] = found["runs"]
    assert run["kind"] == "f2p" and run["select"] == ["--rootdir=.", "tests/test_more.py"]
    assert run["counts"]["passed"] == 1
    message = python_cases["passes-on-old-code"]["phase"]["last_failure"]["message"]
    assert "no test fails before the phase and passes after" in message and "1 touched test" in message
    assert python_cases["passes-on-old-code"]["kinds"].count("f2p") == 1


def test_a_new_test_that_fails_before_and_passes_after_completes_with_its_evidence(python_cases) -> None:
    found = evidence(python_cases, "fail-to-pass")
    assert found["fail_to_pass"] == ["tests.test_mul::test_mul"]
    # at the base, the new test file cannot import mul: the test errors there
    assert found["tests"] == [{"id": "tests.test_mul::test_mul", "before": "error", "after": "passed"}]
    assert found["summary"] == "f2p: 1 test fail before, pass after"
    kinds = python_cases["fail-to-pass"]["kinds"]
    assert kinds.count("f2p") == 1 and "old_tests" not in kinds  # a new test file: nothing to revert
    reasons = python_cases["fail-to-pass"]["phase"]["decision"]["reasons"]
    assert reasons[-1] == "goal evidence: f2p: 1 test fail before, pass after"
    # the f2p run ran on the base tree with only the test file added, recorded like any test run
    db = python_cases["_project"] / ".autopack" / "autopack.db"
    [(tree,)] = rows(db, "SELECT tree_sha FROM test_runs WHERE run_id = 'fail-to-pass' AND kind = 'f2p'")
    assert tree == found["runs"][0]["tree"]


def test_a_bugfix_whose_test_failed_in_the_baseline_completes_without_an_extra_run(python_cases) -> None:
    found = evidence(python_cases, "fixed-bug")
    assert found["fixed"] == ["tests.test_div::test_div_by_zero"] and found["runs"] == []
    assert found["summary"] == "f2p: 1 baseline failure fixed"
    assert {"f2p", "old_tests"}.isdisjoint(python_cases["fixed-bug"]["kinds"])


def test_an_edited_assertion_that_hides_a_regression_is_weakened_and_the_next_attempt_sees_the_diff(
        python_cases) -> None:
    result = python_cases["weakened"]
    assert result["phase"]["attempts"] == 2  # the second, honest answer completed
    first_digest = result["digests"][0]
    assert "Failure kind: tests_weakened" in first_digest
    assert "tests.test_ops::test_sub" in first_digest
    assert "-    assert sub(5, 3) == 2" in first_digest and "+    assert sub(5, 3) == -2" in first_digest
    assert result["kinds"].count("old_tests") == 1
    db = python_cases["_project"] / ".autopack" / "autopack.db"
    [(decision,)] = rows(db, "SELECT a.decision FROM attempts a WHERE a.run_id = 'weakened' AND a.number = 1")
    weakened = json.loads(decision)["evidence"]
    assert [w["id"] for w in weakened["weakened"]] == ["tests.test_ops::test_sub"]
    assert weakened["weakened"][0]["base_version"] == "failed" and "tests/test_ops.py" in weakened["diffs"]


def test_skipping_a_passing_test_fails_unless_allowed(python_cases) -> None:
    assert evidence(python_cases, "skipped")["skipped"] == ["tests.test_ops::test_add"]
    assert "allow_skip" in python_cases["skipped"]["phase"]["last_failure"]["message"]
    allowed = evidence(python_cases, "skip-allowed")
    assert allowed["rules"]["skips"] == "met" and "skipped" not in allowed
    assert allowed["rules"]["old_tests"] == "met"  # the base test file still passes on the new code


@pytest.mark.parametrize("case_id, problem", [
    ("acceptance-missing", "does not exist after the phase"),
    ("acceptance-still-failing", "failed after the phase"),
    ("acceptance-passes-before", "already passes before the phase"),
])
def test_an_acceptance_test_that_is_missing_failing_or_already_passing_is_named(python_cases, case_id, problem):
    message = python_cases[case_id]["phase"]["last_failure"]["message"]
    wanted = {"acceptance-missing": "tests/test_mul.py::test_mul_negative",
              "acceptance-still-failing": "tests/test_div.py::test_div_by_zero",
              "acceptance-passes-before": "tests/test_ops.py::test_add"}[case_id]
    assert f"acceptance test {wanted} {problem}" in message


def test_an_acceptance_test_that_fails_before_and_passes_after_is_met(python_cases) -> None:
    found = evidence(python_cases, "acceptance-met")
    assert found["acceptance"] == [{"id": "tests/test_mul.py::test_mul", "after": "passed", "before": "error"}]
    assert found["summary"].endswith("acceptance 1/1")


def test_a_docs_phase_pays_no_extra_run(python_cases) -> None:
    kinds = python_cases["docs"]["kinds"]
    assert {"f2p", "old_tests"}.isdisjoint(kinds) and kinds.count("attempt") == 1
    assert evidence(python_cases, "docs")["rules"]["f2p"] == "not required"


def test_evidence_that_is_not_required_is_still_recorded_and_shown(python_cases) -> None:
    found = evidence(python_cases, "not-required")
    assert found["rules"]["f2p"] == "not required" and found["summary"] == "f2p: none (not required)"
    assert "f2p: none (not required)" in python_cases["not-required"]["stdout"]


def test_status_stats_count_the_evidence_runs_and_kinds(python_cases, autopack) -> None:
    done = autopack("status", "--stats", "--json", cwd=python_cases["_project"])
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)["goal_evidence"]
    assert stats["runs"] == {"f2p": 11, "old_tests": 3}
    assert stats["failures"] == {"acceptance_failed": 3, "no_goal_evidence": 1, "tests_skipped": 1,
                                 "tests_weakened": 1}


MONOREPO_CASES = [Case("mono-f2p", ({"calc/ops.py": WITH_MUL, "tests/test_mul.py": TEST_MUL},)),
                  Case("mono-weakened", PYTHON_CASES[3].answers[:1], state="failed", kind="tests_weakened")]


def test_a_project_in_a_subdirectory_under_a_pytest_ini_above_it_gets_the_same_rules(
        tmp_path, make_git_project, autopack) -> None:
    """pytest's rootdir is the repository root: its report names files app/tests/...; the evidence runs
    pin that rootdir and select the project's files from the project's directory."""
    files = {"pytest.ini": "[pytest]\n", **{f"app/{path}": text for path, text in PYTHON_PROJECT.items()
                                           if path != "pytest.ini"}}
    results = carry_out(tmp_path, files, MONOREPO_CASES, make_git_project, autopack, "python -m pytest -q", "app")
    for case in MONOREPO_CASES:
        phase = results[case.id]["phase"]
        assert (phase["state"], (phase["last_failure"] or {}).get("kind")) == (case.state, case.kind), phase
    found = evidence(results, "mono-f2p")
    assert found["test_files"] == ["tests/test_mul.py"] and found["runs"][0]["select"] == [
        "--rootdir=..", "tests/test_mul.py"]
    assert found["tests"] == [{"id": "app.tests.test_mul::test_mul", "before": "error", "after": "passed"}]
    assert [w["id"] for w in evidence(results, "mono-weakened")["weakened"]] == ["app.tests.test_ops::test_sub"]


# --- other toolchains ---------------------------------------------------------------------------

NODE_PROJECT = {
    "package.json": json.dumps({"name": "calc", "version": "1.0.0", "type": "commonjs"}),
    "lib/ops.js": "exports.add = (a, b) => a + b;\n",
    "test/ops.test.js": "const test = require('node:test');\nconst assert = require('node:assert');\n"
                        "const { add } = require('../lib/ops');\n\ntest('add', () => assert.strictEqual(add(2, 3), 5));\n",
}
NODE_MUL_TEST = ("const test = require('node:test');\nconst assert = require('node:assert');\n"
                 "const ops = require('../lib/ops');\n\ntest('mul', () => assert.strictEqual(ops.mul(2, 3), 6));\n")
NODE_CASES = [
    Case("node-f2p", ({"lib/ops.js": NODE_PROJECT["lib/ops.js"] + "exports.mul = (a, b) => a * b;\n",
                       "test/mul.test.js": NODE_MUL_TEST},)),
    Case("node-passes-on-old-code", ({"test/more.test.js": NODE_PROJECT["test/ops.test.js"].replace(
        "'add'", "'add again'")},), state="failed", kind="no_goal_evidence"),
    Case("node-weakened", ({"lib/ops.js": "exports.add = (a, b) => a - b;\n",
                            "test/ops.test.js": NODE_PROJECT["test/ops.test.js"].replace("5)", "-1)")},),
         {"require_f2p": False}, state="failed", kind="tests_weakened"),
]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_node_project_gets_the_same_rules_through_node_test(tmp_path, make_git_project, autopack) -> None:
    results = carry_out(tmp_path, NODE_PROJECT, NODE_CASES, make_git_project, autopack)
    for case in NODE_CASES:
        phase = results[case.id]["phase"]
        assert (phase["state"], (phase["last_failure"] or {}).get("kind")) == (case.state, case.kind), phase
    def titles(ids: list[str]) -> list[str]:  # node 22 names the file in the id, node 20 does not
        return [test_id.rpartition("::")[2] for test_id in ids]

    assert titles(evidence(results, "node-f2p")["fail_to_pass"]) == ["mul"]
    assert results["node-f2p"]["kinds"].count("f2p") == 1
    assert titles([w["id"] for w in evidence(results, "node-weakened")["weakened"]]) == ["add"]


GO_PROJECT = {
    "go.mod": "module example.com/calc\n\ngo 1.19\n",
    "ops.go": "package calc\n\nfunc Add(a, b int) int { return a + b }\n",
    "ops_test.go": 'package calc\n\nimport "testing"\n\nfunc TestAdd(t *testing.T) {\n'
                   '\tif Add(2, 3) != 5 {\n\t\tt.Fatal("add")\n\t}\n}\n',
}
GO_CASES = [
    Case("go-f2p", ({"ops.go": GO_PROJECT["ops.go"] + "\nfunc Mul(a, b int) int { return a * b }\n",
                     "mul_test.go": 'package calc\n\nimport "testing"\n\nfunc TestMul(t *testing.T) {\n'
                                    '\tif Mul(2, 3) != 6 {\n\t\tt.Fatal("mul")\n\t}\n}\n'},)),
    Case("go-passes-on-old-code", ({"more_test.go": GO_PROJECT["ops_test.go"].replace("TestAdd", "TestAddAgain")},),
         state="failed", kind="no_goal_evidence"),
]


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")
def test_a_go_project_gets_the_same_rules_through_go_test(tmp_path, make_git_project, autopack) -> None:
    results = carry_out(tmp_path, GO_PROJECT, GO_CASES, make_git_project, autopack)
    for case in GO_CASES:
        phase = results[case.id]["phase"]
        assert (phase["state"], (phase["last_failure"] or {}).get("kind")) == (case.state, case.kind), phase
    found = evidence(results, "go-f2p")
    # at the base the new test does not compile (Mul is undefined): it did not exist there
    assert found["fail_to_pass"] == ["example.com/calc::TestMul"]
    assert results["go-f2p"]["kinds"].count("f2p") == 1
