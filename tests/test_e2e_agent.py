"""The agent builder through the real CLI and the real anthropic client, fed by cassettes (one line per turn).

The inventory example end to end; the loop's rules (scope, refused reads, limits, a cut-off turn,
an exhausted cassette, cost caps) on the drain workbench's fast `python check.py` suite; a recorded
agent run replayed to the same decisions; a run recorded before builder modes resuming as single.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from autopack.caps import estimate_call_usd
from autopack.llm.budget import estimate_budget
from conftest import git, rows
from drainkit import Workbench

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "inventory"
SONNET = "claude-sonnet-5-5"


def turn_line(phase: str, turn: int, *calls: tuple[str, dict], attempt: int = 1, stop_reason: str = "tool_use",
              output_tokens: int = 80, input_tokens: int = 900, text: str = "") -> dict:
    """A cassette line: one agent turn's answer, whose tool_use blocks are ``calls``."""
    content = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_{phase}_{turn}_{n}", "name": name, "input": given}
                for n, (name, given) in enumerate(calls)]
    body = {"id": f"msg_{phase}_{turn}", "type": "message", "role": "assistant", "model": SONNET, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    return {"role": "builder", "phase": phase, "attempt": attempt,
            "response": {"status": 200, "headers": {}, "body": body}}


def write(path: str, content: str = "ok\n") -> tuple[str, dict]:
    return ("write_file", {"path": path, "content": content})


FINISH = ("finish", {"summary": "done"})


def agent_plan(wb: Workbench, run_id: str, phase_ids: list[str], lines: list[dict], extra: str = "") -> None:
    plan = ["[run]", f'id = "{run_id}"', 'goal = "Write the files"', 'repo = "../repo"',
            'test_command = "python check.py"', 'junit_xml = "report.xml"', f'cassette = "{run_id}.jsonl"', extra]
    for phase_id in phase_ids:
        plan += ["", "[[phases]]", f'id = "{phase_id}"', f'goal = "Write out/{phase_id}.txt"', 'complexity = "low"',
                 f'scope = ["out/{phase_id}.txt", "out/{phase_id}.bad"]', f'deliverables = ["out/{phase_id}.txt"]',
                 "max_attempts = 1"]
    (wb.plans / f"{run_id}.toml").write_text("\n".join(plan) + "\n")
    (wb.plans / f"{run_id}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def cli_json(wb: Workbench, *args: str, code: int = 0) -> dict:
    done = wb.cli(*args, "--json")
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


def tool_results(wb: Workbench, run_id: str, phase_id: str) -> list[dict]:
    shown = cli_json(wb, "status", run_id, "--transcript", phase_id)
    return [block for exchange in shown["exchanges"] for message in exchange["request"]["messages"]
            for block in message["content"] if block.get("type") == "tool_result"]


def attempts(db: Path, run_id: str) -> dict[str, tuple]:
    return {phase: (state, kind, message) for phase, state, kind, message in rows(
        db, "SELECT p.phase_id, a.state, a.failure_kind, a.failure_message FROM attempts a "
            "JOIN phases p ON p.pk = a.phase_pk WHERE a.run_id = ? ORDER BY a.id", run_id)}


# --- the inventory example -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inventory(tmp_path_factory, make_git_project, autopack) -> dict:
    project = tmp_path_factory.mktemp("inventory") / "inventory"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".autopack"))
    make_git_project(project)
    done = autopack("run", "plan.toml", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(autopack("status", "inventory-demo", "--json", cwd=project).stdout)
    shown = json.loads(autopack("status", "inventory-demo", "--transcript", "low-stock", "--json", cwd=project).stdout)
    return {"project": project, "db": project / ".autopack" / "autopack.db", "status": status, "transcript": shown}


def test_the_inventory_example_explores_edits_tests_fixes_and_completes(inventory):
    [phase] = inventory["status"]["phases"]
    assert (phase["state"], phase["attempts"], phase["transcripts"]) == (
        "complete", 1, [{"attempt": 1, "builder": "agent", "turns": 7}])
    assert phase["decision"]["delta"]["added"] == [
        "tests.test_low_stock::test_low_stock_lists_skus_below_the_threshold_sorted",
        "tests.test_low_stock::test_a_sku_at_the_threshold_is_not_low",
        "tests.test_low_stock::test_a_sold_out_sku_is_low"]
    calls = [block["name"] for exchange in inventory["transcript"]["exchanges"]
             for block in exchange["response"]["content"] if block["type"] == "tool_use"]
    assert calls == ["list_files", "search", "read_file", "edit_file", "write_file", "run_tests", "edit_file", "finish"]
    listed, found, read, edited, wrote, tested, fixed = [block["content"] for block in
                                                         _results(inventory["transcript"])]
    assert listed.splitlines()[0] == "7 files:" and "inventory/stock.py (937 bytes)" in listed
    assert found.splitlines() == ["2 matches in 3 files:", "inventory/stock.py:8: class Stock:",
                                  "inventory/stock.py:30:     def skus(self):"]
    assert read.startswith("inventory/stock.py: lines 1-32 of 32\n     1\t\"\"\"Stock levels per SKU.\"\"\"")
    assert (edited, wrote) == ("edited inventory/stock.py (1117 bytes written)",
                               "wrote tests/test_low_stock.py (521 bytes written)")
    assert tested.startswith("test run 1 of 5: exit code 1\n7 tests: 6 passed, 1 failed")
    assert "FAILED tests.test_low_stock::test_a_sku_at_the_threshold_is_not_low" in tested
    assert fixed == "edited inventory/stock.py (1116 bytes written)"
    committed = git(inventory["project"], "show", f"{phase['commit']}:target/inventory/stock.py")
    assert "if self.quantity(sku) < threshold]" in committed
    assert rows(inventory["db"], "SELECT kind, count(*) FROM test_runs GROUP BY kind ORDER BY kind") == [
        ("agent", 1), ("attempt", 1), ("baseline", 1), ("f2p", 1)]
    assert phase["decision"]["evidence"]["fail_to_pass"] and phase["decision"]["evidence"]["rules"]["f2p"] == "met"


def _results(transcript: dict) -> list[dict]:
    return [block for exchange in transcript["exchanges"] for message in exchange["request"]["messages"]
            for block in message["content"] if block.get("type") == "tool_result"]


def test_the_inventory_runs_tokens_are_the_cassettes_and_its_cache_ratio_is_shown_for_the_agent(inventory, autopack):
    usage = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    for line in (EXAMPLE / "cassette.jsonl").read_text().splitlines():
        body = json.loads(line)["response"]["body"]["usage"]
        usage["input"] += body["input_tokens"]
        usage["output"] += body["output_tokens"]
        usage["cache_read"] += body["cache_read_input_tokens"]
        usage["cache_write"] += body["cache_creation_input_tokens"]
    assert inventory["status"]["run"]["tokens"] == usage
    stats = json.loads(autopack("status", "--stats", "--json", cwd=inventory["project"]).stdout)
    assert stats["by_builder"]["agent"]["builder_calls"] == 7
    assert stats["by_builder"]["agent"]["cache_hit_ratio"] > 0.8


# --- the loop's rules through the real client ---------------------------------------------------------

@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> dict:
    wb = Workbench(tmp_path_factory.mktemp("agent-scenarios"))
    outside = wb.root / "outside.txt"
    outside.write_text("OUTSIDE-SECRET\n")
    os.symlink(outside, wb.repo / "leak.txt")
    git(wb.repo, "add", "-A", env=wb.env)
    git(wb.repo, "commit", "-q", "-m", "a link out", env=wb.env)
    budget = estimate_budget(category="feature", complexity="low", deliverables=1, scope_files=0,
                             scope_bytes=0).max_tokens
    lines = [
        turn_line("cut-off", 1, write("out/cut-off.bad"), stop_reason="max_tokens", output_tokens=budget),
        turn_line("cut-off", 1, write("out/cut-off.txt")),
        turn_line("cut-off", 2, FINISH),
        turn_line("explore", 1, ("list_files", {}), ("search", {"pattern": "sanity", "glob": "*.py"})),
        turn_line("explore", 2, write("out/explore.txt"), ("run_tests", {})),
        turn_line("explore", 3, FINISH),
        turn_line("scope-fix", 1, write("README.md", "replaced\n")),
        turn_line("scope-fix", 2, write("out/scope-fix.txt")),
        turn_line("scope-fix", 3, FINISH),
        turn_line("reads", 1, ("read_file", {"path": ".git/config"}), ("read_file", {"path": "../outside.txt"}),
                  ("read_file", {"path": str(outside)}), ("read_file", {"path": "leak.txt"})),
        turn_line("reads", 2, write("out/reads.txt")),
        turn_line("reads", 3, FINISH),
        turn_line("limit-edits", 1, write("out/limit-edits.txt")),
        turn_line("limit-edits", 2, ("list_files", {})),
        turn_line("limit-edits", 3, ("list_files", {"path": "out"})),
        *[turn_line("limit-none", n, ("list_files", {})) for n in (1, 2, 3)],
        turn_line("exhausted", 1, write("out/exhausted.txt")),
    ]
    # cut-off first: its budget is the heuristic's (later phases' budgets come from this run's history)
    phases = ["cut-off", "explore", "scope-fix", "reads", "limit-edits", "limit-none", "exhausted"]
    agent_plan(wb, "rules", phases, lines, extra='builder = "agent"\n\n[run.limits]\nagent_max_turns = 3')
    done = wb.cli("run", "plans/rules.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    return {"wb": wb, "budget": budget, "status": {p["id"]: p for p in cli_json(wb, "status", "rules")["phases"]},
            "attempts": attempts(wb.db, "rules")}


def test_exploration_then_an_edit_then_finish_completes(scenarios):
    wb = scenarios["wb"]
    assert scenarios["status"]["explore"]["state"] == "complete"
    listed, found, wrote, tested = [block["content"] for block in tool_results(wb, "rules", "explore")]
    check = (wb.repo / "check.py").stat().st_size
    assert listed.splitlines() == ["5 files:", ".gitignore (11 bytes)", f"check.py ({check} bytes)",
                                   "leak.txt (symbolic link)", "out/.keep (0 bytes)", "out/cut-off.txt (3 bytes)"]
    sanity = next(n for n, line in enumerate((wb.repo / "check.py").read_text().splitlines(), 1)
                  if line.startswith("sanity = "))
    assert found.startswith(f"2 matches in 1 file:\ncheck.py:{sanity}: sanity = ")
    assert wrote == "wrote out/explore.txt (3 bytes written)"
    assert tested == "test run 1 of 5: exit code 0\n3 tests: 3 passed, 0 failed, 0 errors, 0 skipped"


def test_an_edit_outside_scope_is_an_error_result_and_the_corrected_edit_is_applied_real_client(scenarios):
    wb = scenarios["wb"]
    refused, applied = tool_results(wb, "rules", "scope-fix")
    assert refused["is_error"] is True and "outside the phase scope" in refused["content"]
    assert "is_error" not in applied and scenarios["status"]["scope-fix"]["state"] == "complete"
    assert "README.md" not in git(wb.repo, "log", "--name-only", "--format=", "main..autopack/rules", env=wb.env)


def test_reads_of_git_outside_absolute_and_symlinked_paths_are_refused_results(scenarios):
    results = tool_results(scenarios["wb"], "rules", "reads")[:4]
    assert all(block["is_error"] for block in results)
    assert ["protected '.git'" in results[0]["content"], "'..'" in results[1]["content"],
            "absolute" in results[2]["content"], "outside the project" in results[3]["content"]] == [True] * 4
    assert "OUTSIDE-SECRET" not in json.dumps(results) and scenarios["status"]["reads"]["state"] == "complete"


def test_the_turn_limit_ends_the_attempt_judged_with_edits_and_agent_limit_without(scenarios):
    assert scenarios["status"]["limit-edits"]["state"] == "complete"
    state, kind, message = scenarios["attempts"]["limit-none"]
    assert (state, kind) == ("failed", "agent_limit") and "used its 3 turns" in message
    assert scenarios["status"]["limit-none"]["last_failure"]["kind"] == "agent_limit"


def test_a_cut_off_turn_is_escalated_and_its_tool_calls_never_run(scenarios):
    wb, budget = scenarios["wb"], scenarios["budget"]
    assert scenarios["status"]["cut-off"]["state"] == "complete"
    assert rows(wb.db, "SELECT max_tokens, stop_reason FROM llm_calls WHERE phase_id = 'cut-off' ORDER BY id") == [
        (budget, "max_tokens"), (2 * budget, "tool_use"), (budget, "tool_use")]
    assert "cut-off.bad" not in git(wb.repo, "log", "--all", "--name-only", "--format=", env=wb.env)
    [(data,)] = rows(wb.db, "SELECT data FROM events WHERE kind = 'escalation' AND phase_id = 'cut-off'")
    assert json.loads(data) == {"reason": "max_tokens", "utilisation": 1.0, "base": budget, "new": 2 * budget}


def test_a_cassette_that_runs_out_mid_attempt_fails_as_cassette_exhausted(scenarios):
    state, kind, message = scenarios["attempts"]["exhausted"]
    assert (state, kind) == ("failed", "cassette_exhausted")
    assert message == "cassette has no builder response for phase 'exhausted' attempt 1 (turn 2)"


def test_a_cost_cap_stops_the_loop_before_the_turn_that_would_pass_it_real_client(tmp_path):
    wb = Workbench(tmp_path)
    budget = estimate_budget(category="feature", complexity="low", deliverables=1, scope_files=0,
                             scope_bytes=0).max_tokens
    per_turn = estimate_call_usd(SONNET, 4 * 1000, 4000)  # each turn's cost, from the cassette's usage
    cap = round(estimate_call_usd(SONNET, 20_000, budget) + 1.5 * per_turn, 4)
    lines = [turn_line("spender", n, ("list_files", {}), input_tokens=1000, output_tokens=4000) for n in range(1, 6)]
    agent_plan(wb, "capped", ["spender"], lines, extra='builder = "agent"')
    done = wb.cli("run", "plans/capped.toml", "--max-cost", str(cap))
    assert done.returncode == 1, done.stdout + done.stderr
    assert rows(wb.db, "SELECT count(*) FROM llm_calls") == [(2,)]
    state, kind, message = attempts(wb.db, "capped")["spender"]
    assert (state, kind) == ("failed", "agent_limit")
    assert message.startswith("stopped before turn 3: cost cap reached (--max-cost")
    assert float(rows(wb.db, "SELECT sum(cost_usd) FROM llm_calls")[0][0]) <= cap


# --- record, then replay to the same decisions ----------------------------------------------------------

def test_a_recorded_agent_run_replays_to_the_same_decisions(tmp_path):
    from autopack import launch
    from autopack.config import load_settings
    from autopack.llm.cassette import Cassette, CassetteRecorder
    from autopack.llm.client import make_client_factory
    from autopack.plan import load_plan
    from autopack.ports import SilentObserver
    from autopack.store import open_store
    from autopack.store.queries import run_status
    from autopack.store.transcripts import attempt_transcript
    from test_record import FakeNetwork

    bodies = [turn_line("p", 1, ("list_files", {}), ("read_file", {"path": "check.py", "end_line": 3})),
              turn_line("p", 2, write("out/p.bad", "broken\n"), ("run_tests", {})),
              turn_line("p", 3, ("delete_file", {"path": "out/p.bad"}), write("out/p.txt")),
              turn_line("p", 4, FINISH)]
    recording = tmp_path / "recorded.jsonl"

    def run(root: Path, clients_for) -> tuple[list, dict]:
        wb = Workbench(root)
        agent_plan(wb, "rec", ["p"], [], extra='builder = "agent"')
        settings = load_settings(wb.root, environ=wb.env)
        plan = load_plan(wb.plans / "rec.toml")
        with open_store(settings.db) as store:
            run_record = launch.record_run(store, plan, launch.check_new_run(settings, plan), settings)
            launch.execute(store, settings, plan, run_record, clients_for(settings), SilentObserver())
            phases = [{k: p[k] for k in ("id", "state", "attempts", "decision", "last_failure")}
                      for p in run_status(store, "rec")["phases"]]
            shown = attempt_transcript(store, "rec", "p")
        return phases, [{k: e[k] for k in ("turn", "request", "response")} for e in shown["exchanges"]]

    network = FakeNetwork(*[(200, line["response"]["body"]) for line in bodies])
    root = tmp_path / "bench"  # both runs work at the same paths, so their trees are the same
    live = run(root, lambda s: launch.ModelClients(make_client_factory(
        cassette=None, api_key="sk-ant-live-key-000000", recorder=CassetteRecorder(recording),
        live_transport=network.transport()), None, None))
    shutil.rmtree(root)
    recorded = [json.loads(line) for line in recording.read_text().splitlines()]
    assert [(line["role"], line["phase"], line["attempt"]) for line in recorded] == [("builder", "p", 1)] * 4
    assert "sk-ant-live" not in recording.read_text()
    assert recorded[1]["request"]["messages"][-1]["content"][0]["type"] == "tool_result"
    cassette = Cassette.load(recording)
    replayed = run(root, lambda s: launch.ModelClients(
        make_client_factory(cassette=cassette, api_key=None), cassette, None))
    assert replayed == live
    assert live[0][0]["state"] == "complete" and len(live[1]) == 4


# --- runs recorded before builder modes -----------------------------------------------------------------

def test_a_run_recorded_before_builder_modes_resumes_with_the_single_builder_and_a_new_one_uses_the_agent(tmp_path):
    wb = Workbench(tmp_path)
    single = [{"role": "builder", "phase": "a", "attempt": 1, "response": {"status": 200, "headers": {}, "body": {
        "id": "m", "type": "message", "role": "assistant", "model": SONNET, "stop_reason": "tool_use",
        "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 10},
        "content": [{"type": "tool_use", "id": "t", "name": "write_file",
                     "input": {"path": "out/a.txt", "content": "ok\n"}}]}}}]
    agent_plan(wb, "old", ["a"], single)
    assert wb.cli("run", "plans/old.toml", "--queue-only").returncode == 0
    conn = __import__("sqlite3").connect(wb.db)
    conn.execute("UPDATE runs SET builder = NULL")  # what migration m004 leaves on a run recorded before it
    conn.commit()
    conn.close()
    done = wb.cli("run", "--run-id", "old")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(wb.db, "SELECT builder FROM attempts") == [("single",)]

    agent_plan(wb, "new", ["a"], [turn_line("a", 1, write("out/a.txt")), turn_line("a", 2, FINISH)])
    done = wb.cli("run", "plans/new.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert rows(wb.db, "SELECT r.builder, a.builder FROM attempts a JOIN runs r ON r.id = a.run_id "
                       "WHERE r.id = 'new'") == [("agent", "agent")]
