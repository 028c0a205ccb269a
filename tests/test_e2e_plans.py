"""Malformed plans through the real CLI: exit 2, one line naming file and key, nothing touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import git

PLAN = """\
[run]
id = "bad-run"
goal = "Exercise plan validation"
repo = "target"
cassette = "cassette.jsonl"

[run.limits]
max_cost_usd = 1.0

[[phases]]
id = "one"
goal = "First phase"
category = "feature"
complexity = "low"
scope = ["calc/", "tests/"]

[[phases]]
id = "two"
goal = "Second phase"
depends_on = ["one"]
"""

# (case id, text replaced in PLAN, replacement, substrings the error line must contain)
EDITS = [
    ("typo-top-level", "[run]\n", "[runn]\n", ["runn", "did you mean 'run'"]),
    ("typo-run-key", 'goal = "Exercise', 'gaol = "Exercise', ["run.gaol", "did you mean 'goal'"]),
    ("typo-limits-key", "max_cost_usd =", "max_cost =", ["run.limits.max_cost", "did you mean 'max_cost_usd'"]),
    ("typo-models-key", "[run.limits]", '[run.models]\nbuidler = "m"\n\n[run.limits]',
     ["run.models.buidler", "did you mean 'builder'"]),
    ("typo-phase-key", 'complexity = "low"', 'complexty = "low"',
     ["phases[0].complexty", "did you mean 'complexity'"]),
    ("bad-category", 'category = "feature"', 'category = "featur"',
     ["phases[0].category", "did you mean 'feature'"]),
    ("bad-complexity", 'complexity = "low"', 'complexity = "extreme"', ["phases[0].complexity", "low, medium, high"]),
    ("duplicate-phase-id", 'id = "two"', 'id = "one"', ["phases[1].id", "duplicate id 'one'"]),
    ("unknown-dependency", 'depends_on = ["one"]', 'depends_on = ["onee"]',
     ["phases[1].depends_on[0]", "unknown phase 'onee'", "did you mean 'one'"]),
    ("dependency-cycle", 'scope = ["calc/", "tests/"]', 'scope = ["calc/", "tests/"]\ndepends_on = ["two"]',
     ["phases[0].depends_on", "cycle"]),
    ("self-dependency", 'depends_on = ["one"]', 'depends_on = ["two"]', ["phases[1].depends_on[0]", "itself"]),
    ("duplicate-dependency", 'depends_on = ["one"]', 'depends_on = ["one", "one"]',
     ["phases[1].depends_on[1]", "'one' is listed twice (also depends_on[0])"]),
    ("absolute-scope", '"calc/", "tests/"', '"calc/", "/etc/passwd"', ["phases[0].scope[1]", "absolute"]),
    ("dotdot-scope", '"calc/", "tests/"', '"../outside/"', ["phases[0].scope[0]", "'..'"]),
    ("invalid-toml", 'goal = "First phase"', 'goal = "First phase', ["invalid TOML", "line"]),
    ("bad-run-id", 'id = "bad-run"', 'id = "Bad Run!"', ["run.id", "not a valid id"]),
    ("missing-cassette", 'cassette = "cassette.jsonl"', 'cassette = "nope.jsonl"', ["run.cassette", "nope.jsonl"]),
    ("missing-required-goal", 'goal = "Second phase"\n', "", ["phases[1].goal", "required"]),
    ("wrong-type", 'complexity = "low"', 'complexity = "low"\nmax_attempts = "3"',
     ["phases[0].max_attempts", "expected an integer"]),
    ("zero-attempts", 'complexity = "low"', 'complexity = "low"\nmax_attempts = 0', ["phases[0].max_attempts"]),
    ("unnormalised-scope", '"calc/", "tests/"', '"./calc/"', ["phases[0].scope[0]", "'calc/'"]),
    ("negative-budget", "max_cost_usd = 1.0", "max_cost_usd = -1", ["run.limits.max_cost_usd"]),
    ("bad-flag-value", "[run.limits]", "flags = { x = [1] }\n\n[run.limits]", ["run.flags.x"]),
    ("repo-missing", 'repo = "target"', 'repo = "nowhere"', ["run.repo", "nowhere"]),
    ("repo-not-git", 'repo = "target"', 'repo = "../plain"', ["run.repo", "not inside a git repository"]),
    ("unknown-base", 'repo = "target"', 'repo = "target"\nbase = "no-such-branch"',
     ["run.base", "no-such-branch"]),
]
NO_DB_CASES = ["invalid-toml", "missing-cassette", "repo-not-git", "unknown-base", "bad-category"]


def write_case(project: Path, case: str) -> Path:
    """Write the bad plan ``case`` (an EDITS id or a special case) as bad.toml; returns its path."""
    plan = project / "bad.toml"
    if case == "non-utf8":
        plan.write_bytes(PLAN.replace('"Second phase"', '"Second \xe9tape"').encode("latin-1"))
    elif case == "directory":
        plan.mkdir()
    elif case != "no-such-file":
        _, old, new, _ = next(edit for edit in EDITS if edit[0] == case)
        assert old in PLAN, case
        plan.write_text(PLAN.replace(old, new, 1))
    return plan


SPECIAL = {"non-utf8": ["UTF-8", "line 19"], "directory": ["is a directory"], "no-such-file": ["no such file"]}
EXPECTED = {case: needles for case, _, _, needles in EDITS} | SPECIAL


@pytest.fixture(scope="module")
def project(tmp_path_factory, make_calc_project, autopack) -> Path:
    """The calc example with its run queued (so the database exists), and a plain directory beside it."""
    parent = tmp_path_factory.mktemp("plans")
    (parent / "plain").mkdir()
    project = make_calc_project(parent)
    done = autopack("run", "plan.toml", "--queue-only", cwd=project)
    assert done.returncode == 0, done.stderr
    return project


def assert_refused(done, case: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    [line] = lines
    assert line.startswith("autopack: error: bad.toml"), line
    for needle in EXPECTED[case]:
        assert needle in line, (needle, line)


@pytest.mark.parametrize("case", list(EXPECTED))
def test_bad_plan_is_refused_and_the_database_untouched(project, autopack, case):
    db = project / ".autopack" / "autopack.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    plan = write_case(project, case)
    try:
        done = autopack("run", "bad.toml", cwd=project)
    finally:
        plan.rmdir() if plan.is_dir() else plan.unlink(missing_ok=True)
    assert_refused(done, case)
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before
    assert git(project, "branch", "--list", "autopack/*") == ""


@pytest.mark.parametrize("case", NO_DB_CASES)
def test_bad_plan_creates_no_database(calc_project, autopack, case):
    (calc_project.parent / "plain").mkdir()
    write_case(calc_project, case)
    done = autopack("run", "bad.toml", cwd=calc_project)
    assert_refused(done, case)
    assert not (calc_project / ".autopack").exists()
    assert git(calc_project, "branch", "--list", "autopack/*") == ""


def test_a_repeated_entry_in_scope_context_deliverables_or_acceptance_is_harmless(tmp_path):
    """Only depends_on refuses a repeat (it would be a second dependency row); the others are sets."""
    from drainkit import PhaseScript, Workbench

    wb = Workbench(tmp_path)
    plan = wb.add_run("repeats", [PhaseScript("a")])
    text = plan.read_text()
    for key in ("scope", "deliverables"):
        line = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
        entries = line.split(" = ", 1)[1].strip("[]")
        text = text.replace(line, f"{key} = [{entries}, {entries}]")
    text += 'context = ["check.py", "check.py"]\nacceptance = ["out/a.txt exists", "out/a.txt exists"]\n'
    plan.write_text(text)
    done = wb.cli("run", str(plan))
    assert done.returncode == 0, done.stdout + done.stderr
    assert wb.phase_states("repeats") == {"a": "complete"}
