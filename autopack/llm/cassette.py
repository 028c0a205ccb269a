"""Record and replay Messages API responses (contract 3) through the SDK's HTTP transport.

A cassette is JSONL, one line per HTTP exchange, keyed by (role, phase, attempt); the
planner's lines (``autopack plan``) belong to no phase: their key is (planner, "", 1), and a
hand-written planner line may leave phase and attempt out. Every HTTP request the real anthropic client makes for a key consumes that key's next
unused line, in file order, so the SDK's own retries (429/529 ...) consume several.
A streamed response is stored as its final message and replayed as an event stream to
a streaming request (as JSON to a plain one), so a cassette serves both ways.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autopack.errors import CassetteError
from autopack.text import from_json, shown, to_json
from autopack.userfiles import read_regular, require_regular_or_absent

if TYPE_CHECKING:
    import httpx2

ROLES = ("builder", "doctor", "planner")
PLANNER_KEY = ("planner", "", 1)  # the (role, phase, attempt) of every planner exchange
EXHAUSTED_HEADER = "x-autopack-cassette"  # set to "exhausted" on the synthetic 400 served past the end
# Recorded framing headers would contradict the re-serialised body, so they are not replayed.
_FRAMING_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})
# The only response headers a recording keeps; request headers (the API key) are never written.
_RECORDED_HEADERS = ("request-id", "content-type")
_RECORDED_HEADER_PREFIXES = ("retry-after", "anthropic-ratelimit-")


@dataclass(frozen=True)
class CassetteEntry:
    """One recorded exchange: the key it answers and the HTTP response to serve."""

    role: str
    phase: str
    attempt: int
    status: int
    headers: dict[str, str]
    body: dict | str
    line: int


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(record: object) -> str | None:
    """Why a decoded line is not a valid cassette entry (None when it is)."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if "role" in record and record["role"] not in ROLES:
        return f"role {shown(record['role'])} is not {', '.join(ROLES[:-1])} or {ROLES[-1]}"
    planner = record.get("role") == "planner"
    for key in ("role", "phase", "attempt", "response"):
        if key not in record and not (planner and key in ("phase", "attempt")):
            return f"missing key '{key}'"
    phase, attempt, response = record.get("phase", ""), record.get("attempt", 1), record["response"]
    if planner and (phase, attempt) != PLANNER_KEY[1:]:
        return f'a planner line has phase "" and attempt 1 (or neither), got {shown(phase)} and {shown(attempt)}'
    if not planner and (not isinstance(phase, str) or not phase):
        return f"phase must be a non-empty string, got {shown(phase)}"
    if not _is_int(attempt) or attempt < 1:
        return f"attempt must be an integer >= 1, got {shown(attempt)}"
    if "request" in record and not isinstance(record["request"], dict):
        return "request must be an object when present"
    if not isinstance(response, dict):
        return f"response must be an object, got {type(response).__name__}"
    for key in ("status", "body"):
        if key not in response:
            return f"missing key 'response.{key}'"
    status, body, headers = response["status"], response["body"], response.get("headers", {})
    if not _is_int(status) or not 100 <= status <= 599:
        return f"response.status must be an HTTP status code, got {shown(status)}"
    if not isinstance(body, (dict, str)):
        return f"response.body must be an object (or a string for an error), got {type(body).__name__}"
    if isinstance(body, str) and status < 400:
        return f"response.body must be an object for status {status}; a string body is only for errors"
    if not isinstance(headers, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in headers.items()
    ):
        return "response.headers must be an object of string values"
    return None


class Cassette:
    """Recorded responses, consumed in file order per (role, phase, attempt); thread-safe."""

    def __init__(self, entries: list[CassetteEntry], source: str = "cassette"):
        self.entries = tuple(entries)
        self.source = source
        self._queues: dict[tuple[str, str, int], list[CassetteEntry]] = defaultdict(list)
        for entry in self.entries:
            self._queues[(entry.role, entry.phase, entry.attempt)].append(entry)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Cassette:
        """Read and validate a JSONL cassette; raise CassetteError naming file:line on the first bad line."""
        path = Path(path)
        where = shown(str(path), quote=False)
        try:
            text = read_regular(path).decode("utf-8")
        except OSError as problem:
            raise CassetteError(f"{where}: cannot read cassette: {problem.strerror or problem}") from problem
        except UnicodeDecodeError as problem:
            raise CassetteError(f"{where}: cassette is not UTF-8 text ({problem.reason})") from problem
        entries = []
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = from_json(raw)
            except json.JSONDecodeError as problem:
                raise CassetteError(f"{where}:{number}: not valid JSON ({problem.msg}, column {problem.colno})") from None
            except ValueError as problem:  # NaN, Infinity, 1e999
                raise CassetteError(f"{where}:{number}: not valid JSON ({problem})") from None
            except RecursionError:
                raise CassetteError(f"{where}:{number}: JSON nested too deeply to read") from None
            problem = _entry_problem(record)
            if problem:
                raise CassetteError(f"{where}:{number}: {problem}")
            response = record["response"]
            entries.append(CassetteEntry(
                role=record["role"], phase=record.get("phase", ""), attempt=record.get("attempt", 1),
                status=response["status"], headers=dict(response.get("headers", {})),
                body=response["body"], line=number,
            ))
        return cls(entries, source=str(path))

    def remaining(self, role: str, phase: str, attempt: int) -> int:
        """How many unused responses are left for this key."""
        with self._lock:
            return len(self._queues.get((role, phase, attempt), ()))

    def has_next(self, role: str, phase: str, attempt: int) -> bool:
        return self.remaining(role, phase, attempt) > 0

    def _take(self, role: str, phase: str, attempt: int) -> CassetteEntry | None:
        with self._lock:
            queue = self._queues.get((role, phase, attempt))
            return queue.pop(0) if queue else None

    def transport(self, role: str, phase: str, attempt: int):
        """An ``httpx2.MockTransport`` that answers each request with this key's next entry.

        Past the end it answers HTTP 400 (never retried by the SDK) whose error message says
        the cassette is exhausted and which carries ``x-autopack-cassette: exhausted``.
        """
        import httpx2

        def handle(request: httpx2.Request) -> httpx2.Response:
            streamed = _wants_stream(request)
            entry = self._take(role, phase, attempt)
            if entry is None:
                message = f"cassette exhausted for {role}/{phase}/{attempt}"
                return httpx2.Response(
                    400,
                    json={"type": "error", "error": {"type": "invalid_request_error", "message": message}},
                    headers={EXHAUSTED_HEADER: "exhausted", "request-id": "req_cassette_exhausted"},
                )
            return _response(httpx2, entry, streamed)

        return httpx2.MockTransport(handle)


def _wants_stream(request: httpx2.Request) -> bool:
    from autopack.llm.wire import request_json

    sent = request_json(request)
    return sent is not None and sent.get("stream") is True


def _response(httpx2, entry: CassetteEntry, streamed: bool = False):
    from autopack.llm.wire import message_to_sse

    headers = {key.lower(): value for key, value in entry.headers.items() if key.lower() not in _FRAMING_HEADERS}
    headers.setdefault("request-id", f"req_cassette_line_{entry.line}")
    if streamed and entry.status < 400 and isinstance(entry.body, dict):
        headers["content-type"] = "text/event-stream; charset=utf-8"
        return httpx2.Response(entry.status, content=message_to_sse(entry.body), headers=headers)
    if isinstance(entry.body, dict):
        headers.setdefault("content-type", "application/json")
        return httpx2.Response(entry.status, content=to_json(entry.body).encode(), headers=headers)
    headers.setdefault("content-type", "text/plain; charset=utf-8")
    return httpx2.Response(entry.status, content=entry.body.encode(), headers=headers)


class CassetteRecorder:
    """Writes a cassette from live traffic: one line per HTTP exchange, in completion order.

    The file is created (truncated) when the recorder is made. Each line holds the JSON body
    sent and the response's status, allow-listed headers and body; a streamed response is
    stored as its assembled final message. Request headers are never written.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            require_regular_or_absent(self.path)  # a cassette is a file to replay later, never a pipe
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("", encoding="utf-8")
        except OSError as problem:
            raise CassetteError(f"{shown(str(self.path), quote=False)}: cannot write the cassette: "
                                f"{problem.strerror or problem}") from problem

    def transport(self, role: str, phase: str, attempt: int, inner: httpx2.BaseTransport) -> httpx2.BaseTransport:
        """A transport that forwards to ``inner`` and records each exchange under (role, phase, attempt)."""
        from autopack.llm.wire import ObservedTransport, is_event_stream

        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")

        def exchanged(sent: dict | None, response, body, problem: str | None) -> None:
            if isinstance(body, dict) or (isinstance(body, str) and response.status_code >= 400):
                headers = recorded_headers(response.headers, streamed=is_event_stream(response))
                self._write(role, phase, attempt, sent, response.status_code, headers, body)

        return ObservedTransport(inner, exchanged)

    def _write(self, role: str, phase: str, attempt: int, sent: dict | None, status: int,
               headers: dict[str, str], body: dict | str) -> None:
        record: dict = {"role": role, "phase": phase, "attempt": attempt}
        if sent is not None:
            record["request"] = sent
        record["response"] = {"status": status, "headers": headers, "body": body}
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(to_json(record, ensure_ascii=False) + "\n")


def recorded_headers(headers, *, streamed: bool) -> dict[str, str]:
    """The allow-listed response headers; a stream's content type becomes JSON (its body is stored assembled)."""
    kept = {}
    for key, value in headers.items():
        name = key.lower()
        if name in _RECORDED_HEADERS or name.startswith(_RECORDED_HEADER_PREFIXES):
            kept[name] = value
    if streamed:
        kept["content-type"] = "application/json"
    return kept
