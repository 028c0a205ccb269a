"""Failed attempts: their fingerprint, and the digest the builder sees on the next attempt."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Sequence

from autopack.text import head_tail

DIGEST_MAX_CHARS = 6000
TRACE_MAX_CHARS = 800

_VOLATILE = [
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b[0-9a-f]{7,64}\b"), "<hex>"),
    (re.compile(r"(/[\w.@-]+)+/?"), "<path>"),
    (re.compile(r"\b\d+(\.\d+)?\s*(ms|s|sec|seconds)\b"), "<duration>"),
    (re.compile(r"\d+"), "<n>"),
]


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed: a kind from contract 4, a one-line message and the evidence."""

    kind: str
    message: str
    evidence: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.evidence or self.message)


def normalise(text: str) -> str:
    """Strip what changes between identical failures: numbers, paths, hex, timestamps, durations."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def fingerprint(kind: str, evidence: str) -> str:
    return hashlib.sha256(f"{kind}\n{normalise(evidence)}".encode()).hexdigest()[:16]


def _trim(text: str, limit: int) -> str:
    return head_tail(text.strip(), limit, "\n...\n")


def digest(failure: Failure, decision: dict[str, Any] | None = None,
           failing: Sequence[Any] = (), output_tail: str = "") -> str:
    """What the next attempt's prompt says about this failure, capped at DIGEST_MAX_CHARS."""
    lines = [f"Failure kind: {failure.kind}", f"Message: {failure.message}"]
    if decision:
        lines += ["Verdict reasons:"] + [f"- {r}" for r in decision.get("reasons", [])]
    if failure.evidence and failure.evidence != failure.message:
        lines += ["Details:", _trim(failure.evidence, 2000)]
    for outcome in list(failing)[:10]:
        lines += [f"Test {outcome.test_id} {outcome.outcome}:", _trim(outcome.message, TRACE_MAX_CHARS)]
    if output_tail and not failing:
        lines += ["End of the test output:", _trim(output_tail, 1500)]
    return _trim("\n".join(lines), DIGEST_MAX_CHARS)
