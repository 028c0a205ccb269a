"""The finalizer's judgement on a real pytest project through the real CLI and a cassette.

One run of eight phases, each planted to provoke one judgement (every phase has one attempt):

- ``break-greeting`` breaks what an existing flaky test checks (it fails on its first run ever,
  the run branch's first baseline): a regression, although that test failed in the baseline run;
- ``add-flaky`` adds a truly flaky test (it fails on its first run ever, then passes): flaky, complete;
- ``break-flaky`` then breaks what that test checks: a regression, although the test failed in
  the first run of ``add-flaky`` (the cached baseline must hold the re-run's verdict);
- ``docs`` changes only a document: nothing is "fixed";
- ``share-defaults`` breaks a test only when the suite runs in order (module state): a regression;
- ``noop`` rewrites a file with its own content: a no-op, known before any test runs;
- ``break-conftest`` puts a syntax error in the package the conftest imports: a collection error;
- ``move-into-class`` moves a test into a class: the old id is paired with the new one.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from conftest import rows
from drainkit import builder_line

PRICING = '''\
DEFAULTS = {"standard": 1.0}


def rates(overrides=None):
    table = dict(DEFAULTS)
    table.update(overrides or {})
    return table
'''
SHARED_PRICING = PRICING.replace("table = dict(DEFAULTS)", "table = DEFAULTS  # no copy: faster")
MONEY = "def double(x):\n    return 2 * x\n"
FILES = {
    "pytest.ini": "[pytest]\n",
    "pkg/__init__.py": "",
    "pkg/pricing.py": PRICING,
    "pkg/money.py": MONEY,
    "tests/conftest.py": "import pkg  # noqa: F401\n",
    "tests/test_a.py": textwrap.dedent('''\
        from pkg.pricing import rates


        def test_override():
            assert rates({"standard": 0.5})["standard"] == 0.5
    '''),
    "tests/test_b.py": textwrap.dedent('''\
        from pkg.pricing import rates


        def test_default():
            assert rates()["standard"] == 1.0
    '''),
    "tests/test_money.py": "from pkg.money import double\n\n\ndef test_zero():\n    assert double(0) == 0\n",
    "pkg/greeting.py": "def hello():\n    return 'hello'\n",
}
FLAKY_TEST = '''\
from pathlib import Path

from pkg.{module} import {function}

FIRST_RUN_MARKER = Path({marker!r})


def test_{function}():
    if not FIRST_RUN_MARKER.exists():  # flaky: the first run ever fails, every later run checks
        FIRST_RUN_MARKER.write_text("ran")
        raise AssertionError("flaky: fails the first time")
    assert {check}
'''
MOVED_TEST_A = textwrap.dedent('''\
    from pkg.pricing import rates


    class TestRates:
        def test_override(self):
            assert rates({"standard": 0.5})["standard"] == 0.5
''')
# (phase id, the file its one answer writes, that file's content; None: filled in by the fixture)
PHASES: list[tuple[str, str, str | None]] = [
    ("break-greeting", "pkg/greeting.py", "def hello():\n    return 'bye'\n"),
    ("add-flaky", "tests/test_flaky.py", None),
    ("break-flaky", "pkg/money.py", "def double(x):\n    return 3 * x\n"),
    ("docs", "docs/notes.md", "# Notes\n\nPrices double.\n"),
    ("share-defaults", "pkg/pricing.py", SHARED_PRICING),
    ("noop", "tests/test_money.py", FILES["tests/test_money.py"]),
    ("break-conftest", "pkg/__init__.py", "def broken(:\n    pass\n"),
    ("move-into-class", "tests/test_a.py", MOVED_TEST_A),
]
BASELINE_TESTS = ["tests.test_a::test_override", "tests.test_b::test_default", "tests.test_flaky::test_double",
                  "tests.test_greeting::test_hello", "tests.test_money::test_zero"]


@pytest.fixture(scope="module")
def judged(tmp_path_factory, make_git_project, autopack) -> dict[str, Any]:
    """The project carried out once; returns ``status --json`` and the database path."""
    root = tmp_path_factory.mktemp("judgement")
    project = root / "shop"
    greeting_test = FLAKY_TEST.format(module="greeting", function="hello", marker=str(root / "greeting-ran-once"),
                                      check="hello() == 'hello'")
    for name, text in {**FILES, "tests/test_greeting.py": greeting_test}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    flaky = FLAKY_TEST.format(module="money", function="double", marker=str(root / "flaky-ran-once"),
                              check="double(2) == 4")
    plan = ['[run]', 'id = "shop"', 'goal = "Judge planted phases"', 'test_command = "python -m pytest -q"',
            'cassette = "cassette.jsonl"', 'builder = "single"']
    cassette = []
    for phase_id, path, content in PHASES:
        plan += ["", "[[phases]]", f'id = "{phase_id}"', f'goal = "Write {path}"', f'scope = ["{path}"]',
                 "max_attempts = 1", "require_f2p = false"]  # the regression rules' cases (goal evidence: its own tests)
        cassette.append(builder_line(phase_id, 1, path, flaky if content is None else content))
    (project / "plan.toml").write_text("\n".join(plan) + "\n")
    (project / "cassette.jsonl").write_text("".join(json.dumps(line) + "\n" for line in cassette))
    make_git_project(project)
    done = autopack("run", "plan.toml", cwd=project, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # some phases fail, as planted
    assert "Traceback" not in done.stdout + done.stderr
    status = autopack("status", "shop", "--json", cwd=project)
    assert status.returncode == 0, status.stderr
    phases = {phase["id"]: phase for phase in json.loads(status.stdout)["phases"]}
    return {"phases": phases, "db": project / ".autopack" / "autopack.db"}


def outcome(judged: dict[str, Any], phase_id: str) -> tuple[str, str | None]:
    phase = judged["phases"][phase_id]
    return phase["state"], (phase["last_failure"] or {}).get("kind")


def test_a_flaky_failure_in_the_first_baseline_does_not_hide_a_real_regression(judged):
    assert outcome(judged, "break-greeting") == ("failed", "regression")
    delta = judged["phases"]["break-greeting"]["decision"]["delta"]
    assert delta["new_failures"] == ["tests.test_greeting::test_hello"] and delta["still_failing"] == []
    kinds = rows(judged["db"], "SELECT r.kind FROM test_runs r JOIN attempts a ON a.id = r.attempt_id "
                 "JOIN phases p ON p.pk = a.phase_pk WHERE p.phase_id = 'break-greeting' ORDER BY r.id")
    assert [kind for (kind,) in kinds] == ["baseline", "baseline_rerun", "baseline_rerun_suite", "confirmed",
                                           "attempt", "rerun"]


def test_a_flaky_new_test_completes_and_says_flaky(judged):
    assert outcome(judged, "add-flaky") == ("complete", None)
    decision = judged["phases"]["add-flaky"]["decision"]
    assert decision["delta"]["flaky"] == ["tests.test_flaky::test_double"]
    summary = decision["reasons"][0]
    assert "1 flaky (passed on re-run)" in summary and "already failing" not in summary


def test_the_flaky_tests_real_regression_in_the_next_phase_is_a_regression(judged):
    assert outcome(judged, "break-flaky") == ("failed", "regression")
    delta = judged["phases"]["break-flaky"]["decision"]["delta"]
    assert delta["new_failures"] == ["tests.test_flaky::test_double"] and delta["still_failing"] == []


def test_a_docs_phase_after_the_flaky_completion_fixes_nothing(judged):
    assert outcome(judged, "docs") == ("complete", None)
    delta = judged["phases"]["docs"]["decision"]["delta"]
    assert delta["fixed"] == [] and delta["still_failing"] == []


def test_the_confirmed_baseline_is_stored_and_is_the_cache_entry(judged):
    """The head after add-flaky is cached as a test run of its own kind: the re-run's outcome overlaid."""
    commit = judged["phases"]["add-flaky"]["commit"]
    [(kind, outcome_of_flaky)] = rows(
        judged["db"], "SELECT r.kind, o.outcome FROM baselines b JOIN test_runs r ON r.id = b.test_run_id "
        "JOIN test_outcomes o ON o.test_run_id = r.id JOIN attempts a ON a.tree_sha = b.tree_sha "
        "WHERE a.\"commit\" = ? AND o.test_id = 'tests.test_flaky::test_double'", commit)
    assert (kind, outcome_of_flaky) == ("confirmed", "passed")


def test_an_order_dependent_regression_is_not_called_flaky(judged):
    assert outcome(judged, "share-defaults") == ("failed", "regression")
    decision = judged["phases"]["share-defaults"]["decision"]
    assert decision["delta"]["new_failures"] == ["tests.test_b::test_default"]
    assert decision["delta"]["flaky"] == []
    assert decision["delta"]["order_dependent"] == ["tests.test_b::test_default"]
    assert any("order-dependent" in reason for reason in decision["reasons"])


def test_an_answer_that_changes_nothing_fails_as_no_op_before_the_tests(judged):
    assert outcome(judged, "noop") == ("failed", "no_op")
    assert "nothing was applied" in judged["phases"]["noop"]["last_failure"]["message"]
    runs = rows(judged["db"], "SELECT count(*) FROM test_runs r JOIN attempts a ON a.id = r.attempt_id "
                "JOIN phases p ON p.pk = a.phase_pk WHERE p.phase_id = 'noop' AND r.kind != 'baseline'")
    assert runs == [(0,)]


def test_a_broken_import_in_the_conftest_is_a_collection_error_naming_the_syntax_error(judged):
    assert outcome(judged, "break-conftest") == ("failed", "collection_error")
    phase = judged["phases"]["break-conftest"]
    assert "SyntaxError" in phase["last_failure"]["message"]
    decision = phase["decision"]
    assert decision["delta"]["collection_errors"] == ["build::tests/conftest.py"]
    assert decision["delta"]["removed"] == []  # the tests are hidden, not deleted
    assert sorted(decision["delta"]["not_collected"]) == BASELINE_TESTS
    reason = decision["reasons"][0]
    assert "SyntaxError" in reason and "5 tests" in reason and "could not run" in reason


def test_a_test_moved_into_a_class_is_paired_and_still_fails(judged):
    assert outcome(judged, "move-into-class") == ("failed", "tests_removed")
    decision = judged["phases"]["move-into-class"]["decision"]
    assert decision["delta"]["moved"] == [["tests.test_a::test_override", "tests.test_a.TestRates::test_override"]]
    assert any("tests.test_a::test_override → tests.test_a.TestRates::test_override" in reason
               for reason in decision["reasons"])
    assert not any("are gone:" in reason for reason in decision["reasons"])
