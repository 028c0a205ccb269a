"""The doctor: one short, cheap model call that diagnoses a failed attempt for the next one.

Advisory only: it never raises and never blocks a retry. It is skipped — and says why in
``Diagnosis.skipped`` — when the cassette holds no doctor line for the attempt, or the call
fails. (The runner records its own skips: ``hardening:<pattern>`` when a deterministic
pattern already explained the failure, ``cap`` when the doctor budget is spent.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

from autopack.llm.cassette import Cassette
from autopack.llm.client import CallRecord, ClientFactory, create_message
from autopack.failures import DIGEST_MAX_CHARS
from autopack.text import head_tail

ROLE = "doctor"

SYSTEM_PROMPT = """\
You are the doctor of autopack, an autonomous coding agent. An attempt at one phase of a plan \
failed; another attempt will follow, made by a model that sees your answer. Read the failure \
report and answer in plain text, at most 150 words, no Markdown headings or code fences:
Diagnosis: the most likely root cause, naming the file, test or error it comes from.
Approach: what the next attempt should do differently, concretely.
If the report does not show the cause, say what is missing instead of guessing."""


@dataclass(frozen=True)
class Diagnosis:
    """The doctor's advice (``text``), or why there is none (``skipped``), and the calls it made."""

    text: str | None
    skipped: str | None  # None when called; else "hardening:<pattern>" | "cassette" | "cap" | "error"
    calls: tuple[CallRecord, ...]


class Doctor:
    """Diagnoses failed attempts with ``model`` through ``client_factory`` (live, recording or replay)."""

    def __init__(self, client_factory: ClientFactory, *, model: str, max_tokens: int = 1024,
                 cassette: Cassette | None = None, clock: Callable[[], float] = time.monotonic,
                 prices: Mapping | None = None):
        self.client_factory = client_factory
        self.prices = prices
        self.model = model
        self.max_tokens = max_tokens
        self.cassette = cassette
        self.clock = clock

    def diagnose(self, *, phase_id: str, attempt: int, phase_goal: str, digest: str) -> Diagnosis:
        """Ask for a diagnosis of attempt ``attempt`` (the cassette key is (doctor, phase, attempt))."""
        if self.cassette is not None and not self.cassette.has_next(ROLE, phase_id, attempt):
            return Diagnosis(text=None, skipped="cassette", calls=())
        outcome = create_message(
            self.client_factory(ROLE, phase_id, attempt), role=ROLE, model=self.model,
            max_tokens=self.max_tokens, clock=self.clock, prices=self.prices, system=SYSTEM_PROMPT,
            messages=[{"role": "user", "content": render_report(phase_id, attempt, phase_goal, digest)}],
        )
        text = None
        if outcome.message is not None:
            text = "\n".join(block.text for block in outcome.message.content if block.type == "text").strip()
        if not text:
            return Diagnosis(text=None, skipped="error", calls=outcome.calls)
        return Diagnosis(text=text, skipped=None, calls=outcome.calls)


def cap_digest(digest: str, limit: int = DIGEST_MAX_CHARS) -> str:
    """``digest`` within ``limit`` characters: its head and its tail, where errors usually are."""
    digest = digest.strip()
    return head_tail(digest, limit, f"\n[... {len(digest) - limit} characters omitted ...]\n")


def render_report(phase_id: str, attempt: int, phase_goal: str, digest: str) -> str:
    return (f"Phase '{phase_id}', attempt {attempt} failed.\nPhase goal: {phase_goal}\n\n"
            f"Failure report:\n{cap_digest(digest)}")
