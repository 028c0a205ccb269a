"""Text autopack shows or writes: long values cut to their head and tail, and strict JSON.

``shown`` is how a user's or an LLM's value appears in a one-line message; ``head_tail``
is the one truncator (prompts, test messages and error lines keep where text begins and
where it ends); ``to_json`` writes every JSON document autopack writes (never NaN or an
infinity, which SQLite's JSON functions and other readers refuse as malformed), and
``from_json`` reads user JSON (cassettes) under the same rule.
"""

from __future__ import annotations

import json
import math
from typing import Any

ECHO_MAX_CHARS = 200  # a value quoted in a message (ids are at most 64, paths rarely longer)
MESSAGE_MAX_CHARS = 1500  # a whole one-line error: the backstop in AutopackError
DIFF_MAX_BYTES = 256 * 1024  # of one attempt's diff, shown or stored; the rest is cut at a line and counted


def one_line(text: str) -> str:
    """``text`` with every run of white space (newlines included) made one space."""
    return " ".join(text.split())


def head_tail(text: str, limit: int, marker: str = "…") -> str:
    """``text`` in at most ``limit`` characters: its head and tail joined by ``marker``."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(marker))
    head = keep // 2
    return text[:head] + marker + text[len(text) - (keep - head):]


def capped_diff(data: bytes, limit: int = DIFF_MAX_BYTES) -> tuple[str, bool]:
    """A diff's text within ``limit`` bytes, cut after its last whole line, and whether it was cut."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    kept = data[:limit]
    kept = kept[:kept.rfind(b"\n") + 1] or kept
    return kept.decode("utf-8", "replace"), True


def shown(value: object, *, quote: bool = True, limit: int = ECHO_MAX_CHARS) -> str:
    """``value`` for a one-line message: a string quoted (unless ``quote`` is false, as for a
    leading path), anything else as its repr; beyond ``limit`` characters, head…tail and the length.

    >>> shown("a" * 100000, limit=12)
    "'aaaaa…aaaaaa' (100000 chars)"
    """
    quote = quote and isinstance(value, str)
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if quote else text
    cut = head_tail(text, limit)
    return f"{repr(cut) if quote else cut} ({len(text)} chars)"


def to_json(value: Any, **options: Any) -> str:
    """``json.dumps`` that raises ValueError for NaN and infinities instead of writing invalid JSON."""
    return json.dumps(value, allow_nan=False, **options)


def from_json(text: str) -> Any:
    """``json.loads`` that refuses NaN, infinities and numbers beyond a float (ValueError), as to_json does."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{shown(text)} is too large for a number")
    return value
