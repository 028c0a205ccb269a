"""Cassette replay (contract 3) through the real anthropic client's HTTP transport."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from autopack.errors import CassetteError, EnvironmentProblem
from autopack.llm.builder import BuilderRequest, ClaudeBuilder
from autopack.llm.cassette import Cassette
from autopack.llm.client import make_client_factory

MODEL = "claude-sonnet-5-5"
FAST_RETRY = {"retry-after-ms": "1"}  # "0" makes the SDK fall back to its 0.5 s backoff


def message_body(text: str = "done", *, tools: list[dict] | None = None, stop_reason: str = "end_turn",
                 usage: dict | None = None) -> dict:
    content = [{"type": "text", "text": text}]
    content += [{"type": "tool_use", "id": f"toolu_{i}", "name": tool["name"], "input": tool["input"]}
                for i, tool in enumerate(tools or [])]
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": MODEL, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": usage or {"input_tokens": 10, "output_tokens": 5}}


def overloaded_body() -> dict:
    return {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def line(phase: str = "p1", attempt: int = 1, role: str = "builder", status: int = 200, body=None,
         headers: dict | None = None) -> dict:
    return {"role": role, "phase": phase, "attempt": attempt,
            "response": {"status": status, "headers": headers or {}, "body": body if body is not None else message_body()}}


def write_cassette(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def ask(cassette: Cassette, phase: str = "p1", attempt: int = 1, max_retries: int = 0) -> str:
    """One real SDK call through the cassette; returns the first text block."""
    client = make_client_factory(cassette=cassette, api_key=None, max_retries=max_retries)("builder", phase, attempt)
    message = client.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    return message.content[0].text


def request(phase: str = "p1", attempt: int = 1) -> BuilderRequest:
    return BuilderRequest(run_goal="goal", phase_id=phase, phase_goal="do it", category="feature",
                          complexity="low", acceptance=(), scope=("a.py",), scope_text=None,
                          deliverables=(), files={}, omitted_files=(), attempt=attempt)


def test_load_reads_every_entry_with_its_line_number_and_skips_blank_lines(tmp_path):
    path = write_cassette(tmp_path / "c.jsonl", [
        line(body=message_body("one")), "", line("p2", 3, "doctor", 529, overloaded_body(), {"retry-after": "2"}),
    ])
    cassette = Cassette.load(path)
    first, second = cassette.entries
    assert (first.role, first.phase, first.attempt, first.status, first.line) == ("builder", "p1", 1, 200, 1)
    assert first.body["content"][0]["text"] == "one"
    assert (second.role, second.phase, second.attempt, second.status, second.line) == ("doctor", "p2", 3, 529, 3)
    assert second.headers == {"retry-after": "2"}


def _with(record: dict, **changes) -> dict:
    record = json.loads(json.dumps(record))
    for dotted, value in changes.items():
        target = record
        *parents, key = dotted.split("__")
        for parent in parents:
            target = target[parent]
        if value is KeyError:
            del target[key]
        else:
            target[key] = value
    return record


@pytest.mark.parametrize("bad, expected", [
    ('{"role": "builder", ', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (_with(line(), role="bilder"), "role 'bilder' is not builder, doctor or planner"),
    (_with(line(), phase=KeyError), "missing key 'phase'"),
    (_with(line(), role="planner", phase="add-power"), 'a planner line has phase "" and attempt 1'),
    (_with(line(), role="planner", phase=KeyError, attempt=2), 'a planner line has phase "" and attempt 1'),
    (_with(line(), role="planner", phase=KeyError, attempt=True), "attempt must be an integer"),
    (_with(line(), attempt="1"), "attempt must be an integer"),
    (_with(line(), attempt=0), "attempt must be an integer >= 1"),
    (_with(line(), response__status="200"), "response.status must be an HTTP status code"),
    (_with(line(), response__body=KeyError), "missing key 'response.body'"),
    (_with(line(), response__body=[1]), "response.body must be an object"),
    (_with(line(), response__body="oops"), "string body is only for errors"),
    (_with(line(), response__headers={"retry-after": 1}), "response.headers must be an object of string values"),
])
def test_a_malformed_line_is_a_usage_error_naming_file_and_line(tmp_path, bad, expected):
    path = write_cassette(tmp_path / "cassette.jsonl", [line(), "", bad if isinstance(bad, str) else bad])
    with pytest.raises(CassetteError) as caught:
        Cassette.load(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert expected in str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in str(caught.value)


def test_a_missing_cassette_file_is_a_usage_error(tmp_path):
    with pytest.raises(CassetteError, match="cannot read cassette"):
        Cassette.load(tmp_path / "absent.jsonl")


def test_responses_are_consumed_in_file_order_per_key(tmp_path):
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", [
        line("p1", 1, body=message_body("p1-a1 first")),
        line("p2", 1, body=message_body("p2-a1")),
        line("p1", 1, body=message_body("p1-a1 second")),
        line("p1", 2, body=message_body("p1-a2")),
    ]))
    assert cassette.remaining("builder", "p1", 1) == 2
    assert not cassette.has_next("doctor", "p1", 1)
    assert ask(cassette, "p1", 2) == "p1-a2"
    assert ask(cassette, "p1", 1) == "p1-a1 first"
    assert cassette.remaining("builder", "p1", 1) == 1
    assert ask(cassette, "p1", 1) == "p1-a1 second"
    assert not cassette.has_next("builder", "p1", 1)
    assert cassette.has_next("builder", "p2", 1)


def test_replayed_response_carries_a_request_id(tmp_path):
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", [line()]))
    result = ClaudeBuilder(make_client_factory(cassette=cassette, api_key=None), model=MODEL,
                           max_tokens=100, cassette=cassette).build(request())
    assert result.calls[0].request_id == "req_cassette_line_1"


def test_sdk_retry_after_529_consumes_both_lines_and_succeeds(tmp_path):
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", [
        line(status=529, body=overloaded_body(), headers=FAST_RETRY),
        line(body=message_body("after retry", tools=[{"name": "delete_file", "input": {"path": "a.py"}}])),
    ]))
    factory = make_client_factory(cassette=cassette, api_key=None, max_retries=1)
    result = ClaudeBuilder(factory, model=MODEL, max_tokens=100, cassette=cassette).build(request())
    assert result.failure_kind is None
    assert [op.tool for op in result.ops] == ["delete_file"]
    assert result.text == "after retry"
    assert [(call.status, call.http_status) for call in result.calls] == [("error", 529), ("ok", 200)]
    assert cassette.remaining("builder", "p1", 1) == 0


def test_529s_past_max_retries_are_an_api_error(tmp_path):
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", [
        line(status=529, body=overloaded_body(), headers=FAST_RETRY),
        line(status=529, body=overloaded_body(), headers=FAST_RETRY),
        line(body=message_body("never reached")),
    ]))
    factory = make_client_factory(cassette=cassette, api_key=None, max_retries=1)
    result = ClaudeBuilder(factory, model=MODEL, max_tokens=100, cassette=cassette).build(request())
    assert result.failure_kind == "api_error"
    assert result.ops is None
    assert "529" in result.message and "Overloaded" in result.message
    assert len(result.calls) == 2  # the first try and the SDK's one retry
    for call in result.calls:
        assert (call.status, call.http_status, call.cost_usd, call.usage.input_tokens) == ("error", 529, 0.0, 0)
        assert call.error == "HTTP 529: Overloaded"
    assert cassette.remaining("builder", "p1", 1) == 1


def test_an_error_with_a_text_body_replays_as_that_api_error(tmp_path):
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", [line(status=401, body="invalid x-api-key")]))
    result = ClaudeBuilder(make_client_factory(cassette=cassette, api_key=None), model=MODEL,
                           max_tokens=100, cassette=cassette).build(request())
    assert result.failure_kind == "api_error"
    assert "401" in result.message


def test_retrying_past_the_last_line_fails_as_cassette_exhausted_without_retrying_further(tmp_path):
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", [
        line(status=529, body=overloaded_body(), headers=FAST_RETRY),
    ]))
    factory = make_client_factory(cassette=cassette, api_key=None, max_retries=3)
    result = ClaudeBuilder(factory, model=MODEL, max_tokens=100, cassette=cassette).build(request())
    assert result.failure_kind == "cassette_exhausted"
    assert "phase 'p1' attempt 1" in result.message
    assert [call.error for call in result.calls] == ["HTTP 529: Overloaded",
                                                     "HTTP 400: cassette exhausted for builder/p1/1"]


def test_concurrent_requests_consume_each_line_exactly_once(tmp_path):
    records = [line(body=message_body(f"reply {n}")) for n in range(24)]
    cassette = Cassette.load(write_cassette(tmp_path / "c.jsonl", records))
    replies: list[str] = []

    def worker():
        for _ in range(6):
            replies.append(ask(cassette))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(replies) == sorted(f"reply {n}" for n in range(24))


def test_no_cassette_and_no_api_key_is_an_environment_problem():
    with pytest.raises(EnvironmentProblem, match="ANTHROPIC_API_KEY is not set") as caught:
        make_client_factory(cassette=None, api_key="")
    assert caught.value.exit_code == 4


def test_a_live_factory_shares_one_client_configured_with_key_retries_and_timeout():
    factory = make_client_factory(cassette=None, api_key="sk-test", max_retries=5, timeout_s=123.0)
    client = factory("builder", "p1", 1)
    assert factory("doctor", "p2", 1) is client
    assert (client.api_key, client.max_retries, client.timeout) == ("sk-test", 5, 123.0)
