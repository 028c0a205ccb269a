"""Record mode: a live run writes a cassette (contract 3) with no secret in it, and it replays the same way."""

from __future__ import annotations

import json

import pytest

from autopack.errors import UsageError
from autopack.llm.builder import BuilderRequest, ClaudeBuilder
from autopack.llm.cassette import Cassette, CassetteRecorder, recorded_headers
from autopack.llm.client import make_client_factory
from autopack.llm.doctor import Doctor
from autopack.llm.wire import message_to_sse

SECRET = "sk-ant-secret-XYZ"
MODEL = "claude-sonnet-5-5"
OPS_BODY = {"id": "msg_live", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": "Adding power()."},
                        {"type": "tool_use", "id": "toolu_1", "name": "write_file",
                         "input": {"path": "calc/ops.py", "content": "def power(a, b):\n    return a ** b\n"}},
                        {"type": "tool_use", "id": "toolu_2", "name": "edit_file",
                         "input": {"path": "README.md", "old": "ops: add", "new": "ops: add, power \"**\""}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 1200, "output_tokens": 180, "cache_creation_input_tokens": 900}}
DOCTOR_BODY = {"id": "msg_doc", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
               "content": [{"type": "text", "text": "Diagnosis: missing import. Approach: import power."}],
               "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 300, "output_tokens": 20}}


class FakeNetwork:
    """Stands in for api.anthropic.com: answers in order, streams when asked, remembers what it saw."""

    def __init__(self, *answers: tuple[int, dict]):
        self.answers = list(answers)
        self.seen_headers: list[dict] = []

    def transport(self):
        import httpx2

        def handle(request):
            self.seen_headers.append(dict(request.headers))
            status, body = self.answers.pop(0)
            headers = {"request-id": f"req_live_{len(self.seen_headers)}", "set-cookie": "session=abc",
                       "anthropic-ratelimit-tokens-remaining": "9000", "x-internal-trace": "t-1",
                       "retry-after-ms": "1" if status >= 400 else "0"}
            if status == 200 and json.loads(request.content).get("stream"):
                events = message_to_sse(body)  # sent in small chunks, as a network would
                chunks = iter([events[i:i + 64] for i in range(0, len(events), 64)])
                return httpx2.Response(200, content=chunks, headers={**headers, "content-type": "text/event-stream"})
            return httpx2.Response(status, json=body, headers=headers)

        return httpx2.MockTransport(handle)


def request(**changes) -> BuilderRequest:
    fields = dict(run_goal="calculator", phase_id="add-power", phase_goal="Add power", category="feature",
                  complexity="low", acceptance=(), scope=None, scope_text=None, deliverables=(),
                  files={"README.md": "ops: add\n"}, omitted_files=(), attempt=1)
    fields.update(changes)
    return BuilderRequest(**fields)


def record(tmp_path, network: FakeNetwork, budget: int = 4096):
    path = tmp_path / "recorded.jsonl"
    factory = make_client_factory(cassette=None, api_key=SECRET, max_retries=2, recorder=CassetteRecorder(path),
                                  live_transport=network.transport())
    result = ClaudeBuilder(factory, model=MODEL, max_tokens=4096).build(request(), budget)
    return path, result


def replay(path, budget: int = 4096):
    cassette = Cassette.load(path)
    factory = make_client_factory(cassette=cassette, api_key=None, max_retries=2)
    return ClaudeBuilder(factory, model=MODEL, max_tokens=4096, cassette=cassette).build(request(), budget), cassette


def test_record_then_replay_round_trip_without_secrets(tmp_path):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    network = FakeNetwork((529, overloaded), (200, OPS_BODY))
    path, live = record(tmp_path, network)
    assert live.failure_kind is None
    assert all(headers["authorization"] == f"Bearer {SECRET}" for headers in network.seen_headers)

    text = path.read_text()
    assert "sk-ant" not in text and SECRET not in text
    for header in ("authorization", "x-api-key", "set-cookie", "x-internal-trace", "x-stainless"):
        assert header not in text.lower()
    first, second = [json.loads(line) for line in text.splitlines()]
    assert (first["role"], first["phase"], first["attempt"]) == ("builder", "add-power", 1)
    assert first["response"]["status"] == 529 and second["response"]["status"] == 200
    assert second["response"]["headers"]["anthropic-ratelimit-tokens-remaining"] == "9000"
    assert second["response"]["headers"]["request-id"] == "req_live_2"
    assert second["request"]["model"] == MODEL and second["request"]["max_tokens"] == 4096
    assert second["response"]["body"] == OPS_BODY

    replayed, cassette = replay(path)
    assert replayed.ops == live.ops and replayed.failure_kind is None
    assert [(c.http_status, c.request_id, c.usage) for c in replayed.calls] == [
        (c.http_status, c.request_id, c.usage) for c in live.calls]
    assert cassette.remaining("builder", "add-power", 1) == 0


def test_a_streamed_response_is_stored_assembled_and_replays_both_ways(tmp_path):
    path, live = record(tmp_path, FakeNetwork((200, OPS_BODY)), budget=30000)
    assert live.failure_kind is None and live.calls[0].usage.output_tokens == 180
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert line["request"]["stream"] is True
    assert line["response"]["headers"]["content-type"] == "application/json"
    assert line["response"]["body"] == OPS_BODY  # the final message, not the event stream
    streamed, _ = replay(path, budget=30000)
    plain, _ = replay(path, budget=4096)
    assert streamed.ops == plain.ops == live.ops


def test_doctor_calls_are_recorded_under_their_role(tmp_path):
    path = tmp_path / "recorded.jsonl"
    factory = make_client_factory(cassette=None, api_key=SECRET, recorder=CassetteRecorder(path),
                                  live_transport=FakeNetwork((200, DOCTOR_BODY)).transport())
    live = Doctor(factory, model="claude-haiku-5-5").diagnose(phase_id="add-power", attempt=2, phase_goal="Add power",
                                                              digest="ImportError: power")
    (line,) = [json.loads(text) for text in path.read_text().splitlines()]
    assert (line["role"], line["phase"], line["attempt"]) == ("doctor", "add-power", 2)
    cassette = Cassette.load(path)
    replayed = Doctor(make_client_factory(cassette=cassette, api_key=None), model="claude-haiku-5-5",
                      cassette=cassette).diagnose(phase_id="add-power", attempt=2, phase_goal="Add power",
                                                  digest="ImportError: power")
    assert replayed.text == live.text == "Diagnosis: missing import. Approach: import power."


def test_recording_needs_a_live_run(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("")
    with pytest.raises(UsageError, match="recording needs a live run"):
        make_client_factory(cassette=Cassette.load(path), api_key=None, recorder=CassetteRecorder(tmp_path / "r.jsonl"))


def test_recorded_headers_keep_only_the_allow_list():
    kept = recorded_headers({"Request-Id": "req_1", "Content-Type": "application/json", "retry-after": "3",
                             "retry-after-ms": "3000", "anthropic-ratelimit-requests-limit": "50",
                             "set-cookie": "a=b", "cf-ray": "x", "anthropic-organization-id": "org_secret"},
                            streamed=False)
    assert kept == {"request-id": "req_1", "content-type": "application/json", "retry-after": "3",
                    "retry-after-ms": "3000", "anthropic-ratelimit-requests-limit": "50"}
