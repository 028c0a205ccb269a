"""Anthropic clients (live or cassette replay), and the ledger row of every API call.

``make_client_factory`` hands out one client per (role, phase, attempt): a live client,
or one whose HTTP transport replays that key's cassette lines. ``create_message`` makes
one Messages API call and always returns a ``CallRecord`` (tokens, cost, latency,
request id), also when the call failed after the SDK's own retries.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from autopack.errors import EnvironmentProblem

if TYPE_CHECKING:
    import anthropic

    from autopack.llm.cassette import Cassette

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


@dataclass(frozen=True)
class Usage:
    """Token counts of one call; ``input_tokens`` excludes the cached ones."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """From an SDK ``Usage`` object (its cache fields may be None)."""
        return cls(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
            cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
        )


@dataclass(frozen=True)
class CallRecord:
    """One row of the ledger per API call."""

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


def model_prices(model: str, prices: Mapping | None = None) -> tuple[float, float, float, float] | None:
    """The price tuple of a model: ``prices`` first, then the built-in table; dated ids fall back to their family."""
    tables = (prices, PRICES_PER_MTOK) if prices else (PRICES_PER_MTOK,)
    for name in (model, _DATE_SUFFIX.sub("", model)):
        for table in tables:
            if name in table:
                return tuple(table[name])
    return None


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
                        timeout_s: float = 600.0) -> ClientFactory:
    """Clients replaying ``cassette`` when given, else live clients; no cassette and no key is exit 4.

    ``timeout_s`` is always set: the SDK refuses large ``max_tokens`` non-streaming calls without one.
    """
    if cassette is None and not api_key:
        raise EnvironmentProblem(MISSING_KEY_MESSAGE)
    live: list[anthropic.Anthropic] = []  # one shared live client (connection pool), made on first use

    def factory(role: str, phase: str, attempt: int) -> anthropic.Anthropic:
        import anthropic
        import httpx2

        if cassette is not None:
            transport = cassette.transport(role, phase, attempt)
            return anthropic.Anthropic(
                api_key=REPLAY_API_KEY, max_retries=max_retries, timeout=timeout_s,
                http_client=httpx2.Client(transport=transport),
            )
        if not live:
            live.append(anthropic.Anthropic(api_key=api_key, max_retries=max_retries, timeout=timeout_s))
        return live[0]

    return factory


@dataclass(frozen=True)
class CallOutcome:
    """A Messages API call: the message when it succeeded, and its ledger row either way."""

    message: Any | None  # anthropic.types.Message
    record: CallRecord
    http_status: int | None = None  # the final HTTP status of a failed call, None for connection errors
    cassette_exhausted: bool = False  # the SDK retried past the last cassette line for this key


def create_message(client: anthropic.Anthropic, *, role: str, model: str, max_tokens: int,
                   clock: Callable[[], float] = time.monotonic, prices: Mapping | None = None,
                   **params: Any) -> CallOutcome:
    """Call ``client.messages.create`` and record it; API errors become an ``error`` record, not an exception."""
    import anthropic

    from autopack.llm.cassette import EXHAUSTED_HEADER

    started = clock()

    def failed(error: str, request_id: str | None = None, **extra: Any) -> CallOutcome:
        record = CallRecord(
            role=role, model=model, max_tokens=max_tokens, usage=Usage(), stop_reason=None,
            latency_ms=_elapsed_ms(clock, started), request_id=request_id, cost_usd=None,
            status="error", error=error,
        )
        return CallOutcome(message=None, record=record, **extra)

    try:
        message = client.messages.create(model=model, max_tokens=max_tokens, **params)
    except anthropic.APIStatusError as problem:
        detail = problem.api_message or problem.message
        exhausted = problem.response.headers.get(EXHAUSTED_HEADER) == "exhausted"
        return failed(f"HTTP {problem.status_code}: {detail}", problem.request_id,
                      http_status=problem.status_code, cassette_exhausted=exhausted)
    except anthropic.APITimeoutError:
        return failed("request timed out (after the SDK's retries)")
    except anthropic.APIConnectionError as problem:
        cause = problem.__cause__
        return failed(f"connection error: {cause or problem.message}")
    usage = Usage.from_api(message.usage)
    record = CallRecord(
        role=role, model=model, max_tokens=max_tokens, usage=usage, stop_reason=message.stop_reason,
        latency_ms=_elapsed_ms(clock, started), request_id=_request_id(message),
        cost_usd=cost_usd(model, usage, prices), status="ok",
    )
    return CallOutcome(message=message, record=record)


def _elapsed_ms(clock: Callable[[], float], started: float) -> int:
    return max(0, int(round((clock() - started) * 1000)))


def _request_id(message: Any) -> str | None:
    return getattr(message, "_request_id", None)
