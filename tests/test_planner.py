"""`autopack plan` through the real CLI and the real anthropic client, fed by cassettes (one line per turn).

The calc example's planner cassette drafts a plan that `run --dry-run` accepts; invalid drafts get
one repair turn and a second exits 1 writing nothing; an existing file is never replaced without
--force; `--queue --yes` records a run that a drain executes; an edit tool is an error result and
the validator's message reaches the model (requests captured at the HTTP transport).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from conftest import EXAMPLE, cli_env, git, rows

MODEL = "claude-sonnet-5-5"
GOAL = "Add power and modulo to the calculator, and document them"
EXAMPLE_LINES = [json.loads(line) for line in (EXAMPLE / "planner.jsonl").read_text().splitlines()]
VALID = EXAMPLE_LINES[-1]["response"]["body"]["content"][-1]["input"]  # the example's accepted draft


def body(turn: int, *calls: tuple[str, object], stop_reason: str = "tool_use") -> dict:
    content = [{"type": "tool_use", "id": f"toolu_{turn}_{n}", "name": name, "input": given}
               for n, (name, given) in enumerate(calls)]
    return {"id": f"msg_{turn}", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 500, "output_tokens": 100, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}


def planner_line(turn: int, *calls: tuple[str, object]) -> dict:
    """A hand-written planner line: no phase, no attempt (contract 3's planner key)."""
    return {"role": "planner", "response": {"status": 200, "headers": {}, "body": body(turn, *calls)}}


def draft(**changes) -> dict:
    """The example's valid draft with ``changes`` applied to its phases (index -> dict of keys)."""
    plan = copy.deepcopy(VALID)
    for index, keys in changes.get("phases", {}).items():
        plan["phases"][index].update(keys)
    return plan


UNKNOWN_KEY = draft(phases={0: {"deliverable": ["tests/test_power.py"]}})
CYCLE = draft(phases={0: {"depends_on": ["document-operations"]}})
OUTSIDE = draft(phases={1: {"scope": ["../outside.py", "tests/test_modulo.py"]}})


def write_cassette(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def plan_cli(autopack, cwd: Path, *args: str, env: dict | None = None):
    return autopack("plan", GOAL, "--repo", "calc/target", "--db", str(cwd / "state" / "autopack.db"), *args,
                    cwd=cwd, env=env)


def test_the_example_cassette_drafts_a_plan_that_run_dry_run_accepts(calc_project, autopack):
    root = calc_project.parent
    done = plan_cli(autopack, root, "--cassette", "calc/planner.jsonl", "-o", "drafted.toml")
    assert done.returncode == 0, done.stderr
    text = (root / "drafted.toml").read_text()
    assert text.startswith("# Drafted by `autopack plan` on ") and f"# Goal: {GOAL}" in text
    assert "with claude-sonnet-5-5: 4 turns, $0." in text
    import tomllib

    data = tomllib.loads(text)
    assert data["run"] == {"id": "calc-power-modulo", "goal": GOAL, "repo": "calc/target",
                           "test_command": "python -m pytest -q"}  # a planner-only cassette is not the run's
    assert [phase["id"] for phase in data["phases"]] == ["add-power", "add-modulo", "document-operations"]
    assert data["phases"][1]["scope"] == ["calc/ops.py", "tests/test_modulo.py"]  # the repaired draft
    assert data["phases"][0]["acceptance_tests"] == ["tests/test_power.py::test_power",
                                                     "tests/test_power.py::test_power_negative_exponent"]
    checked = autopack("run", "drafted.toml", "--dry-run", "--db", str(root / "state" / "autopack.db"), cwd=root)
    assert checked.returncode == 0, checked.stderr
    assert "add-power" in checked.stdout and "python -m pytest -q" in checked.stdout
    assert not (root / "state").exists()  # neither command made a database


def test_phases_are_written_in_dependency_order(calc_project, autopack):
    root = calc_project.parent
    reordered = copy.deepcopy(VALID)
    reordered["phases"] = [reordered["phases"][2], reordered["phases"][1], reordered["phases"][0]]
    cassette = write_cassette(root / "c.jsonl", [planner_line(1, ("submit_plan", reordered))])
    done = plan_cli(autopack, root, "--cassette", str(cassette), "-o", "-")
    assert done.returncode == 0, done.stderr
    import tomllib

    phases = [phase["id"] for phase in tomllib.loads(done.stdout)["phases"]]
    assert phases == ["add-power", "add-modulo", "document-operations"]


@pytest.mark.parametrize("first, needle", [
    (UNKNOWN_KEY, "phases[0].deliverable: unknown key; did you mean 'deliverables'?"),
    (CYCLE, "dependency cycle"),
    (OUTSIDE, "phases[1].scope[0]: '../outside.py' contains '..'"),
], ids=["unknown-key", "cycle", "outside-the-project"])
def test_a_second_invalid_draft_exits_1_and_writes_nothing(calc_project, autopack, first, needle):
    root = calc_project.parent
    cassette = write_cassette(root / "c.jsonl", [planner_line(1, ("submit_plan", first)),
                                                 planner_line(2, ("submit_plan", first)),
                                                 planner_line(3, ("submit_plan", VALID))])  # never reached
    done = plan_cli(autopack, root, "--cassette", str(cassette), "-o", "drafted.toml")
    assert done.returncode == 1, done.stderr
    assert needle in done.stderr and "still invalid after its repair turn" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (root / "drafted.toml").exists()
    assert sorted(p.name for p in root.iterdir()) == ["c.jsonl", "calc"]


@pytest.mark.parametrize("first", [UNKNOWN_KEY, CYCLE, OUTSIDE], ids=["unknown-key", "cycle", "outside-the-project"])
def test_an_invalid_draft_repaired_in_the_next_turn_is_written(calc_project, autopack, first):
    root = calc_project.parent
    cassette = write_cassette(root / "c.jsonl", [planner_line(1, ("submit_plan", first)),
                                                 planner_line(2, ("submit_plan", VALID))])
    done = plan_cli(autopack, root, "--cassette", str(cassette), "-o", "drafted.toml")
    assert done.returncode == 0, done.stderr
    assert "in 2 turns" in done.stderr and (root / "drafted.toml").is_file()


def test_a_repair_turn_that_only_reads_exits_1(calc_project, autopack):
    root = calc_project.parent
    cassette = write_cassette(root / "c.jsonl", [planner_line(1, ("submit_plan", CYCLE)),
                                                 planner_line(2, ("read_file", {"path": "calc/ops.py"})),
                                                 planner_line(3, ("submit_plan", VALID))])
    done = plan_cli(autopack, root, "--cassette", str(cassette), "-o", "drafted.toml")
    assert done.returncode == 1 and "repair turn (turn 2) did not call submit_plan" in done.stderr
    assert not (root / "drafted.toml").exists()


def test_an_existing_file_is_refused_before_any_call_and_force_replaces_it(calc_project, autopack):
    root = calc_project.parent
    (root / "drafted.toml").write_text("# mine\n")
    refused = plan_cli(autopack, root, "-o", "drafted.toml")  # no cassette, no key: refused before that matters
    assert refused.returncode == 2 and "drafted.toml: already exists" in refused.stderr and "--force" in refused.stderr
    assert (root / "drafted.toml").read_text() == "# mine\n"
    replaced = plan_cli(autopack, root, "--cassette", "calc/planner.jsonl", "-o", "drafted.toml", "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert (root / "drafted.toml").read_text().startswith("# Drafted by")


def test_without_a_cassette_or_an_api_key_it_is_exit_4_in_one_line(calc_project, autopack):
    root = calc_project.parent
    done = plan_cli(autopack, root, "-o", "drafted.toml", "--record", "rec.jsonl")
    assert done.returncode == 4 and "ANTHROPIC_API_KEY is not set" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (root / "drafted.toml").exists() and not (root / "rec.jsonl").exists()


def test_queue_needs_a_terminal_or_yes(calc_project, autopack):
    root = calc_project.parent
    done = plan_cli(autopack, root, "--cassette", "calc/planner.jsonl", "--queue")
    assert done.returncode == 2 and "--yes" in done.stderr
    assert not (root / "plan.toml").exists()


def test_queue_yes_records_a_queued_run_that_a_drain_executes(calc_project, autopack, tmp_path):
    root = calc_project.parent
    one_phase = {"run": {"id": "calc-power"}, "phases": [VALID["phases"][0]]}
    builder = json.loads((EXAMPLE / "cassette.jsonl").read_text().splitlines()[0])  # add-power's single answer
    assert builder["phase"] == "add-power"
    cassette = write_cassette(root / "both.jsonl", [planner_line(1, ("list_files", {})),
                                                    planner_line(2, ("submit_plan", one_phase)), builder])
    env = {**cli_env(tmp_path / "home"), "AUTOPACK_BUILDER": "single"}
    (tmp_path / "home").mkdir()
    db = root / "state" / "autopack.db"
    done = plan_cli(autopack, root, "--cassette", str(cassette), "-o", "drafted.toml", "--queue", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "recorded as queued" in done.stdout
    assert rows(db, "SELECT phase_id, state FROM phases WHERE run_id = 'calc-power'") == [("add-power", "queued")]
    planner_rows = rows(db, "SELECT role, phase_id, attempt_id, input_tokens, output_tokens, cost_usd FROM llm_calls "
                            "WHERE run_id = 'calc-power'")
    assert [row[:5] for row in planner_rows] == [("planner", None, None, 500, 100)] * 2
    assert all(row[5] > 0 for row in planner_rows)
    drained = autopack("drain", "--db", str(db), cwd=root, env=env)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert rows(db, "SELECT state FROM phases WHERE run_id = 'calc-power'") == [("complete",)]
    assert "def power" in git(calc_project, "show", "autopack/calc-power:target/calc/ops.py")
    roles = rows(db, "SELECT role, count(*) FROM llm_calls WHERE run_id = 'calc-power' GROUP BY role ORDER BY role")
    assert roles == [("builder", 1), ("planner", 2)]


def test_queue_with_an_id_already_recorded_is_refused_before_planning(calc_project, autopack):
    root = calc_project.parent
    db = root / "state" / "autopack.db"
    first = plan_cli(autopack, root, "--cassette", "calc/planner.jsonl", "-o", "a.toml", "--queue", "--yes")
    assert first.returncode == 0, first.stderr
    again = plan_cli(autopack, root, "--cassette", "calc/planner.jsonl", "-o", "b.toml", "--queue", "--yes",
                     "--id", "calc-power-modulo")
    assert again.returncode == 2 and "--id calc-power-modulo: a run 'calc-power-modulo' is already recorded" in again.stderr
    assert not (root / "b.toml").exists()
    assert rows(db, "SELECT count(*) FROM runs") == [(1,)]


# --- in process: what the model is sent -----------------------------------------------------------------

def drafting(tmp_path: Path, answers: list[dict], monkeypatch, record: Path | None = None,
             **settings_env: str) -> tuple[list[dict], object]:
    """Draft a plan for a calc copy with a live client whose network is a transport serving ``answers``;
    returns the JSON bodies sent and the outcome (a DraftedPlan, or the PlanningFailed raised)."""
    import shutil

    import httpx2

    from autopack.config import load_settings
    from autopack.drafting import draft_plan
    from autopack.engine.planner import PlanningFailed

    env = cli_env(tmp_path / "home")
    shutil.copytree(EXAMPLE, tmp_path / "calc")
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "initial")):
        git(tmp_path / "calc", *args, env=env)
    sent: list[dict] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        from autopack.llm.wire import message_to_sse

        sent.append(json.loads(request.content))
        reply = answers[len(sent) - 1]
        if sent[-1].get("stream"):  # past 21,000 max_tokens the call is streamed
            return httpx2.Response(200, content=message_to_sse(reply), headers={"content-type": "text/event-stream"})
        return httpx2.Response(200, json=reply)

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-planner")
    monkeypatch.setattr("autopack.llm.client._network_transport", lambda: httpx2.MockTransport(answer))
    settings = load_settings(tmp_path, environ={"AUTOPACK_DB": str(tmp_path / "state" / "db.sqlite"), **settings_env})
    try:
        outcome = draft_plan(settings, GOAL, repo=tmp_path / "calc" / "target", output=str(tmp_path / "out.toml"),
                             record=record)
    except PlanningFailed as failed:
        outcome = failed
    return sent, outcome


def results(request: dict) -> list[dict]:
    return [block for block in request["messages"][-1]["content"] if block.get("type") == "tool_result"]


def test_edit_tools_and_run_tests_are_error_results_and_change_nothing(tmp_path, monkeypatch):
    ops = (EXAMPLE / "target" / "calc" / "ops.py").read_text()
    sent, outcome = drafting(tmp_path, [
        body(1, ("write_file", {"path": "calc/ops.py", "content": "x = 1\n"}),
             ("edit_file", {"path": "calc/ops.py", "old": "def add", "new": "def plus"}),
             ("run_tests", {}), ("read_file", {"path": "calc/__init__.py"})),
        body(2, ("submit_plan", VALID)),
    ], monkeypatch)
    assert not isinstance(outcome, Exception), outcome
    refused, read = results(sent[1])[:3], results(sent[1])[3]
    assert all(block["is_error"] and "not available while planning" in block["content"] for block in refused)
    assert "is_error" not in read and "A tiny calculator" in read["content"]
    assert (tmp_path / "calc" / "target" / "calc" / "ops.py").read_text() == ops
    assert [tool["name"] for tool in sent[0]["tools"]] == ["list_files", "read_file", "search", "submit_plan"]
    assert {request["model"] for request in sent} == {MODEL}


def test_the_validators_message_is_the_repair_turns_input(tmp_path, monkeypatch):
    sent, outcome = drafting(tmp_path, [body(1, ("submit_plan", CYCLE)), body(2, ("submit_plan", CYCLE))],
                             monkeypatch)
    assert "still invalid after its repair turn" in str(outcome)
    [refusal] = results(sent[1])
    assert refusal["is_error"] and "dependency cycle add-power -> document-operations -> add-power" in refusal["content"]
    assert "your only repair turn" in refusal["content"]
    assert len(sent) == 2 and not (tmp_path / "out.toml").exists()


def test_the_turn_limit_ends_planning(tmp_path, monkeypatch):
    reads = [body(turn, ("list_files", {})) for turn in (1, 2, 3)]
    sent, outcome = drafting(tmp_path, reads, monkeypatch, AUTOPACK_PLANNER_MAX_TURNS="2")
    assert "used its 2 turns" in str(outcome) and len(sent) == 2


def test_submit_plans_schema_names_every_phase_key_of_contract_1():
    from autopack.plan import _PHASE_KEYS
    from autopack.plan_writer import PHASE_PROPERTIES, plan_schema

    assert set(PHASE_PROPERTIES) == set(_PHASE_KEYS) and len(PHASE_PROPERTIES) == len(_PHASE_KEYS)
    assert plan_schema(4)["properties"]["phases"]["maxItems"] == 4


def test_a_recorded_planning_conversation_replays_to_the_same_plan(tmp_path, monkeypatch, autopack):
    recorded = tmp_path / "recorded.jsonl"
    sent, outcome = drafting(tmp_path, [body(1, ("read_file", {"path": "calc/ops.py"})),
                                        body(2, ("submit_plan", CYCLE)), body(3, ("submit_plan", VALID))],
                             monkeypatch, record=recorded)
    assert not isinstance(outcome, Exception), outcome
    lines = [json.loads(line) for line in recorded.read_text().splitlines()]
    assert [(line["role"], line["phase"], line["attempt"]) for line in lines] == [("planner", "", 1)] * 3
    assert "sk-test-planner" not in recorded.read_text()
    replayed = autopack("plan", GOAL, "--repo", "calc/target", "--cassette", str(recorded), "-o", "-",
                        "--db", str(tmp_path / "state" / "db.sqlite"), cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    # the same file but for its first line, which names the date
    assert replayed.stdout.split("\n", 1)[1] == outcome.text.split("\n", 1)[1]


def test_a_cut_off_turn_is_escalated_once_and_never_run(tmp_path, monkeypatch):
    cut = body(1, ("submit_plan", VALID), stop_reason="max_tokens")
    sent, outcome = drafting(tmp_path, [cut, cut], monkeypatch)
    assert "cut off at max_tokens=32768, after its one escalation" in str(outcome)
    assert [request["max_tokens"] for request in sent] == [16384, 32768]
    assert not (tmp_path / "out.toml").exists()  # the cut-off submit_plan was never checked or written
