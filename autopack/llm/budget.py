"""How many output tokens a builder call may spend (``max_tokens``), and the escalate-once rule.

The estimate comes from, in order of precedence:

- ``persisted``: a budget stored on the phase after an escalation, so a later drain
  starts where the last attempt had to go;
- ``history``: with at least ``HISTORY_MIN_SAMPLES`` completed phases of the same category
  and complexity, their median output tokens × ``HISTORY_HEADROOM``;
- ``heuristic``: a base per complexity × a factor per category, plus 1500 tokens per
  deliverable, plus scope bytes / 3 (rewriting a file costs about its size / 3.5 in tokens).

Every budget is rounded up to a multiple of 512 and clamped to [floor, cap]. A truncated
response earns exactly one retry at ``escalated_budget`` (double, capped).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

BASE_BY_COMPLEXITY = {"low": 4096, "medium": 8192, "high": 16384}
FACTOR_BY_CATEGORY = {"docs": 0.75, "tests": 1.0, "feature": 1.25, "refactor": 1.5, "bugfix": 1.0, "config": 0.75}
TOKENS_PER_DELIVERABLE = 1500
SCOPE_BYTES_PER_TOKEN = 3
HISTORY_MIN_SAMPLES = 3
HISTORY_HEADROOM = 1.5
ROUNDING = 512
DEFAULT_FLOOR = 4096
DEFAULT_CAP = 64000
STREAMING_THRESHOLD = 21_000  # above this max_tokens, calls are streamed (the SDK's non-streaming limit)
TRUNCATION_UTILISATION = 0.95
TRUNCATING_STOPS = ("max_tokens", "model_context_window_exceeded")


@dataclass(frozen=True)
class Budget:
    """A ``max_tokens`` for one builder call and where it came from."""

    max_tokens: int
    source: str  # "heuristic" | "history" | "persisted"
    detail: str  # how it was computed, for logs and `status`


def _fit(tokens: float, floor: int, cap: int) -> int:
    rounded = math.ceil(tokens / ROUNDING) * ROUNDING
    return max(floor, min(cap, rounded))


def estimate_budget(*, category: str, complexity: str, deliverables: int, scope_files: int, scope_bytes: int,
                    history: Sequence[int] = (), persisted: int | None = None,
                    floor: int = DEFAULT_FLOOR, cap: int = DEFAULT_CAP) -> Budget:
    """The builder's ``max_tokens`` for a phase; unknown category/complexity raise ValueError."""
    if complexity not in BASE_BY_COMPLEXITY:
        raise ValueError(f"unknown complexity {complexity!r} (expected one of {', '.join(BASE_BY_COMPLEXITY)})")
    if category not in FACTOR_BY_CATEGORY:
        raise ValueError(f"unknown category {category!r} (expected one of {', '.join(FACTOR_BY_CATEGORY)})")
    if persisted is not None:
        tokens = _fit(persisted, floor, cap)
        return Budget(tokens, "persisted", f"escalated budget stored on the phase: {persisted}")
    if len(history) >= HISTORY_MIN_SAMPLES:
        median = statistics.median(history)
        tokens = _fit(median * HISTORY_HEADROOM, floor, cap)
        return Budget(tokens, "history", f"median output of {len(history)} completed {category}/{complexity} "
                                         f"phases {median:g} × {HISTORY_HEADROOM:g} → {tokens}")
    base = BASE_BY_COMPLEXITY[complexity]
    factor = FACTOR_BY_CATEGORY[category]
    raw = base * factor + TOKENS_PER_DELIVERABLE * deliverables + scope_bytes / SCOPE_BYTES_PER_TOKEN
    tokens = _fit(raw, floor, cap)
    detail = (f"{complexity} {base} × {category} {factor:g} + {deliverables} deliverable(s) × "
              f"{TOKENS_PER_DELIVERABLE} + {scope_bytes} bytes in {scope_files} scope file(s) / "
              f"{SCOPE_BYTES_PER_TOKEN} = {raw:.0f} → {tokens}")
    return Budget(tokens, "heuristic", detail)


def escalated_budget(base: int, *, cap: int = DEFAULT_CAP) -> int:
    """The one retry after a truncation gets twice the budget, never more than ``cap``."""
    return min(cap, base * 2)


def is_truncated(stop_reason: str | None, output_tokens: int, max_tokens: int) -> bool:
    """Whether a response was (or may have been) cut off: a truncating stop, or ≥ 95 % of the budget used."""
    if stop_reason in TRUNCATING_STOPS:
        return True
    return max_tokens > 0 and output_tokens >= TRUNCATION_UTILISATION * max_tokens
