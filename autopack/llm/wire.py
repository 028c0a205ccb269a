"""HTTP-level helpers shared by the ledger and the cassette: bodies, server-sent events.

``observe_body`` hands a response's body to a callback once it has arrived, without
changing what the SDK reads: a JSON body is read at once; an event stream is passed
through untouched and assembled into the final message when it ends (or is closed).
``message_to_sse`` is the reverse, so a stored message replays to a streaming request.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, Callable, Iterator

import httpx2

BodyCallback = Callable[[Any, "str | None"], None]  # (body: dict | str | None, problem) -> None
_TOOL_INPUT_CHUNKS = 2  # stored tool inputs are replayed in this many input_json_delta pieces


def is_event_stream(response: httpx2.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip() == "text/event-stream"


def observe_body(response: httpx2.Response, on_body: BodyCallback) -> None:
    """Call ``on_body(body, problem)`` exactly once, when the body is complete.

    ``body`` is the decoded JSON (an event stream: the assembled message, or its error
    event), else the text, else None; ``problem`` says why a stream ended early.
    """
    if is_event_stream(response) and response.is_stream_consumed:  # built from bytes in memory (a mock)
        on_body(sse_to_message(response.content), None)
        return
    if not is_event_stream(response):
        try:
            response.read()
        except httpx2.HTTPError as error:
            on_body(None, f"reading the response failed: {error}")
            raise
        on_body(parse_body(response.content), None)
        return
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    response.stream = _TeeStream(response.stream, lambda raw, problem: on_body(_assemble(raw, encoding), problem))


def request_json(request: httpx2.Request) -> dict | None:
    """The JSON object a request sends, or None."""
    try:
        sent = json.loads(request.read() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return sent if isinstance(sent, dict) else None


class ObservedTransport(httpx2.BaseTransport):
    """Forwards to ``inner``; ``on_exchange(sent JSON, response, body, problem)`` once each body is complete."""

    def __init__(self, inner: httpx2.BaseTransport,
                 on_exchange: Callable[[dict | None, httpx2.Response, Any, "str | None"], None]):
        self.inner = inner
        self.on_exchange = on_exchange

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        sent = request_json(request)
        response = self.inner.handle_request(request)
        observe_body(response, lambda body, problem: self.on_exchange(sent, response, body, problem))
        return response

    def close(self) -> None:
        self.inner.close()


def parse_body(content: bytes) -> Any:
    """JSON when it parses, else the text (None for an empty body)."""
    if not content:
        return None
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _assemble(raw: bytes, encoding: str) -> dict | None:
    if encoding in ("gzip", "deflate"):
        try:
            raw = zlib.decompressobj(wbits=47).decompress(raw)  # 47: gzip or zlib header, auto-detected
        except zlib.error:
            return None
    elif encoding not in ("", "identity"):
        return None
    return sse_to_message(raw)


class _TeeStream(httpx2.SyncByteStream):
    """Passes chunks through and reports the whole body once, at the end or on close."""

    def __init__(self, inner: httpx2.SyncByteStream, finish: Callable[[bytes, str | None], None]):
        self.inner = inner
        self.finish = finish
        self.chunks: list[bytes] = []
        self.problem: str | None = None
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.inner:
                self.chunks.append(chunk)
                yield chunk
        except Exception as error:
            self.problem = f"the event stream broke off: {error}"
            raise
        self._finish()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self._finish()

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.finish(b"".join(self.chunks), self.problem)


def _events(raw: bytes) -> Iterator[tuple[str | None, str]]:
    """(event name, data) of each server-sent event."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            yield name, "\n".join(data)


def sse_to_message(raw: bytes) -> dict | None:
    """The Messages API response a stream amounts to; an ``error`` event wins; None without a message_start.

    Hostile events never raise here: a part that is not an object counts as an empty one, and a
    text piece that is not a string is kept as it is, for ``client.message_problem`` to refuse.
    """
    message: dict | None = None
    tool_json: dict[int, Any] = {}
    for name, data in _events(raw):
        try:
            event = _object(json.loads(data))
        except (json.JSONDecodeError, RecursionError):
            continue
        kind = event.get("type", name)
        if kind == "error" or name == "error":
            return event
        if kind == "message_start":
            message = dict(_object(event.get("message")), content=[])
            message["usage"] = dict(_object(message.get("usage")))
        elif message is None:
            continue
        elif kind == "content_block_start":
            message["content"].append(dict(_object(event.get("content_block"))))
        elif kind == "content_block_delta":
            _apply_delta(message["content"], tool_json, event.get("index", 0), _object(event.get("delta")))
        elif kind == "message_delta":
            message.update(_object(event.get("delta")))
            message["usage"].update({key: value for key, value in _object(event.get("usage")).items()
                                     if value is not None})
    if message is not None:
        for index, partial in tool_json.items():
            try:
                message["content"][index]["input"] = json.loads(partial) if isinstance(partial, str) else partial
            except (json.JSONDecodeError, RecursionError):
                pass  # a stream cut off inside a tool input: leave what content_block_start gave
    return message


def _object(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _joined(before: Any, piece: Any) -> Any:
    """Streamed text pieces joined; one that is not a string is kept, so the message is refused."""
    if not isinstance(piece, str):
        return piece
    return before + piece if isinstance(before, str) else before


def _apply_delta(content: list[dict], tool_json: dict[int, Any], index: Any, delta: dict) -> None:
    if not isinstance(index, int) or not 0 <= index < len(content):
        return
    block, kind = content[index], delta.get("type")
    if kind == "text_delta":
        block["text"] = _joined(block.get("text", ""), delta.get("text", ""))
    elif kind == "input_json_delta":
        tool_json[index] = _joined(tool_json.get(index, ""), delta.get("partial_json", ""))
    elif kind == "thinking_delta":
        block["thinking"] = _joined(block.get("thinking", ""), delta.get("thinking", ""))
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature", "")


def _event(name: str, payload: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


def message_to_sse(body: dict) -> bytes:
    """The event stream the API would send for ``body`` (a message, or an error object)."""
    if body.get("type") == "error":
        return _event("error", body).encode()
    usage = dict(body.get("usage") or {})
    start_usage = dict(usage, output_tokens=min(1, usage.get("output_tokens", 0)))
    start = dict(body, content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
    parts = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body.get("content") or []):
        parts += _block_events(index, block)
    delta = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    parts.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    parts.append(_event("message_stop", {"type": "message_stop"}))
    return "".join(parts).encode()


def _block_events(index: int, block: Any) -> list[str]:
    kind = block.get("type") if isinstance(block, dict) else None  # anything else is replayed as it is
    if kind == "text":
        opening, deltas = dict(block, text=""), [{"type": "text_delta", "text": block.get("text", "")}]
    elif kind == "tool_use":
        encoded = json.dumps(block.get("input") or {})
        size = -(-len(encoded) // _TOOL_INPUT_CHUNKS)
        opening = dict(block, input={})
        deltas = [{"type": "input_json_delta", "partial_json": encoded[i:i + size]}
                  for i in range(0, len(encoded), size)]
    elif kind == "thinking":
        opening = dict(block, thinking="", signature="")
        deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")},
                  {"type": "signature_delta", "signature": block.get("signature", "")}]
    else:
        opening, deltas = block, []
    events = [_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})]
    events += [_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
               for delta in deltas]
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events
