"""The plan file: every malformed plan is one clear PlanError; valid plans load as specified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopack.errors import PlanError, UsageError
from autopack.plan import PhaseSpec, PlanSpec, load_plan, plan_from_dict

FULL_PLAN = """\
[run]
id = "calc-v1"
goal = "Add power and modulo to the calculator"
repo = "target"
base = "main"
test_command = "python -m pytest -q"
cassette = "cassette.jsonl"
flags = { hardening = true, variant = "b", temperature = 0.5 }
type = "maintenance"

[run.models]
builder = "claude-sonnet-5-5"
doctor = "claude-haiku-5-5"
escalation = "claude-opus-5-5"

[run.limits]
max_cost_usd = 5
phase_timeout_s = 900

[[phases]]
id = "add-power"
goal = "Add power(a, b) to calc/ops.py, with tests"
category = "feature"
complexity = "low"
scope = ["calc/ops.py", "tests/"]
context = ["calc/__init__.py"]
deliverables = ["tests/test_power.py"]
acceptance = ["power(2, 3) == 8"]
depends_on = []
allow_noop = false
max_attempts = 3

[[phases]]
id = "add-modulo"
goal = "Add modulo(a, b)"
depends_on = ["add-power"]
"""

MINIMAL_RUN = '[run]\nid = "r1"\ngoal = "g"\n'


def phase(phase_id: str, extra: str = "") -> str:
    return f'\n[[phases]]\nid = "{phase_id}"\ngoal = "do {phase_id}"\n{extra}\n'


def write_plan(tmp_path: Path, text: str, name: str = "plan.toml") -> Path:
    (tmp_path / "target").mkdir(exist_ok=True)
    (tmp_path / "cassette.jsonl").write_text("")
    plan = tmp_path / name
    plan.write_text(text, encoding="utf-8")
    return plan


MALFORMED = [
    # typos with did-you-mean, at every level
    (MINIMAL_RUN + phase("a") + "[extra]\nx = 1\n", "extra: unknown key; valid keys: run, phases"),
    ('[runn]\nid = "r"\n' + MINIMAL_RUN + phase("a"), "runn: unknown key; did you mean 'run'?"),
    (MINIMAL_RUN + 'tset_command = "x"\n' + phase("a"),
     "run.tset_command: unknown key; did you mean 'test_command'?"),
    (MINIMAL_RUN + '[run.models]\nbuildr = "m"\n' + phase("a"),
     "run.models.buildr: unknown key; did you mean 'builder'?"),
    (MINIMAL_RUN + "[run.limits]\nmax_cost = 1.0\n" + phase("a"),
     "run.limits.max_cost: unknown key; did you mean 'max_cost_usd'?"),
    (MINIMAL_RUN + phase("a") + phase("b", 'complexty = "low"'),
     "phases[1].complexty: unknown key; did you mean 'complexity'?"),
    (MINIMAL_RUN + phase("a", 'dependson = ["b"]'),
     "phases[0].dependson: unknown key; did you mean 'depends_on'?"),
    # bad enums and ids
    (MINIMAL_RUN + phase("a") + phase("b", 'category = "feat"'),
     "phases[1].category: 'feat' is not one of feature, bugfix, tests, docs, refactor, config; "
     "did you mean 'feature'?"),
    (MINIMAL_RUN + phase("a", 'complexity = "hard"'),
     "phases[0].complexity: 'hard' is not one of low, medium, high"),
    ('[run]\nid = "Calc V1"\ngoal = "g"\n' + phase("a"),
     "run.id: 'Calc V1' is not a valid id (lowercase letters, digits, '.', '_', '-'; max 64); "
     "try 'calc-v1'"),
    ('[run]\nid = "' + "a" * 65 + '"\ngoal = "g"\n' + phase("a"), "run.id: 'aaaa"),
    (MINIMAL_RUN + phase("Add_Power"), "phases[0].id: 'Add_Power' is not a valid id"),
    # duplicate ids and dependency problems
    (MINIMAL_RUN + phase("a") + phase("b") + phase("a"),
     "phases[2].id: duplicate id 'a' (also phases[0].id)"),
    (MINIMAL_RUN + phase("add-power") + phase("b", 'depends_on = ["add-powr"]'),
     "phases[1].depends_on[0]: unknown phase 'add-powr'; did you mean 'add-power'?"),
    (MINIMAL_RUN + phase("a", 'depends_on = ["a"]'),
     "phases[0].depends_on[0]: phase 'a' depends on itself"),
    (MINIMAL_RUN + phase("a", 'depends_on = ["c"]') + phase("b", 'depends_on = ["a"]')
     + phase("c", 'depends_on = ["b"]'),
     "phases[0].depends_on: dependency cycle a -> c -> b -> a"),
    # paths
    (MINIMAL_RUN + phase("a", 'scope = ["/etc/passwd"]'),
     "phases[0].scope[0]: '/etc/passwd' is absolute"),
    (MINIMAL_RUN + phase("a", 'scope = ["src/../../outside.py"]'),
     "phases[0].scope[0]: 'src/../../outside.py' contains '..'"),
    (MINIMAL_RUN + phase("a", 'context = ["ok.py", "src\\\\win.py"]'),
     "phases[0].context[1]: 'src\\\\win.py' contains a backslash"),
    (MINIMAL_RUN + phase("a", 'deliverables = [""]'), "phases[0].deliverables[0]: is empty"),
    (MINIMAL_RUN + phase("a", 'scope = ["./src//a.py"]'),
     "phases[0].scope[0]: './src//a.py' is not a normalised path; write 'src/a.py'"),
    (MINIMAL_RUN + phase("a", "scope = []"), "phases[0].scope: is an empty list"),
    (MINIMAL_RUN + phase("a", 'scope = ["C:/x.py"]'), "phases[0].scope[0]: 'C:/x.py' is absolute"),
    # wrong types
    (MINIMAL_RUN + '[[phases]]\nid = "a"\ngoal = 3\n',
     "phases[0].goal: expected a string, got integer 3"),
    (MINIMAL_RUN + phase("a", 'scope = ["a.py", 2]'),
     "phases[0].scope[1]: expected a string, got integer 2"),
    (MINIMAL_RUN + phase("a", 'acceptance = "works"'),
     "phases[0].acceptance: expected a list of strings, got string 'works'"),
    (MINIMAL_RUN + phase("a", 'allow_noop = "yes"'),
     "phases[0].allow_noop: expected true or false, got string 'yes'"),
    (MINIMAL_RUN + phase("a", "max_attempts = 0"),
     "phases[0].max_attempts: must be an integer from 1 to 1000, got 0"),
    (MINIMAL_RUN + phase("a", "max_attempts = true"),
     "phases[0].max_attempts: expected an integer, got boolean True"),
    (MINIMAL_RUN + "[run.limits]\nmax_cost_usd = -1\n" + phase("a"),
     "run.limits.max_cost_usd: must be a number above 0 and at most 1000000"),
    (MINIMAL_RUN + "[run.limits]\nphase_timeout_s = 1.5\n" + phase("a"),
     "run.limits.phase_timeout_s: expected an integer"),
    (MINIMAL_RUN + "flags = { list = [1] }\n" + phase("a"),
     "run.flags.list: expected a string, boolean or number, got array [1]"),
    (MINIMAL_RUN + "[run.models]\nbuilder = 4\n" + phase("a"),
     "run.models.builder: expected a string"),
    (MINIMAL_RUN + 'builder = "agnet"\n' + phase("a"),
     "run.builder: 'agnet' is not one of agent, single; did you mean 'agent'?"),
    (MINIMAL_RUN + "[run.limits]\nagent_max_turns = 0\n" + phase("a"),
     "run.limits.agent_max_turns: must be an integer from 1 to 10000, got 0"),
    (MINIMAL_RUN + "[run.limits]\nagent_max_test_runs = -1\n" + phase("a"),
     "run.limits.agent_max_test_runs: must be an integer from 0 to 1000, got -1"),
    (MINIMAL_RUN + phase("a", 'acceptance_tests = "tests/test_x.py::test_y"'),
     "phases[0].acceptance_tests: expected a list of strings, got string"),
    (MINIMAL_RUN + phase("a", 'acceptance_tests = [" tests/test_x.py::test_y"]'),
     "phases[0].acceptance_tests[0]: ' tests/test_x.py::test_y' is not a test id"),
    (MINIMAL_RUN + phase("a", 'require_f2p = "no"'), "phases[0].require_f2p: expected true or false"),
    (MINIMAL_RUN + phase("a", "tests_may_change = 1"), "phases[0].tests_may_change: expected true or false"),
    (MINIMAL_RUN + phase("a", "allow_skip = [3]"), "phases[0].allow_skip[0]: expected a string"),
    (MINIMAL_RUN + phase("a", "require_fp2 = true"), "phases[0].require_fp2: unknown key; did you mean 'require_f2p'?"),
    ('run = "calc"\n' + phase("a"), "run: expected a table, got string 'calc'"),
    (MINIMAL_RUN + '[phases]\nid = "a"\ngoal = "g"\n', "phases: expected an array of tables"),
    # missing required keys
    (phase("a"), "run: required key is missing"),
    (MINIMAL_RUN, "phases: required key is missing"),
    ("phases = []\n" + MINIMAL_RUN, "phases: is empty; add at least one [[phases]] table"),
    ('[run]\ngoal = "g"\n' + phase("a"), "run.id: required key is missing; add it to [run]"),
    ('[run]\nid = "r"\n' + phase("a"), "run.goal: required key is missing"),
    (MINIMAL_RUN + '[[phases]]\ngoal = "g"\n', "phases[0].id: required key is missing"),
    (MINIMAL_RUN + '[[phases]]\nid = "a"\n', "phases[0].goal: required key is missing"),
    (MINIMAL_RUN + '[[phases]]\nid = "a"\ngoal = "  "\n', "phases[0].goal: is empty"),
    # invalid TOML, and files the plan points to
    (MINIMAL_RUN + "[[phases]]\nid = a\n", "invalid TOML: Invalid value (at line 5, column 6)"),
    (MINIMAL_RUN + 'repo = "missing-dir"\n' + phase("a"),
     "run.repo: 'missing-dir' resolves to"),
    (MINIMAL_RUN + 'cassette = "nope.jsonl"\n' + phase("a"),
     "run.cassette: 'nope.jsonl' resolves to"),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED, ids=[m[1][:50] for m in MALFORMED])
def test_malformed_plan_is_one_line_error_naming_file_and_key(tmp_path, text, expected):
    plan = write_plan(tmp_path, text)
    with pytest.raises(PlanError) as caught:
        load_plan(plan)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{plan}: ")
    assert expected in message
    assert caught.value.exit_code == 2


def test_path_shown_as_given_relative(tmp_path, monkeypatch):
    write_plan(tmp_path, MINIMAL_RUN + phase("a", 'category = "feat"'))
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(PlanError, match=rf"^{tmp_path.name}/plan.toml: phases\[0\]\.category"):
        load_plan(Path(tmp_path.name) / "plan.toml")


def test_missing_file(tmp_path):
    with pytest.raises(PlanError, match=r"plan.toml: no such file"):
        load_plan(tmp_path / "plan.toml")


def test_not_utf8_names_the_line(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_bytes(b'[run]\nid = "r"\ngoal = "caf\xe9"\n')
    with pytest.raises(PlanError, match=r"plan.toml: not valid UTF-8 \(line 3"):
        load_plan(plan)


def test_full_example_parses_with_resolved_paths(tmp_path):
    spec = load_plan(write_plan(tmp_path, FULL_PLAN))
    run = spec.run
    assert run.id == "calc-v1" and run.base == "main"
    assert run.repo == (tmp_path / "target").resolve()
    assert run.cassette == (tmp_path / "cassette.jsonl").resolve()
    assert run.flags == {"hardening": True, "variant": "b", "temperature": 0.5}
    assert run.models["escalation"] == "claude-opus-5-5"
    assert run.limits == {"max_cost_usd": 5.0, "phase_timeout_s": 900}
    assert run.type == "maintenance"
    first, second = spec.phases
    assert first.scope == ("calc/ops.py", "tests/")
    assert first.context == ("calc/__init__.py",)
    assert first.deliverables == ("tests/test_power.py",)
    assert first.acceptance == ("power(2, 3) == 8",)
    assert second == PhaseSpec(id="add-modulo", goal="Add modulo(a, b)",
                               depends_on=("add-power",), position=1)
    assert spec.warnings == ()
    assert spec.phase("add-modulo") is second


def test_minimal_plan_gets_defaults(tmp_path):
    spec = load_plan(write_plan(tmp_path, MINIMAL_RUN + phase("a"), name="p.toml"),
                     default_max_attempts=5)
    assert spec.run.repo == tmp_path.resolve()
    assert spec.run.base is None and spec.run.cassette is None and spec.run.junit_xml is None
    assert spec.run.test_command is None  # detected from the project when the run starts
    only = spec.phases[0]
    assert (only.category, only.complexity, only.scope, only.allow_noop) == (
        "feature", "medium", None, False)
    assert only.max_attempts == 5


def test_absolute_repo_and_parent_relative_cassette_are_locations(tmp_path):
    repo = tmp_path / "elsewhere"
    repo.mkdir()
    (tmp_path / "c.jsonl").write_text("")
    plans = tmp_path / "plans"
    plans.mkdir()
    spec = load_plan(write_plan(plans, MINIMAL_RUN.replace(
        'goal = "g"', f'goal = "g"\nrepo = "{repo}"\ncassette = "../c.jsonl"') + phase("a")))
    assert spec.run.repo == repo.resolve()
    assert spec.run.cassette == (tmp_path / "c.jsonl").resolve()


def test_unknown_phase_lookup_suggests(tmp_path):
    spec = load_plan(write_plan(tmp_path, FULL_PLAN))
    with pytest.raises(PlanError, match="no phase 'add-powr'; did you mean 'add-power'"):
        spec.phase("add-powr")


def test_legacy_free_text_scope_warns(tmp_path):
    plan = write_plan(tmp_path, MINIMAL_RUN + phase("a", 'scope = "the calculator module"'))
    spec = load_plan(plan)
    assert spec.phases[0].scope is None
    assert spec.phases[0].scope_text == "the calculator module"
    assert spec.warnings == (f"{plan}: phases[0].scope: free-text scope is deprecated; "
                             "list paths (file or dir/) to restrict edits",)


def test_execution_order_respects_dependencies_and_is_stable(tmp_path):
    text = (MINIMAL_RUN + phase("docs", 'depends_on = ["core"]') + phase("core")
            + phase("cli", 'depends_on = ["core", "util"]') + phase("util") + phase("late"))
    spec = load_plan(write_plan(tmp_path, text))
    order = [p.id for p in spec.execution_order()]
    assert order == ["core", "docs", "util", "cli", "late"]
    assert [p.id for p in spec.execution_order()] == order


def test_content_hash_stable_and_sensitive(tmp_path):
    plan = write_plan(tmp_path, FULL_PLAN)
    first = load_plan(plan).content_hash()
    assert load_plan(plan).content_hash() == first
    plan.write_text(FULL_PLAN.replace('goal = "Add modulo(a, b)"', 'goal = "Add modulo(a, b) now"'))
    assert load_plan(plan).content_hash() != first


def test_content_hash_ignores_location_and_explicit_defaults(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    first = load_plan(write_plan(one, MINIMAL_RUN + phase("a")))
    explicit = load_plan(write_plan(two, MINIMAL_RUN + phase("a", 'category = "feature"')))
    assert first.run.repo != explicit.run.repo
    assert first.content_hash() == explicit.content_hash()


def test_comparable_hash_ignores_run_id_flags_and_cassette_only(tmp_path):
    base = load_plan(write_plan(tmp_path, FULL_PLAN))
    (tmp_path / "treatment.jsonl").write_text("")
    variant_text = FULL_PLAN.replace('id = "calc-v1"', 'id = "calc-v1-b"').replace(
        "hardening = true", "hardening = false").replace('"cassette.jsonl"', '"treatment.jsonl"')
    variant = load_plan(write_plan(tmp_path, variant_text, name="variant.toml"))
    assert variant.content_hash() != base.content_hash()
    assert variant.comparable_hash() == base.comparable_hash()
    other = load_plan(write_plan(tmp_path, variant_text.replace('base = "main"', 'base = "dev"'),
                                 name="other.toml"))
    assert other.comparable_hash() != base.comparable_hash()


@pytest.mark.parametrize("extra", ["", 'scope = "legacy text"'])
def test_to_dict_round_trip_through_json(tmp_path, extra):
    spec = load_plan(write_plan(tmp_path, FULL_PLAN + phase("third", extra)))
    stored = json.loads(json.dumps(spec.to_dict()))
    rebuilt = plan_from_dict(stored, spec.path)
    assert rebuilt == spec
    assert isinstance(rebuilt, PlanSpec) and rebuilt.content_hash() == spec.content_hash()


def test_plan_from_dict_validates_but_does_not_require_files(tmp_path):
    spec = load_plan(write_plan(tmp_path, FULL_PLAN))
    (tmp_path / "cassette.jsonl").unlink()
    assert plan_from_dict(spec.to_dict(), spec.path) == spec
    broken = spec.to_dict()
    broken["phases"][0]["category"] = "feat"
    with pytest.raises(UsageError, match="phases\\[0\\].category: 'feat'"):
        plan_from_dict(broken, spec.path)


def test_the_builder_mode_is_in_the_plan_only_when_written_so_older_plans_keep_their_hash(tmp_path):
    plain = load_plan(write_plan(tmp_path, MINIMAL_RUN + phase("a")))
    assert plain.run.builder is None and "builder" not in plain.to_dict()["run"]
    agent = load_plan(write_plan(tmp_path, MINIMAL_RUN + 'builder = "single"\n'
                                 '[run.limits]\nagent_max_turns = 7\nagent_max_test_runs = 0\n' + phase("a")))
    assert (agent.run.builder, agent.run.limits) == ("single", {"agent_max_turns": 7, "agent_max_test_runs": 0})
    assert agent.to_dict()["run"]["builder"] == "single" and agent.content_hash() != plain.content_hash()


@pytest.mark.parametrize(("category", "f2p", "frozen"), [
    ("feature", True, True), ("bugfix", True, True), ("docs", False, True), ("config", False, True),
    ("tests", False, False), ("refactor", False, False)])
def test_goal_evidence_defaults_follow_the_category(tmp_path, category, f2p, frozen):
    spec = load_plan(write_plan(tmp_path, MINIMAL_RUN + phase("a", f'category = "{category}"'))).phases[0]
    assert (spec.f2p_required, spec.old_tests_may_change) == (f2p, not frozen)
    assert not {"acceptance_tests", "require_f2p", "tests_may_change", "allow_skip"} & set(spec.to_dict())


def test_goal_evidence_keys_override_the_category_and_round_trip(tmp_path):
    extra = ('category = "docs"\nrequire_f2p = true\ntests_may_change = true\n'
             'acceptance_tests = ["tests/test_x.py::test_y[1-2]"]\nallow_skip = ["tests/test_x.py::test_slow"]')
    spec = load_plan(write_plan(tmp_path, MINIMAL_RUN + phase("a", extra)))
    phase_spec = spec.phases[0]
    assert (phase_spec.f2p_required, phase_spec.old_tests_may_change) == (True, True)
    assert phase_spec.acceptance_tests == ("tests/test_x.py::test_y[1-2]",)
    assert phase_spec.allow_skip == ("tests/test_x.py::test_slow",)
    assert plan_from_dict(json.loads(json.dumps(spec.to_dict())), spec.path) == spec
    plain = load_plan(write_plan(tmp_path, MINIMAL_RUN + phase("a", 'category = "docs"'), name="plain.toml"))
    assert spec.content_hash() != plain.content_hash()
    opted_out = load_plan(write_plan(tmp_path, MINIMAL_RUN + phase("a", "require_f2p = false"), name="o.toml"))
    assert opted_out.phases[0].f2p_required is False
