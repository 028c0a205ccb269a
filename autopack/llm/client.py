"""Anthropic clients (live, recording or cassette replay), the ledger rows, prices and deprecations.

``make_client_factory`` hands out a client per (role, phase, attempt) whose HTTP transport
is wrapped by the ledger (``ledger.LedgerTransport``): every HTTP request, the SDK's retries
included, becomes a ``CallRecord``. ``create_message`` makes one Messages API call (streamed
when asked) and returns its message and those records, also when the call failed.
"""

from __future__ import annotations

import os
import re
import reprlib
import socket
import threading
import time
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from autopack.bounds import PRICE_USD_PER_MTOK
from autopack.errors import EnvironmentProblem, UsageError
from autopack.text import one_line, shown

if TYPE_CHECKING:
    import anthropic
    import httpx2

    from autopack.llm.cassette import Cassette, CassetteRecorder

# USD per million tokens: (input, output, cache write (5 min), cache read).
PRICES_PER_MTOK: dict[str, tuple[float, float, float, float]] = {
    "claude-opus-5-5": (5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-5-5": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-5-5": (1.0, 5.0, 1.25, 0.10),
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-4-5": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
}
_DATE_SUFFIX = re.compile(r"-\d{8}$")  # "claude-sonnet-4-5-20250929" is priced as "claude-sonnet-4-5"
REPLAY_API_KEY = "cassette-replay"
MISSING_KEY_MESSAGE = (
    "ANTHROPIC_API_KEY is not set: export it for a live run, or give the plan a cassette (--cassette FILE)"
)


MAX_TOKEN_COUNT = 10**9  # the most tokens one usage count may claim: far past any context window
USAGE_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
# Content blocks autopack reads, with their required fields; other block types are kept and ignored.
BLOCK_FIELDS: dict[str, dict[str, type]] = {
    "text": {"text": str},
    "tool_use": {"id": str, "name": str, "input": dict},
    "thinking": {"thinking": str, "signature": str},
    "redacted_thinking": {"data": str},
}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call; ``input_tokens`` excludes the cached ones."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_json(cls, usage: Any) -> Usage:
        """From the ``usage`` object of a response body: a count that is missing, null or not a valid
        count (``token_count``) counts 0, so a hostile answer never records a negative or absurd usage."""
        usage = usage if isinstance(usage, dict) else {}
        counts = [token_count(usage.get(key)) or 0 for key in USAGE_COUNTS]
        return cls(*counts)


def token_count(value: Any) -> int | None:
    """``value`` when it is a valid token count (an integer in [0, MAX_TOKEN_COUNT]), else None."""
    valid = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT
    return value if valid else None


def message_problem(status: int, body: Any) -> str | None:
    """Why an answer that is not an API error (HTTP < 400, no error event) is unusable, or None.

    The one check of what the Messages API sends, made where each answer enters (the ledger
    transport): HTTP 200; a JSON object of type "message" with role "assistant", a string id,
    model and stop_reason; content a list of objects with a string type, the blocks in
    BLOCK_FIELDS with their fields; usage with input and output token counts (and optional cache
    counts, null allowed) that are integers in [0, MAX_TOKEN_COUNT].
    """
    if status != 200:
        return f"HTTP {status} instead of 200 for a Messages API answer"
    if not isinstance(body, dict) or body.get("type") != "message":
        return "not a Messages API response (no JSON object of type message)"
    if body.get("role") != "assistant":
        return f"role is {_shown(body.get('role'))}, not assistant"
    for key in ("id", "model", "stop_reason"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key} is {_shown(body.get(key))}, not a string"
    content = body.get("content")
    if not isinstance(content, list):
        return f"content is {_shown(content)}, not a list of content blocks"
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"content[{index}] is {_shown(block)}, not a content block with a type"
        for key, kind in BLOCK_FIELDS.get(block["type"], {}).items():
            if not isinstance(block.get(key), kind):
                return f"content[{index}] ({block['type']}) has {key} {_shown(block.get(key))}, not {kind.__name__}"
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return f"usage is {_shown(usage)}, not an object of token counts"
    for key in USAGE_COUNTS:
        value = usage.get(key)
        if (value is not None or key in USAGE_COUNTS[:2]) and token_count(value) is None:
            return f"usage.{key} is {_shown(value)}, not a token count (an integer from 0 to {MAX_TOKEN_COUNT:,})"
    return None


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut short (reprlib); None reads as missing."""
    return "missing" if value is None else reprlib.repr(value)


@dataclass(frozen=True)
class CallRecord:
    """One row of the ledger per HTTP request (an SDK retry is a row of its own)."""

    role: str
    model: str
    max_tokens: int
    usage: Usage
    stop_reason: str | None
    latency_ms: int
    request_id: str | None
    cost_usd: float | None
    status: str  # "ok" | "error"
    error: str | None = None
    http_status: int | None = None  # None when no response arrived (connection error, timeout)
    predicted_tokens: int | None = None  # the budget estimate this call was made with
    malformed: bool = False  # an answer arrived (HTTP < 400) but ``message_problem`` refused it


def model_prices(model: str, prices: Mapping | None = None) -> tuple[float, float, float, float] | None:
    """The price tuple of a model: ``prices`` first, then the built-in table; dated ids fall back to their family."""
    tables = (prices, PRICES_PER_MTOK) if prices else (PRICES_PER_MTOK,)
    for name in (model, _DATE_SUFFIX.sub("", model)):
        for table in tables:
            if name in table:
                return tuple(table[name])
    return None


PRICE_FIELDS = ("input", "output", "cache_write", "cache_read")  # the order of a price tuple


def parse_price_overrides(mapping: Mapping, where: str = "prices") -> dict[str, tuple[float, float, float, float]]:
    """Validate ``{model: {input, output, cache_write, cache_read}}`` (USD per million tokens) into price tuples.

    Raises UsageError naming ``where.model.key`` for an unknown or missing key, or a value that
    is not a number in PRICE_USD_PER_MTOK (NaN and infinities included).
    """
    if not isinstance(mapping, Mapping):
        raise UsageError(f"{where} must be a table of models, got {type(mapping).__name__}")
    prices = {}
    for model, entry in mapping.items():
        label = f"{where}.{shown(model, quote=False)}"
        if not isinstance(entry, Mapping):
            raise UsageError(f"{label} must be a table with keys {', '.join(PRICE_FIELDS)}")
        unknown = sorted(set(entry) - set(PRICE_FIELDS))
        if unknown:
            raise UsageError(f"{label}.{shown(unknown[0], quote=False)} is not a price key; "
                             f"use {', '.join(PRICE_FIELDS)}")
        values = []
        for key in PRICE_FIELDS:
            if key not in entry:
                raise UsageError(f"{label}.{key} is missing (USD per million tokens; 0 if free)")
            value = entry[key]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or PRICE_USD_PER_MTOK.problem(float(value))):
                raise UsageError(f"{label}.{key} must be {PRICE_USD_PER_MTOK} (USD per million tokens), "
                                 f"got {shown(value)}")
            values.append(float(value))
        prices[str(model)] = tuple(values)
    return prices


def deprecation_warning(model: str) -> str | None:
    """One line when the SDK lists ``model`` as deprecated, naming its end-of-life date; else None."""
    from anthropic._data import DEPRECATED_MODELS

    end_of_life = DEPRECATED_MODELS.get(model)
    if end_of_life is None:
        return None
    return (f"model {model} is deprecated and reaches end-of-life on {end_of_life}; "
            f"set builder_model/doctor_model/escalation_model (or [run.models]) to a current model")


def cost_usd(model: str, usage: Usage, prices: Mapping | None = None) -> float | None:
    """Cost of one call in USD, or None when the model is unpriced (never a silent 0)."""
    price = model_prices(model, prices)
    if price is None:
        return None
    per_input, per_output, per_cache_write, per_cache_read = price
    total = (
        usage.input_tokens * per_input
        + usage.output_tokens * per_output
        + usage.cache_write_tokens * per_cache_write
        + usage.cache_read_tokens * per_cache_read
    )
    return round(total / 1_000_000, 8)


ClientFactory = Callable[[str, str, int], "anthropic.Anthropic"]  # (role, phase, attempt) -> client


def make_client_factory(*, cassette: Cassette | None, api_key: str | None, max_retries: int = 2,
                        timeout_s: float = 600.0, recorder: CassetteRecorder | None = None,
                        live_transport: httpx2.BaseTransport | None = None) -> ClientFactory:
    """Clients replaying ``cassette`` when given, else live clients; no cassette and no key is exit 4.

    Every client's transport is wrapped by the ledger. With a ``recorder`` each live request is
    also written to its cassette. ``live_transport`` replaces the network (default: an
    ``httpx2.HTTPTransport`` with TCP keep-alive, honouring HTTPS_PROXY). ``timeout_s`` is
    always set: the SDK refuses large ``max_tokens`` non-streaming calls without one.
    """
    if cassette is None and not api_key:
        raise EnvironmentProblem(MISSING_KEY_MESSAGE)
    if cassette is not None and recorder is not None:
        raise UsageError("recording needs a live run: drop the cassette (plan `cassette`/--cassette) or --record")
    shared: dict[str, Any] = {}  # the live transport (connection pool) and, without a recorder, one live client
    lock = threading.Lock()

    def client_for(transport: httpx2.BaseTransport, key: str) -> anthropic.Anthropic:
        import anthropic

        from autopack.llm.ledger import LedgerTransport

        http_client = anthropic.DefaultHttpxClient(transport=LedgerTransport(transport))
        return anthropic.Anthropic(api_key=key, max_retries=max_retries, timeout=timeout_s, http_client=http_client)

    def live() -> httpx2.BaseTransport:
        if "transport" not in shared:
            shared["transport"] = live_transport or _network_transport()
        return shared["transport"]

    def factory(role: str, phase: str, attempt: int) -> anthropic.Anthropic:
        if cassette is not None:
            return client_for(cassette.transport(role, phase, attempt), REPLAY_API_KEY)
        with lock:
            if recorder is not None:
                return client_for(recorder.transport(role, phase, attempt, live()), api_key)
            if "client" not in shared:
                shared["client"] = client_for(live(), api_key)
            return shared["client"]

    return factory


def _network_transport() -> httpx2.BaseTransport:
    import httpx2

    proxy = next((os.environ[name] for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(name)), None)
    return httpx2.HTTPTransport(limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
                                socket_options=[(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)], proxy=proxy)


@dataclass(frozen=True)
class CallOutcome:
    """A Messages API call: the message when it succeeded, and the ledger rows of its HTTP requests."""

    message: Any | None  # anthropic.types.Message
    calls: tuple[CallRecord, ...]
    error: str | None = None  # one line, when there is no message
    http_status: int | None = None  # the final HTTP status of a failed call, None for connection errors
    cassette_exhausted: bool = False  # the SDK retried past the last cassette line for this key
    malformed: bool = False  # the answer arrived but is not a usable Messages API message


_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError)


def create_message(client: anthropic.Anthropic, *, role: str, model: str, max_tokens: int, stream: bool = False,
                   clock: Callable[[], float] = time.monotonic, prices: Mapping | None = None,
                   predicted_tokens: int | None = None, **params: Any) -> CallOutcome:
    """One Messages API call (``stream``: through ``messages.stream``); API errors are an outcome, not an exception.

    The rows come from the client's ledger transport; a client without one (a test double)
    still yields one row for the call. The answer is used only when its row passed
    ``message_problem``: the SDK builds a Message from any JSON without checking it.
    """
    import anthropic

    from autopack.llm.cassette import EXHAUSTED_HEADER
    from autopack.llm.ledger import capture_calls

    started = time.monotonic()
    message, error, http_status, exhausted, unreadable = None, None, None, False, False
    with capture_calls(role, clock=clock, prices=prices, predicted_tokens=predicted_tokens) as calls:
        try:
            with warnings.catch_warnings():  # the SDK's stream accumulator warns about values of the wrong type,
                warnings.filterwarnings("ignore", "Pydantic serializer warnings")  # which message_problem refuses
                if stream:
                    with client.messages.stream(model=model, max_tokens=max_tokens, **params) as events:
                        message = events.get_final_message()
                else:
                    message = client.messages.create(model=model, max_tokens=max_tokens, **params)
        except anthropic.APIStatusError as problem:
            detail = problem.api_message or problem.message
            http_status = problem.status_code
            error = (f"HTTP {http_status}: {detail}" if http_status >= 400
                     else f"error event in the response stream: {detail}")
            exhausted = problem.response.headers.get(EXHAUSTED_HEADER) == "exhausted"
        except anthropic.APITimeoutError:
            error = "request timed out (after the SDK's retries)"
        except anthropic.APIConnectionError as problem:
            error = f"connection error: {problem.__cause__ or problem.message}"
        except anthropic.AnthropicError as problem:
            error = f"unusable response: {problem}"
        except _UNREADABLE as problem:  # hostile stream events the SDK's accumulator chokes on
            error = f"malformed response: the SDK could not read it ({type(problem).__name__}: {problem})"
            unreadable = True
    rows = tuple(calls) or (_fallback_row(role, model, max_tokens, message, error, started, prices, predicted_tokens),)
    last = rows[-1]  # the answer the SDK returned (or failed on)
    if unreadable and not last.malformed:
        last = replace(last, status="error", error=error, malformed=True)
        rows = (*rows[:-1], last)
    if last.malformed:
        message, error = None, last.error
    return CallOutcome(message=message, calls=rows, error=None if message is not None else one_line(error or ""),
                       http_status=http_status, cassette_exhausted=exhausted, malformed=last.malformed)


def _fallback_row(role: str, model: str, max_tokens: int, message: Any, error: str | None, started: float,
                  prices: Mapping | None, predicted_tokens: int | None) -> CallRecord:
    body = message.to_dict(warnings=False) if hasattr(message, "to_dict") else message
    problem = message_problem(200, body) if message is not None else None
    usage = Usage.from_json(body.get("usage")) if isinstance(body, dict) else Usage()
    return CallRecord(
        role=role, model=model, max_tokens=max_tokens, usage=usage,
        stop_reason=body.get("stop_reason") if problem is None and isinstance(body, dict) else None,
        latency_ms=max(0, int(round((time.monotonic() - started) * 1000))),
        request_id=getattr(message, "_request_id", None), cost_usd=cost_usd(model, usage, prices),
        status="ok" if message is not None and problem is None else "error",
        error=f"malformed response: {problem}" if problem else error, predicted_tokens=predicted_tokens,
        malformed=problem is not None,
    )
