"""The per-request ledger: every HTTP request is a CallRecord (retries, errors, streams); prices; deprecations."""

from __future__ import annotations

import json

import pytest

from autopack.errors import UsageError
from autopack.llm.builder import BuilderRequest, ClaudeBuilder
from autopack.llm.cassette import Cassette
from autopack.llm.client import (Usage, cost_usd, create_message, deprecation_warning, make_client_factory,
                                 parse_price_overrides)

MODEL = "claude-sonnet-5-5"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
WRITE = {"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": {"path": "a.py", "content": "x = 1\n"}}


def message(usage: dict | None = None, model: str = MODEL) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "ok"}, WRITE], "stop_reason": "tool_use", "stop_sequence": None,
            "usage": usage or {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 5000}}


def cassette_of(tmp_path, *responses) -> Cassette:
    lines = [{"role": "builder", "phase": "p1", "attempt": 1,
              "response": {"status": status, "headers": {"retry-after-ms": "1", "request-id": f"req_{n}"},
                           "body": payload}}
             for n, (status, payload) in enumerate(responses)]
    path = tmp_path / "cassette.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return Cassette.load(path)


def request() -> BuilderRequest:
    return BuilderRequest(run_goal="g", phase_id="p1", phase_goal="goal", category="feature", complexity="low",
                          acceptance=(), scope=None, scope_text=None, deliverables=(), files={},
                          omitted_files=(), attempt=1)


class Ticks:
    """A clock advancing 0.25 s per reading."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def build(factory, cassette=None, clock=None, budget=4096):
    builder = ClaudeBuilder(factory, model=MODEL, max_tokens=4096, cassette=cassette, clock=clock or Ticks())
    return builder.build(request(), budget)


def test_sdk_retries_are_rows_of_their_own(tmp_path):
    cassette = cassette_of(tmp_path, (529, OVERLOADED), (529, OVERLOADED), (200, message()))
    result = build(make_client_factory(cassette=cassette, api_key=None, max_retries=2), cassette)
    assert result.failure_kind is None
    assert [(c.status, c.http_status) for c in result.calls] == [("error", 529), ("error", 529), ("ok", 200)]
    assert [c.request_id for c in result.calls] == ["req_0", "req_1", "req_2"]
    assert [c.usage for c in result.calls] == [Usage(), Usage(),
                                               Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=5000)]
    assert [c.error for c in result.calls] == ["HTTP 529: Overloaded", "HTTP 529: Overloaded", None]
    assert [c.cost_usd for c in result.calls] == [0.0, 0.0, pytest.approx((1000 * 3 + 200 * 15 + 5000 * 0.3) / 1e6)]
    assert all(c.latency_ms == 250 and c.role == "builder" and c.model == MODEL for c in result.calls)
    assert [c.predicted_tokens for c in result.calls] == [4096] * 3


def test_529_past_the_retries_is_an_api_error_with_every_row(tmp_path):
    cassette = cassette_of(tmp_path, *[(529, OVERLOADED)] * 3)
    result = build(make_client_factory(cassette=cassette, api_key=None, max_retries=2), cassette)
    assert (result.failure_kind, result.ops) == ("api_error", None)
    assert result.message == "API error: HTTP 529: Overloaded"
    assert [c.http_status for c in result.calls] == [529, 529, 529]
    assert cassette.remaining("builder", "p1", 1) == 0


def live_factory(handler, max_retries: int = 2):
    import httpx2

    return make_client_factory(cassette=None, api_key="sk-test", max_retries=max_retries,
                               live_transport=httpx2.MockTransport(handler))


def test_live_requests_are_recorded_too_and_one_client_is_shared():
    import httpx2

    answers = [httpx2.Response(429, json={"type": "error", "error": {"type": "rate_limit_error",
                                                                   "message": "Rate limited"}},
                               headers={"retry-after-ms": "1", "request-id": "req_a"}),
               httpx2.Response(200, json=message(), headers={"request-id": "req_b"})]
    keys = []

    def handle(request):
        keys.append(request.headers["authorization"])
        return answers.pop(0)

    factory = live_factory(handle)
    assert factory("builder", "p1", 1) is factory("doctor", "p2", 3)
    result = build(factory)
    assert [(c.http_status, c.request_id, c.error) for c in result.calls] == [
        (429, "req_a", "HTTP 429: Rate limited"), (200, "req_b", None)]
    assert keys == ["Bearer sk-test", "Bearer sk-test"]


def test_connection_failures_are_rows_without_a_status():
    import httpx2

    def refuse(request):
        raise httpx2.ConnectError("connection refused", request=request)

    result = build(live_factory(refuse, max_retries=1))
    assert result.failure_kind == "api_error"
    assert [(c.status, c.http_status) for c in result.calls] == [("error", None), ("error", None)]
    assert all("connection refused" in c.error for c in result.calls)


def test_an_unparseable_answer_is_a_row_and_malformed():
    import httpx2

    result = build(live_factory(lambda request: httpx2.Response(200, text="<html>gateway</html>",
                                                                headers={"content-type": "text/html"})))
    assert result.failure_kind == "malformed"
    (call,) = result.calls
    assert (call.status, call.http_status, call.malformed) == ("error", 200, True)
    assert "not a Messages API response" in call.error


def changed(**fields) -> dict:
    body = message()
    body.update(fields)
    return body


# Answers that arrive (no API error) but are not Messages API messages: each fails the attempt as
# malformed, naming what is wrong, and its ledger row keeps only the valid usage counts.
MALFORMED_ANSWERS = {
    "text block without text": (200, changed(content=[{"type": "text"}, WRITE]), "content[0] (text) has text"),
    "tool_use input a string": (200, changed(content=[dict(WRITE, input="x")]), "content[0] (tool_use) has input"),
    "block not an object": (200, changed(content=[3]), "content[0] is "),
    "usage of 10^30 tokens": (200, changed(usage={"input_tokens": 10**30, "output_tokens": 200}),
                              "usage.input_tokens is 1000000000000000000000000000000"),
    "negative output tokens": (200, changed(usage={"input_tokens": 1000, "output_tokens": -10**6}),
                               "usage.output_tokens is -1000000"),
    "boolean cache tokens": (200, changed(usage={"input_tokens": 1000, "output_tokens": 200,
                                                 "cache_read_input_tokens": True}), "cache_read_input_tokens is True"),
    "integer stop_reason": (200, changed(stop_reason=7), "stop_reason is 7"),
    "integer model": (200, changed(model=7), "model is 7"),
    "no id": (200, {k: v for k, v in message().items() if k != "id"}, "id is missing"),
    "HTTP 204": (204, message(), "HTTP 204 instead of 200"),
}


@pytest.mark.filterwarnings("error")  # nothing but the one-line failure: no SDK warning on stderr either
@pytest.mark.parametrize("budget", [4096, 30000], ids=["plain", "streamed"])
@pytest.mark.parametrize("name", sorted(MALFORMED_ANSWERS))
def test_a_malformed_answer_fails_as_malformed_and_never_lowers_the_ledger(tmp_path, name, budget):
    status, body, problem = MALFORMED_ANSWERS[name]
    if budget > 4096 and name == "text block without text":
        pytest.skip("a replayed stream always carries a text block's text (the events build it)")
    cassette = cassette_of(tmp_path, (status, body))
    result = build(make_client_factory(cassette=cassette, api_key=None, max_retries=0), cassette, budget=budget)
    assert (result.failure_kind, result.ops) == ("malformed", None)
    assert problem in result.message and result.message.startswith("malformed response: ")
    (call,) = result.calls
    assert (call.status, call.malformed) == ("error", True) and problem in call.error
    counts = (call.usage.input_tokens, call.usage.output_tokens, call.usage.cache_read_tokens,
              call.usage.cache_write_tokens)
    assert all(0 <= count <= 10**9 for count in counts) and call.cost_usd >= 0
    assert call.stop_reason is None or isinstance(call.stop_reason, str)


def sse(*events: tuple[str, dict]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


START = ("message_start", {"type": "message_start", "message": dict(message(), content=[], stop_reason=None,
                                                                     usage={"input_tokens": 10, "output_tokens": 1})})
END = [("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": {"output_tokens": 5}}),
       ("message_stop", {"type": "message_stop"})]
TEXT_START = ("content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}})


@pytest.mark.parametrize("events", [
    [START, ("content_block_delta", {"type": "content_block_delta", "index": 4,
                                     "delta": {"type": "text_delta", "text": "x"}}), *END],
    [START, ("content_block_start", {"type": "content_block_start", "index": 0}), *END],
    [START, TEXT_START, ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": 5}}), *END],
    [START, ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": -300}}), END[1]],
    END,
], ids=["delta-for-a-missing-block", "block-start-without-a-block", "text-delta-a-number", "negative-usage-delta",
        "no-message-start"])
def test_a_live_stream_of_hostile_events_is_malformed_not_a_traceback(events):
    import httpx2

    def handle(request):
        return httpx2.Response(200, content=iter([sse(*events)]), headers={"content-type": "text/event-stream"})

    result = build(live_factory(handle, max_retries=0), budget=30000)
    assert (result.failure_kind, result.ops) == ("malformed", None), result.message
    (call,) = result.calls
    assert (call.status, call.malformed) == ("error", True)
    assert call.usage.output_tokens >= 0 and call.cost_usd >= 0


def test_a_client_without_the_ledger_transport_checks_the_answer_too():
    import anthropic
    import httpx2

    hostile = changed(usage={"input_tokens": -5, "output_tokens": 200})
    client = anthropic.Anthropic(api_key="t", max_retries=0, http_client=httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=hostile))))
    outcome = create_message(client, role="doctor", model=MODEL, max_tokens=100,
                             messages=[{"role": "user", "content": "hi"}])
    assert (outcome.message, outcome.malformed) == (None, True)
    (call,) = outcome.calls
    assert (call.status, call.usage.input_tokens, call.usage.output_tokens) == ("error", 0, 200)
    assert "usage.input_tokens is -5" in outcome.error


def test_a_streamed_call_is_one_row_with_the_usage_of_its_events(tmp_path):
    cassette = cassette_of(tmp_path, (200, message({"input_tokens": 10, "output_tokens": 7000,
                                                    "cache_creation_input_tokens": 40})))
    result = build(make_client_factory(cassette=cassette, api_key=None), cassette, budget=30000)
    (call,) = result.calls
    assert (call.status, call.max_tokens, call.stop_reason, call.request_id) == ("ok", 30000, "tool_use", "req_0")
    assert call.usage == Usage(input_tokens=10, output_tokens=7000, cache_write_tokens=40)
    assert call.latency_ms == 250  # measured by the transport, from the request to the stream's end


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_live_stream_arriving_in_chunks_is_recorded_when_it_ends(encoding):
    import gzip

    import httpx2

    from autopack.llm.wire import message_to_sse

    def handle(request):
        events = message_to_sse(message({"input_tokens": 10, "output_tokens": 6000}))
        if encoding == "gzip":
            events = gzip.compress(events)
        chunks = iter([events[i:i + 50] for i in range(0, len(events), 50)])
        return httpx2.Response(200, content=chunks, headers={"content-type": "text/event-stream",
                                                             "content-encoding": encoding, "request-id": "req_s"})

    result = build(live_factory(handle), budget=30000)
    assert result.failure_kind is None and result.ops[0].path == "a.py"
    (call,) = result.calls
    assert (call.status, call.request_id, call.latency_ms) == ("ok", "req_s", 250)
    assert call.usage == Usage(input_tokens=10, output_tokens=6000)


def test_an_error_event_inside_a_stream_is_an_error_row_and_an_api_error():
    import httpx2

    from autopack.llm.wire import message_to_sse

    def handle(request):
        events = message_to_sse(message()).split(b"event: content_block_start")[0] + message_to_sse(OVERLOADED)
        return httpx2.Response(200, content=iter([events]), headers={"content-type": "text/event-stream"})

    result = build(live_factory(handle), budget=30000)
    assert result.failure_kind == "api_error"
    assert "Overloaded" in result.message
    (call,) = result.calls
    assert (call.status, call.http_status) == ("error", 200)
    assert call.error == "error event in the response stream: Overloaded"


def test_a_client_without_the_ledger_transport_still_yields_one_row():
    import anthropic
    import httpx2

    client = anthropic.Anthropic(api_key="t", max_retries=0, http_client=httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, json=message()))))
    outcome = create_message(client, role="doctor", model=MODEL, max_tokens=100,
                             messages=[{"role": "user", "content": "hi"}])
    (call,) = outcome.calls
    assert (call.role, call.status, call.usage.output_tokens) == ("doctor", "ok", 200)


def test_price_overrides_are_validated_and_used(tmp_path):
    prices = parse_price_overrides({"my-proxy-model": {"input": 2, "output": 4, "cache_write": 2.5, "cache_read": 0.2}})
    assert prices == {"my-proxy-model": (2.0, 4.0, 2.5, 0.2)}
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert cost_usd("my-proxy-model", usage, prices) == pytest.approx(6.0)
    cassette = cassette_of(tmp_path, (200, message({"input_tokens": 1_000_000, "output_tokens": 0},
                                                   model="my-proxy-model")))
    import anthropic

    client = make_client_factory(cassette=cassette, api_key=None)("builder", "p1", 1)
    outcome = create_message(client, role="builder", model="my-proxy-model", max_tokens=100, prices=prices,
                             messages=[{"role": "user", "content": "hi"}])
    assert isinstance(outcome.message, anthropic.types.Message)
    assert outcome.calls[0].cost_usd == pytest.approx(2.0)


@pytest.mark.parametrize("mapping, expected", [
    ({"m": {"input": 1, "output": 2, "cache_write": 3, "cache_reed": 4}}, "prices.m.cache_reed is not a price key"),
    ({"m": {"input": 1, "output": 2, "cache_write": 3}}, "prices.m.cache_read is missing"),
    ({"m": {"input": -1, "output": 2, "cache_write": 3, "cache_read": 4}}, "prices.m.input must be a number from 0 to 1000000"),
    ({"m": {"input": "1", "output": 2, "cache_write": 3, "cache_read": 4}}, "prices.m.input must be a number from 0 to 1000000"),
    ({"m": 3.0}, "prices.m must be a table"),
    ({"m": {"input": float("nan"), "output": 2, "cache_write": 3, "cache_read": 4}}, "prices.m.input must be a number"),
    ({"m": {"input": 1, "output": float("inf"), "cache_write": 3, "cache_read": 4}}, "prices.m.output must be a number"),
])
def test_bad_price_overrides_name_the_key(mapping, expected):
    with pytest.raises(UsageError, match=expected) as caught:
        parse_price_overrides(mapping)
    assert caught.value.exit_code == 2


def test_unpriced_models_cost_none_never_zero(tmp_path):
    cassette = cassette_of(tmp_path, (200, message(model="claude-mystery-9")))
    client = make_client_factory(cassette=cassette, api_key=None)("builder", "p1", 1)
    outcome = create_message(client, role="builder", model="claude-mystery-9", max_tokens=100,
                             messages=[{"role": "user", "content": "hi"}])
    assert (outcome.calls[0].status, outcome.calls[0].cost_usd) == ("ok", None)


def test_deprecated_models_get_a_warning_with_their_end_of_life_date():
    from anthropic._data import DEPRECATED_MODELS

    model, end_of_life = next(iter(DEPRECATED_MODELS.items()))
    warning = deprecation_warning(model)
    assert f"model {model} is deprecated" in warning and end_of_life in warning
    assert "builder_model" in warning
    assert deprecation_warning("claude-sonnet-5-5") is None
