"""The agent builder's turn loop through the runner, with the ScriptedBuilder (no HTTP).

Real git worktrees, real pytest runs (the baseline, the agent's run_tests, the gate) and a real
SQLite store; only the model is a script.
"""

from __future__ import annotations

import json

import pytest

from agentkit import bench
from autopack.caps import CostCap, estimate_call_usd
from autopack.llm.budget import estimate_budget
from autopack.llm.scripted import ScriptedBuilder, ScriptedTurn, ScriptedTurns
from autopack.runner import execute_run, run_attempt
from autopack.store.transcripts import attempt_transcript
from conftest import git, rows

COUNT = ["shop/cart.py", "tests/"]
TOTAL_LINE = "    return sum(price * quantity for price, quantity in items)\n"
BUGGY_COUNT = TOTAL_LINE + "\n\ndef count(items):\n    return len(items)\n"
TEST_COUNT = "from shop.cart import count\n\n\ndef test_count():\n    assert count([(2, 3), (1, 1)]) == 4\n"


def add_count_phase(**changes) -> dict:
    """Most scripts here add count() without a test: goal evidence is not what they exercise."""
    return {"id": "add-count", "goal": "Add count(items): the number of units in the cart", "scope": COUNT,
            "max_attempts": 1, "require_f2p": False, **changes}


def exchanges(b, phase_id="add-count", attempt=None) -> list[dict]:
    return attempt_transcript(b.store, b.run.id, phase_id, attempt)["exchanges"]


def results(b, phase_id="add-count", attempt=None) -> list[dict]:
    """Every tool_result block the model was sent, in order."""
    return [block for e in exchanges(b, phase_id, attempt) for m in e["request"]["messages"] for block in m["content"]
            if block.get("type") == "tool_result"]


def attempt_row(b, phase_id="add-count") -> tuple:
    return rows(b.settings.db, "SELECT a.state, a.failure_kind, a.failure_message, a.builder FROM attempts a "
                               "JOIN phases p ON p.pk = a.phase_pk WHERE p.phase_id = ? ORDER BY a.number DESC",
                phase_id)[0]


def claimed(b):
    return b.store.claim_next(b.run.id, "test-executor", 120)


def test_exploring_then_editing_testing_fixing_and_finishing_completes(tmp_path):
    b = bench(tmp_path, [add_count_phase(require_f2p=True)])
    script = [
        [("list_files", {})],
        [("read_file", {"path": "shop/cart.py"}), ("search", {"pattern": "def total", "glob": "*.py"})],
        [("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT}),
         ("write_file", {"path": "tests/test_count.py", "content": TEST_COUNT})],
        [("run_tests", {})],
        [("edit_file", {"path": "shop/cart.py", "old": "    return len(items)\n",
                        "new": "    return sum(quantity for _, quantity in items)\n"})],
        [("run_tests", {"tests": ["tests/test_count.py"]})],
        [("finish", {"summary": "count() added, with a test"})],
    ]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    sent = [block["content"] for block in results(b)]
    assert sent[0].startswith("6 files:\n.gitignore (28 bytes)")
    assert sent[1].startswith("shop/cart.py: lines 1-6 of 6\n     1\t")
    assert sent[2] == "1 match in 3 files:\nshop/cart.py:4: def total(items):"
    assert "FAILED tests.test_count::test_count" in sent[5] and "assert 2 == 4" in sent[5]
    assert sent[7].startswith("test run 2 of 5 (1 named test): exit code 0")
    worktree = b.context(None).workspace
    assert "sum(quantity for _, quantity in items)" in git(worktree.worktree, "show", "HEAD:shop/cart.py")
    # the agent's own runs are not evidence: the gate's fail-to-pass run of tests/test_count.py is
    assert rows(b.settings.db, "SELECT kind, count(*) FROM test_runs GROUP BY kind ORDER BY kind") == [
        ("agent", 2), ("attempt", 1), ("baseline", 1), ("f2p", 1)]
    assert attempt_row(b)[::3] == ("complete", "agent")
    stats = json.loads(rows(b.settings.db, "SELECT apply_stats FROM attempts")[0][0])
    assert stats == {"operations_parsed": 3, "operations_applied": 3, "bytes_written": stats["bytes_written"],
                     "files_touched": ["shop/cart.py", "tests/test_count.py"], "files_changed": 2}
    assert [(e["turn"], len(e["request"]["messages"])) for e in exchanges(b)] == [(n, 1) for n in range(1, 8)]
    assert len(rows(b.settings.db, "SELECT id FROM llm_calls WHERE role = 'builder'")) == 7


def test_an_edit_outside_scope_is_an_error_result_and_the_corrected_edit_is_applied(tmp_path):
    b = bench(tmp_path, [add_count_phase(scope=["shop/cart.py"], allow_noop=False)])
    script = [
        [("write_file", {"path": "README.md", "content": "# shop\n\ncount() too\n"})],
        [("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT})],
        [("finish", {"summary": "done"})],
    ]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    refused, applied = results(b)
    assert refused["is_error"] is True and "outside the phase scope (shop/cart.py)" in refused["content"]
    assert "is_error" not in applied and applied["content"].startswith("edited shop/cart.py")
    head = b.context(None).workspace.worktree
    assert git(head, "show", "HEAD:README.md") == "# shop\n\nA cart with total()."
    assert "def count(items)" in git(head, "show", "HEAD:shop/cart.py")


def test_reads_outside_the_project_are_refused_results_and_the_attempt_goes_on(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    (tmp_path / "outside.txt").write_text("OUTSIDE-SECRET")
    script = [[("read_file", {"path": ".git/config"}), ("read_file", {"path": "../outside.txt"}),
               ("read_file", {"path": str(tmp_path / "outside.txt")}),
               ("search", {"pattern": "OUTSIDE", "path": ".."})],
              [("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT})],
              [("finish", {"summary": "done"})]]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    refused = results(b)[:4]
    assert all(block["is_error"] for block in refused)
    assert "OUTSIDE-SECRET" not in json.dumps(exchanges(b))


@pytest.mark.parametrize("edits", [True, False], ids=["with-edits", "without-edits"])
def test_the_turn_limit_ends_the_attempt(tmp_path, edits):
    b = bench(tmp_path, [add_count_phase()])
    first = [("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT})] if edits else \
        [("list_files", {})]
    script = [first, [("read_file", {"path": "shop/cart.py"})], [("list_files", {"glob": "*.md"})],
              [("finish", {"summary": "never reached"})]]
    builder = ScriptedBuilder(script, max_turns=3)
    state = execute_run(b.context(builder))
    assert builder.model.played == 3
    if edits:  # judged like a finish
        assert state == {"complete": 1}
    else:
        assert state == {"failed": 1}
        state_, kind, message, _ = attempt_row(b)
        assert (state_, kind) == ("failed", "agent_limit") and "used its 3 turns" in message


def test_a_cost_cap_stops_the_loop_before_the_turn_that_would_pass_it(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    turn = ScriptedTurn.of(("list_files", {}), output_tokens=4000)  # $0.06 of output per turn
    per_turn = estimate_call_usd("claude-sonnet-5-5", 0, 4000)
    budget = estimate_budget(category="feature", complexity="medium", deliverables=0, scope_files=2,
                             scope_bytes=173 + 140).max_tokens  # every turn's max_tokens
    estimate = estimate_call_usd("claude-sonnet-5-5", 12_000, budget)  # a generous upper bound of a turn's request
    cap = CostCap("test cap", estimate + 1.5 * per_turn, lambda: b.store.run_cost(b.run.id))
    builder = ScriptedBuilder([turn] * 10)
    ctx = b.context(builder, caps=(cap,))
    outcome = run_attempt(ctx, claimed(b), b.plan.phase("add-count"), None)
    assert builder.model.played == 2  # turn 3 was never asked for
    assert (outcome.failure.kind, outcome.complete) == ("agent_limit", False)
    assert "stopped before turn 3: cost cap reached (test cap" in outcome.failure.message
    assert rows(b.settings.db, "SELECT count(*), max(max_tokens) FROM llm_calls") == [(2, budget)]
    assert b.store.run_cost(b.run.id) <= cap.limit_usd


def test_a_cut_off_turn_is_escalated_and_never_executed(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    poison = ("write_file", {"path": "shop/POISON.py", "content": "half"})
    budget = estimate_budget(category="feature", complexity="medium", deliverables=0, scope_files=2,
                             scope_bytes=173 + 140).max_tokens
    script = [ScriptedTurn.of(poison, stop_reason="max_tokens", output_tokens=budget),
              ScriptedTurn.of(("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT})),
              ScriptedTurn.of(("finish", {"summary": "done"}))]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    assert rows(b.settings.db, "SELECT max_tokens, stop_reason FROM llm_calls ORDER BY id") == [
        (budget, "max_tokens"), (2 * budget, "tool_use"), (budget, "tool_use")]
    assert [e["turn"] for e in exchanges(b)] == [1, 1, 2]
    assert [json.loads(data) for data, in rows(b.settings.db, "SELECT data FROM events WHERE kind = 'escalation'")] == [
        {"reason": "max_tokens", "utilisation": 1.0, "base": budget, "new": 2 * budget}]
    assert "POISON" not in git(b.context(None).workspace.worktree, "log", "--all", "--name-only", "--format=")
    assert "POISON" not in json.dumps(results(b))


def test_a_turn_cut_off_twice_without_edits_fails_as_truncated_and_runs_nothing(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    poison = ("write_file", {"path": "shop/POISON.py", "content": "half"})
    cut = ScriptedTurn.of(poison, stop_reason="max_tokens")
    assert execute_run(b.context(ScriptedBuilder([cut, cut]))) == {"failed": 1}
    state, kind, message, _ = attempt_row(b)
    assert kind == "truncated" and "none of its tool calls ran" in message
    assert not (b.context(None).workspace.project_root / "shop" / "POISON.py").exists()


def test_finish_ends_the_turn_and_the_calls_after_it_do_not_run(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    script = [[("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT}),
               ("finish", {"summary": "done"}),
               ("write_file", {"path": "shop/after.py", "content": "x = 1\n"})]]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    assert "shop/after.py" not in git(b.context(None).workspace.worktree, "show", "--name-only", "HEAD")


def test_a_turn_without_a_tool_call_ends_the_attempt_and_no_edit_is_a_no_op(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    assert execute_run(b.context(ScriptedBuilder([ScriptedTurn(text="Nothing to do.")]))) == {"failed": 1}
    assert attempt_row(b)[1] == "no_op"


def test_a_script_that_runs_out_mid_attempt_fails_as_cassette_exhausted_and_the_edit_is_saved_as_a_patch(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    script = [[("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT})]]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"failed": 1}
    state, kind, message, _ = attempt_row(b)
    assert kind == "cassette_exhausted" and "turn 2" in message
    [(patch,)] = rows(b.settings.db, "SELECT patch_path FROM attempts")
    assert "+def count(items):" in open(patch).read()
    assert git(b.context(None).workspace.worktree, "status", "--porcelain") == ""


def test_what_the_agents_test_runs_write_is_not_part_of_the_change(tmp_path):
    b = bench(tmp_path, [add_count_phase()])
    writer = ("from pathlib import Path\n\n\ndef test_writes():\n    Path('written_by_test.txt').write_text('x')\n"
              "    Path('README.md').write_text('clobbered')\n")
    script = [[("write_file", {"path": "tests/test_writer.py", "content": writer})], [("run_tests", {})],
              [("finish", {"summary": "done"})]]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    files = git(b.context(None).workspace.worktree, "show", "--name-only", "--format=", "HEAD").split()
    assert files == ["tests/test_writer.py"]


def test_a_retry_starts_from_the_failure_digest(tmp_path):
    b = bench(tmp_path, [add_count_phase(max_attempts=2)])
    script = [[("finish", {"summary": "nothing"})],
              [("edit_file", {"path": "shop/cart.py", "old": TOTAL_LINE, "new": BUGGY_COUNT})],
              [("finish", {"summary": "done"})]]
    assert execute_run(b.context(ScriptedBuilder(script))) == {"complete": 1}
    task = exchanges(b, attempt=2)[0]["request"]["messages"][0]["content"][0]["text"]
    assert "# Phase 'add-count' (attempt 2)" in task
    assert "# Your previous attempt failed:\nFailure kind: no_op" in task


def test_context_files_are_shown_read_only_and_scope_files_are_not(tmp_path):
    b = bench(tmp_path, [add_count_phase(context=["README.md"])])
    execute_run(b.context(ScriptedBuilder([[("finish", {"summary": "x"})]])))
    first = exchanges(b)[0]["request"]
    task = first["messages"][0]["content"][0]["text"]
    assert "## README.md\n```\n# shop\n\nA cart with total().\n```" in task
    assert "def total" not in task and "- shop/cart.py" in task
    assert first["system"].startswith("You are the builder of autopack") and "finish" in first["tools"]


class Recording(ScriptedTurns):
    def __init__(self, turns):
        super().__init__([ScriptedTurn(tuple(turn)) for turn in turns])
        self.requests = []

    def reply(self, request):
        self.requests.append(request)
        return super().reply(request)


@pytest.mark.parametrize("cache", [True, False])
def test_the_stable_prefix_and_the_latest_turns_carry_cache_control(tmp_path, cache):
    from autopack.engine.agent import AgentBuilder

    b = bench(tmp_path, [add_count_phase()])
    model = Recording([[("list_files", {})]] * 3 + [[("finish", {"summary": "x"})]])
    execute_run(b.context(AgentBuilder(model, default_model="claude-sonnet-5-5", cache=cache)))

    def marks(request):
        return [json.dumps(block) for block in request.system if "cache_control" in block] + [
            json.dumps(block) for message in request.messages for block in message["content"]
            if isinstance(block, dict) and "cache_control" in block]

    assert [len(marks(request)) for request in model.requests] == ([2, 3, 3, 3] if cache else [0, 0, 0, 0])
    last = model.requests[-1]
    if cache:
        assert [m["role"] for m in last.messages] == ["user", "assistant"] * 3 + ["user"]
        assert "cache_control" in last.messages[-1]["content"][-1]
        assert "cache_control" in last.messages[-3]["content"][-1]
        assert "cache_control" not in last.messages[-5]["content"][-1]


def test_secrets_are_redacted_from_the_transcript(tmp_path, monkeypatch):
    key = "sk-ant-api03-SECRETSECRETSECRET"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.setenv("DEPLOY_TOKEN", "tok-1234567890")
    b = bench(tmp_path, [add_count_phase()])
    script = [[("write_file", {"path": "tests/test_env.py",
                               "content": "KEYS = ['sk-ant-api03-SECRETSECRETSECRET', 'tok-1234567890']\n"})],
              [("read_file", {"path": "tests/test_env.py"})], [("finish", {"summary": "done"})]]
    execute_run(b.context(ScriptedBuilder(script)))
    stored = json.dumps([json.loads(r) for row in rows(b.settings.db, "SELECT request, response FROM transcript_turns")
                         for r in row])
    assert key not in stored and "tok-1234567890" not in stored and stored.count("[redacted]") >= 4
