"""The builder: prompt shape, response interpretation, ledger rows, and file collection."""

from __future__ import annotations

import json
import os

import pytest

from autopack.edits import TOOL_DEFINITIONS, EditOp
from autopack.engine.reads import collect_files
from autopack.llm.builder import BuilderRequest, ClaudeBuilder, render_prompt
from autopack.llm.cassette import Cassette
from autopack.llm.client import Usage, cost_usd, make_client_factory

MODEL = "claude-sonnet-5-5"


def message_body(*tools: dict, text: str = "Here are the edits.", stop_reason: str = "tool_use",
                 usage: dict | None = None, model: str = MODEL) -> dict:
    content = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_{i}", "name": tool["name"], "input": tool["input"]}
                for i, tool in enumerate(tools)]
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 100, "output_tokens": 20}}


WRITE_OPS = {"name": "write_file", "input": {"path": "calc/ops.py", "content": "def power(a, b):\n    return a ** b\n"}}
EDIT_INIT = {"name": "edit_file", "input": {"path": "calc/__init__.py", "old": "x = 1", "new": "x = 2"}}


def make_request(**changes) -> BuilderRequest:
    fields = dict(
        run_goal="Add power and modulo to the calculator", phase_id="add-power",
        phase_goal="Add power(a, b) to calc/ops.py, with tests", category="feature", complexity="low",
        acceptance=("power(2, 3) == 8",), scope=("calc/ops.py", "tests/"), scope_text=None,
        deliverables=("tests/test_power.py",),
        files={"calc/ops.py": "def add(a, b):\n    return a + b\n", "calc/__init__.py": "x = 1\n"},
        omitted_files=("tests/big_fixture.py",), attempt=1,
    )
    fields.update(changes)
    return BuilderRequest(**fields)


def replay(tmp_path, *bodies: dict, status: int = 200, model: str = MODEL, clock=None, phase="add-power"):
    """Build once against a cassette holding ``bodies`` for (builder, phase, 1)."""
    lines = [{"role": "builder", "phase": phase, "attempt": 1,
              "response": {"status": status, "headers": {"request-id": "req_42"}, "body": body}} for body in bodies]
    path = tmp_path / "cassette.jsonl"
    path.write_text("".join(json.dumps(entry) + "\n" for entry in lines))
    cassette = Cassette.load(path)
    extra = {"clock": clock} if clock else {}
    builder = ClaudeBuilder(make_client_factory(cassette=cassette, api_key=None, max_retries=0),
                            model=model, max_tokens=4096, cassette=cassette, **extra)
    return builder.build(make_request(phase_id=phase))


class CapturingFactory:
    """A client factory whose transport records every request body and answers with ``body``."""

    def __init__(self, body: dict):
        self.body = body
        self.requests: list[dict] = []
        self.keys: list[tuple] = []

    def __call__(self, role, phase, attempt):
        import anthropic
        import httpx2

        self.keys.append((role, phase, attempt))

        from autopack.llm.wire import message_to_sse

        def handle(request):
            sent = json.loads(request.content)
            self.requests.append(sent)
            if sent.get("stream"):
                return httpx2.Response(200, content=message_to_sse(self.body),
                                       headers={"content-type": "text/event-stream"})
            return httpx2.Response(200, json=self.body)

        return anthropic.Anthropic(api_key="test", max_retries=0, timeout=600.0,
                                   http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))


def test_tool_uses_become_edit_ops(tmp_path):
    result = replay(tmp_path, message_body(WRITE_OPS, EDIT_INIT))
    assert result.failure_kind is None
    assert result.ops == (
        EditOp(tool="write_file", path="calc/ops.py", content="def power(a, b):\n    return a ** b\n"),
        EditOp(tool="edit_file", path="calc/__init__.py", old="x = 1", new="x = 2"),
    )
    assert result.text == "Here are the edits."
    assert "2 edits" in result.message and "calc/ops.py" in result.message


def test_request_shape_tools_cache_control_files_and_failure_digest():
    factory = CapturingFactory(message_body(WRITE_OPS))
    builder = ClaudeBuilder(factory, model="claude-opus-5-5", max_tokens=32000)
    builder.build(make_request(attempt=2, failure_digest="tests/test_power.py::test_neg FAILED: ZeroDivisionError"))
    assert factory.keys == [("builder", "add-power", 2)]
    (sent,) = factory.requests
    assert sent["model"] == "claude-opus-5-5"
    assert sent["max_tokens"] == 32000
    assert sent["stream"] is True  # above the SDK's non-streaming limit
    assert [tool["name"] for tool in sent["tools"]] == ["write_file", "edit_file", "delete_file"]
    assert sent["tools"] == json.loads(json.dumps(TOOL_DEFINITIONS))
    assert "tool_choice" not in sent
    assert sent["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "only" in sent["system"][0]["text"].lower() and "write_file" in sent["system"][0]["text"]
    (user,) = sent["messages"]
    assert user["role"] == "user"
    stable, variable = user["content"]
    assert stable["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in variable
    assert "## calc/ops.py\n```\ndef add(a, b):\n    return a + b\n```" in stable["text"]
    assert "Add power and modulo to the calculator" in stable["text"]
    assert "tests/big_fixture.py" in stable["text"]
    assert "Your previous attempt failed:" in variable["text"]
    assert "ZeroDivisionError" in variable["text"]
    for part in ("add-power", "power(2, 3) == 8", "tests/test_power.py", "- calc/ops.py", "- tests/", "feature"):
        assert part in variable["text"]


def test_first_attempt_prompt_has_no_failure_section_and_legacy_scope_text_is_shown():
    _, messages = render_prompt(make_request(scope=None, scope_text="the calculator module"))
    variable = messages[0]["content"][1]["text"]
    assert "previous attempt" not in variable
    assert "the calculator module" in variable


def test_a_file_containing_backtick_fences_gets_a_longer_fence():
    _, messages = render_prompt(make_request(files={"README.md": "```py\nx\n```\n"}))
    assert "\n````\n```py\nx\n```\n````" in messages[0]["content"][0]["text"]


def test_max_tokens_stop_is_truncated_and_its_edits_are_never_parsed(tmp_path):
    cut = message_body(WRITE_OPS, stop_reason="max_tokens")
    result = replay(tmp_path, cut, cut)
    assert (result.failure_kind, result.ops) == ("truncated", None)
    assert "max_tokens=4096" in result.message and "max_tokens=8192" in result.message
    assert [call.stop_reason for call in result.calls] == ["max_tokens", "max_tokens"]
    assert [call.status for call in result.calls] == ["ok", "ok"]


def test_refusal(tmp_path):
    result = replay(tmp_path, message_body(text="I can't help with that.", stop_reason="refusal"))
    assert (result.failure_kind, result.ops) == ("refusal", None)
    assert result.text == "I can't help with that."


@pytest.mark.parametrize("tool, expected", [
    ({"name": "run_shell", "input": {"cmd": "rm -rf /"}}, "unknown tool"),
    ({"name": "write_file", "input": {"path": "calc/ops.py"}}, "missing field 'content'"),
])
def test_malformed_tool_input_fails_without_ops(tmp_path, tool, expected):
    result = replay(tmp_path, message_body(WRITE_OPS, tool))
    assert (result.failure_kind, result.ops) == ("malformed", None)
    assert expected in result.message
    assert "\n" not in result.message


def test_no_tool_use_is_an_empty_edit_set_for_the_finalizer_to_judge(tmp_path):
    result = replay(tmp_path, message_body(text="Nothing to change.", stop_reason="end_turn"))
    assert (result.failure_kind, result.ops) == (None, ())
    assert result.message == "builder made no edits"


def test_exhausted_cassette_fails_without_any_request(tmp_path):
    path = tmp_path / "cassette.jsonl"
    path.write_text(json.dumps({"role": "builder", "phase": "add-power", "attempt": 1,
                                "response": {"status": 200, "headers": {}, "body": message_body(WRITE_OPS)}}) + "\n")
    cassette = Cassette.load(path)
    factory = CapturingFactory(message_body(WRITE_OPS))
    result = ClaudeBuilder(factory, model=MODEL, max_tokens=100, cassette=cassette).build(make_request(attempt=2))
    assert result.failure_kind == "cassette_exhausted"
    assert result.message == "cassette has no builder response for phase 'add-power' attempt 2"
    assert (result.ops, result.calls, factory.keys, factory.requests) == (None, (), [], [])
    assert cassette.remaining("builder", "add-power", 1) == 1


def test_usage_cost_latency_and_request_id_are_recorded(tmp_path):
    ticks = iter([100.0, 102.5])
    usage = {"input_tokens": 1000, "output_tokens": 2000, "cache_creation_input_tokens": 3000,
             "cache_read_input_tokens": 40000}
    result = replay(tmp_path, message_body(WRITE_OPS, usage=usage), clock=lambda: next(ticks))
    (call,) = result.calls
    assert call.usage == Usage(input_tokens=1000, output_tokens=2000, cache_write_tokens=3000, cache_read_tokens=40000)
    # sonnet-5-5: $3 in, $15 out, $3.75 cache write, $0.30 cache read per MTok
    assert call.cost_usd == pytest.approx((1000 * 3 + 2000 * 15 + 3000 * 3.75 + 40000 * 0.30) / 1e6)
    assert (call.role, call.model, call.max_tokens, call.status) == ("builder", MODEL, 4096, "ok")
    assert (call.stop_reason, call.latency_ms, call.request_id, call.error) == ("tool_use", 2500, "req_42", None)


def test_unknown_model_is_unpriced_not_free(tmp_path):
    result = replay(tmp_path, message_body(WRITE_OPS, model="claude-mystery-9"), model="claude-mystery-9")
    assert result.calls[0].cost_usd is None
    assert result.ops is not None


def test_dated_model_ids_and_price_overrides():
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("claude-haiku-4-5-20251001", usage) == pytest.approx(6.0)
    assert cost_usd("claude-opus-4-5", usage) == pytest.approx(30.0)
    assert cost_usd("my-proxy-model", usage, {"my-proxy-model": (2, 4, 0, 0)}) == pytest.approx(6.0)
    assert cost_usd("claude-sonnet-5-5", usage, {"my-proxy-model": (2, 4, 0, 0)}) == pytest.approx(18.0)
    assert cost_usd("my-proxy-model", usage) is None


def test_connection_error_after_retries_is_an_api_error():
    import anthropic
    import httpx2

    def refuse(request):
        raise httpx2.ConnectError("connection refused", request=request)

    def factory(role, phase, attempt):
        return anthropic.Anthropic(api_key="test", max_retries=0, timeout=600.0,
                                   http_client=httpx2.Client(transport=httpx2.MockTransport(refuse)))

    result = ClaudeBuilder(factory, model=MODEL, max_tokens=100).build(make_request())
    assert (result.failure_kind, result.ops) == ("api_error", None)
    assert "connection refused" in result.message
    assert result.calls[0].status == "error"


def test_collect_files_expands_scope_dirs_skips_binary_and_git_and_caps_size(tmp_path):
    (tmp_path / "calc").mkdir()
    (tmp_path / "calc" / "ops.py").write_text("a" * 40)
    (tmp_path / "calc" / "__init__.py").write_text("b" * 10)
    (tmp_path / "tests" / "data").mkdir(parents=True)
    (tmp_path / "tests" / "test_ops.py").write_text("c" * 30)
    (tmp_path / "tests" / "data" / "blob.bin").write_bytes(b"\x89PNG\x00\x01")
    (tmp_path / "tests" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "tests" / "__pycache__").mkdir()
    (tmp_path / "tests" / "__pycache__" / "x.txt").write_text("cached")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    files, omitted = collect_files(tmp_path, ["calc/ops.py", "tests/", "calc/missing.py", ".git/"],
                                   ["calc/__init__.py"], max_bytes=45)
    # sorted: calc/__init__.py (10) fits, calc/ops.py (40) does not, tests/test_ops.py (30) fits
    assert files == {"calc/__init__.py": "b" * 10, "tests/test_ops.py": "c" * 30}
    assert list(files) == sorted(files)
    assert omitted == ("calc/ops.py",)


def test_collect_files_without_scope_reads_context_only_and_never_follows_symlinks_out(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("token")
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text("guide")
    os.symlink(outside / "secret.txt", root / "docs" / "leak.txt")
    files, omitted = collect_files(root, None, ["docs/"], max_bytes=10_000)
    assert files == {"docs/guide.md": "guide"}
    assert omitted == ()
