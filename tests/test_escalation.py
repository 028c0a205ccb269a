"""Escalate-once: a truncated answer is never applied, earns one bigger call, and fails as `truncated` twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopack.edits import EditOp, apply_edits
from autopack.llm.builder import BuilderRequest, ClaudeBuilder, Escalation
from autopack.llm.cassette import Cassette
from autopack.llm.client import make_client_factory
from autopack.llm.ledger import LedgerTransport

MODEL = "claude-sonnet-5-5"
FAST_RETRY = {"retry-after-ms": "1"}
GOOD = {"name": "write_file", "input": {"path": "calc/ops.py", "content": "def power(a, b):\n    return a ** b\n"}}
CUT = {"name": "write_file", "input": {"path": "calc/ops.py", "content": "def power(a, b):\n    return a **"}}


def body(*tools: dict, stop_reason: str = "tool_use", output_tokens: int = 300, model: str = MODEL) -> dict:
    content = [{"type": "text", "text": "Editing."}]
    content += [{"type": "tool_use", "id": f"toolu_{n}", "name": t["name"], "input": t["input"]}
                for n, t in enumerate(tools)]
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": 900, "output_tokens": output_tokens}}


def cassette_of(tmp_path: Path, *responses) -> Cassette:
    """Lines for (builder, add-power, 1); a response is a body or (status, body)."""
    lines = []
    for response in responses:
        status, payload = response if isinstance(response, tuple) else (200, response)
        headers = FAST_RETRY if status >= 400 else {}
        lines.append({"role": "builder", "phase": "add-power", "attempt": 1,
                      "response": {"status": status, "headers": headers, "body": payload}})
    path = tmp_path / "cassette.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return Cassette.load(path)


def request(**changes) -> BuilderRequest:
    fields = dict(run_goal="calculator", phase_id="add-power", phase_goal="Add power", category="feature",
                  complexity="low", acceptance=(), scope=("calc/",), scope_text=None, deliverables=(),
                  files={}, omitted_files=(), attempt=1)
    fields.update(changes)
    return BuilderRequest(**fields)


def build(cassette: Cassette, budget: int | None = 4096, max_retries: int = 0, **changes):
    factory = make_client_factory(cassette=cassette, api_key=None, max_retries=max_retries)
    return ClaudeBuilder(factory, model=MODEL, max_tokens=2048, cassette=cassette).build(request(**changes), budget)


class SpyingFactory:
    """Cassette clients whose requests and served content types are remembered."""

    def __init__(self, cassette: Cassette):
        self.cassette = cassette
        self.seen: list[tuple[dict, str]] = []

    def __call__(self, role, phase, attempt):
        import anthropic
        import httpx2

        inner = self.cassette.transport(role, phase, attempt)
        seen = self.seen

        class Spy(httpx2.BaseTransport):
            def handle_request(self, request):
                response = inner.handle_request(request)
                seen.append((json.loads(request.content), response.headers["content-type"]))
                return response

        return anthropic.Anthropic(api_key="test", max_retries=0, timeout=600.0,
                                   http_client=httpx2.Client(transport=LedgerTransport(Spy())))


def test_truncation_escalates_once_and_the_cut_edits_never_reach_the_worktree(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="max_tokens", output_tokens=4096), body(GOOD))
    result = build(cassette, budget=4096)
    assert result.failure_kind is None
    assert result.ops == (EditOp(tool="write_file", path="calc/ops.py", content=GOOD["input"]["content"]),)
    assert result.escalation == Escalation(reason="max_tokens", utilisation=1.0, base=4096, new=8192)
    assert [(call.max_tokens, call.stop_reason) for call in result.calls] == [(4096, "max_tokens"), (8192, "tool_use")]
    assert [call.predicted_tokens for call in result.calls] == [4096, 4096]  # the estimate, for SMAPE
    assert result.model == MODEL
    worktree = tmp_path / "worktree"
    (worktree / "calc").mkdir(parents=True)
    apply_edits(worktree, list(result.ops), scope=["calc/"])
    assert (worktree / "calc" / "ops.py").read_text() == GOOD["input"]["content"]
    assert cassette.remaining("builder", "add-power", 1) == 0


def test_an_answer_using_95_percent_of_the_budget_is_treated_as_cut_off(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="tool_use", output_tokens=3900), body(GOOD))
    result = build(cassette, budget=4096)
    assert result.ops[0].content == GOOD["input"]["content"]
    assert (result.escalation.reason, result.escalation.utilisation) == ("near_limit", round(3900 / 4096, 4))


def test_truncated_twice_fails_naming_both_budgets(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="max_tokens", output_tokens=8192),
                           body(CUT, stop_reason="max_tokens", output_tokens=16384))
    result = build(cassette, budget=8192)
    assert (result.failure_kind, result.ops) == ("truncated", None)
    assert "max_tokens=8192" in result.message and "max_tokens=16384" in result.message
    assert "not applied" in result.message
    assert result.escalation == Escalation("max_tokens", 1.0, 8192, 16384)
    assert len(result.calls) == 2


def test_a_budget_already_at_the_cap_is_not_escalated(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="max_tokens", output_tokens=64000), body(GOOD))
    result = build(cassette, budget=64000)
    assert (result.failure_kind, result.escalation, len(result.calls)) == ("truncated", None, 1)
    assert "already the cap" in result.message
    assert cassette.remaining("builder", "add-power", 1) == 1


def test_budgets_above_the_threshold_are_streamed_and_replayed_as_events(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="max_tokens", output_tokens=24576), body(GOOD))
    spy = SpyingFactory(cassette)
    result = ClaudeBuilder(spy, model=MODEL, max_tokens=2048, cassette=cassette).build(request(), 24576)
    assert result.ops[0].content == GOOD["input"]["content"]
    assert result.escalation.new == 49152
    assert [(sent["max_tokens"], sent.get("stream"), kind.split(";")[0]) for sent, kind in spy.seen] == [
        (24576, True, "text/event-stream"), (49152, True, "text/event-stream")]
    first, second = result.calls  # rows assembled from the event streams
    assert (first.stop_reason, first.usage.output_tokens, first.usage.input_tokens) == ("max_tokens", 24576, 900)
    assert (second.stop_reason, second.usage.output_tokens, second.status) == ("tool_use", 300, "ok")


def test_an_escalation_that_crosses_the_threshold_streams_only_the_second_call(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="max_tokens", output_tokens=16384), body(GOOD))
    spy = SpyingFactory(cassette)
    result = ClaudeBuilder(spy, model=MODEL, max_tokens=2048, cassette=cassette).build(request(), 16384)
    assert result.failure_kind is None
    assert [sent.get("stream", False) for sent, _ in spy.seen] == [False, True]


def test_the_model_override_is_used_and_reported(tmp_path):
    cassette = cassette_of(tmp_path, body(GOOD, model="claude-opus-5-5"))
    spy = SpyingFactory(cassette)
    result = ClaudeBuilder(spy, model=MODEL, max_tokens=4096, cassette=cassette).build(
        request(model="claude-opus-5-5"))
    assert spy.seen[0][0]["model"] == "claude-opus-5-5"
    assert (result.model, result.calls[0].model) == ("claude-opus-5-5", "claude-opus-5-5")
    assert result.calls[0].predicted_tokens is None  # no estimate given: the default max_tokens


def test_context_window_stop_is_its_own_kind_and_is_not_escalated(tmp_path):
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="model_context_window_exceeded", output_tokens=10),
                           body(GOOD))
    result = build(cassette)
    assert (result.failure_kind, result.ops, result.escalation) == ("context_window", None, None)
    assert "context window" in result.message
    assert cassette.remaining("builder", "add-power", 1) == 1


def test_a_prompt_too_long_400_is_a_context_window_failure(tmp_path):
    error = {"type": "error", "error": {"type": "invalid_request_error",
                                        "message": "prompt is too long: 214782 tokens > 200000 maximum"}}
    result = build(cassette_of(tmp_path, (400, error)))
    assert result.failure_kind == "context_window"
    assert "prompt is too long: 214782 tokens > 200000 maximum" in result.message
    assert result.calls[0].http_status == 400


def test_refusal_is_its_own_kind(tmp_path):
    refusal = body(stop_reason="refusal", output_tokens=5)
    result = build(cassette_of(tmp_path, refusal))
    assert (result.failure_kind, result.ops) == ("refusal", None)
    assert "refused" in result.message


def test_api_error_on_the_escalated_call_keeps_the_escalation_and_every_row(tmp_path):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    cassette = cassette_of(tmp_path, body(CUT, stop_reason="max_tokens", output_tokens=4096),
                           (529, overloaded), (529, overloaded))
    result = build(cassette, budget=4096, max_retries=1)
    assert result.failure_kind == "api_error"
    assert "529" in result.message and "Overloaded" in result.message
    assert result.escalation.new == 8192
    assert [(call.http_status, call.max_tokens) for call in result.calls] == [(200, 4096), (529, 8192), (529, 8192)]


@pytest.mark.parametrize("lines, expected", [
    (0, "cassette has no builder response for phase 'add-power' attempt 1"),
    (1, "cassette has no escalated builder response for phase 'add-power' attempt 1"),
])
def test_a_cassette_without_the_needed_line_says_which(tmp_path, lines, expected):
    responses = [body(CUT, stop_reason="max_tokens", output_tokens=4096)][:lines]
    result = build(cassette_of(tmp_path, *responses))
    assert (result.failure_kind, result.message, len(result.calls)) == ("cassette_exhausted", expected, lines)
