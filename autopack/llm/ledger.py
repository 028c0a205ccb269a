"""One ledger row per HTTP request, taken at the transport so the SDK's own retries are rows too.

``LedgerTransport`` wraps the real transport (live, or a cassette's mock). While a
``capture_calls`` block is active in the calling thread, every request it carries
becomes a ``CallRecord``: 429/529/5xx answers the SDK retried, connection failures,
unparseable bodies and streamed responses (recorded when the stream ends).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import httpx2

from autopack.llm.client import CallRecord, Usage, cost_usd, message_problem
from autopack.llm.wire import observe_body, request_json


@dataclass
class CallSink:
    """Where the requests of one logical call are recorded, and what each row needs to know."""

    role: str
    clock: Callable[[], float] = time.monotonic
    prices: Mapping | None = None
    predicted_tokens: int | None = None
    calls: list[CallRecord] = field(default_factory=list)


_ACTIVE_SINK: ContextVar[CallSink | None] = ContextVar("autopack_call_sink", default=None)


@contextmanager
def capture_calls(role: str, *, clock: Callable[[], float] = time.monotonic, prices: Mapping | None = None,
                  predicted_tokens: int | None = None) -> Iterator[list[CallRecord]]:
    """Collect the CallRecords of the requests made in this block (this thread), in order."""
    sink = CallSink(role=role, clock=clock, prices=prices, predicted_tokens=predicted_tokens)
    token = _ACTIVE_SINK.set(sink)
    try:
        yield sink.calls
    finally:
        _ACTIVE_SINK.reset(token)


class LedgerTransport(httpx2.BaseTransport):
    """Forwards to ``inner`` and records each request into the active sink (none active: not recorded)."""

    def __init__(self, inner: httpx2.BaseTransport):
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        sink = _ACTIVE_SINK.get()
        if sink is None:
            return self.inner.handle_request(request)
        sent = request_json(request) or {}
        started = sink.clock()
        try:
            response = self.inner.handle_request(request)
        except httpx2.TimeoutException as error:
            sink.calls.append(_row(sink, sent, started, error=f"request timed out: {error or type(error).__name__}"))
            raise
        except httpx2.TransportError as error:
            sink.calls.append(_row(sink, sent, started, error=f"connection error: {error}"))
            raise

        def finished(body: Any, problem: str | None) -> None:
            sink.calls.append(_response_row(sink, sent, started, response, body, problem))

        observe_body(response, finished)
        return response

    def close(self) -> None:
        self.inner.close()


def _row(sink: CallSink, sent: dict, started: float, *, usage: Usage = Usage(), stop_reason: str | None = None,
         request_id: str | None = None, http_status: int | None = None, error: str | None = None,
         malformed: bool = False) -> CallRecord:
    model = str(sent.get("model", ""))
    return CallRecord(
        role=sink.role, model=model, max_tokens=int(sent.get("max_tokens", 0) or 0), usage=usage,
        stop_reason=stop_reason, latency_ms=max(0, int(round((sink.clock() - started) * 1000))),
        request_id=request_id, cost_usd=cost_usd(model, usage, sink.prices),
        status="error" if error else "ok", error=error, http_status=http_status,
        predicted_tokens=sink.predicted_tokens, malformed=malformed,
    )


def _response_row(sink: CallSink, sent: dict, started: float, response: httpx2.Response, body: Any,
                  problem: str | None) -> CallRecord:
    """The row of an answer: an API error, or an answer checked by ``message_problem`` (its usage
    recorded with every invalid count as 0, so a refused answer never lowers the ledger)."""
    status = response.status_code
    error, shape = problem, None
    if status >= 400:
        error = f"HTTP {status}: {error_message(body)}"
    elif isinstance(body, dict) and body.get("type") == "error":
        error = f"error event in the response stream: {error_message(body)}"
    elif error is None and (shape := message_problem(status, body)):
        error = f"malformed response: {shape}"
    answered = status < 400 and isinstance(body, dict) and body.get("type") == "message"
    usage = Usage.from_json(body.get("usage")) if answered else Usage()
    stop_reason = body.get("stop_reason") if answered else None
    return _row(sink, sent, started, usage=usage, stop_reason=stop_reason if isinstance(stop_reason, str) else None,
                request_id=response.headers.get("request-id"), http_status=status, error=error,
                malformed=shape is not None)


def error_message(body: Any) -> str:
    """The API's own error message from an error body (``{"error": {"type", "message"}}``) or its text."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"]
        return str(detail.get("message") or detail.get("type") or "unknown error")
    if isinstance(body, str) and body.strip():
        return " ".join(body.split())[:300]
    return "no error message"
