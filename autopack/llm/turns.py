"""The agent builder's model: one Messages API call per turn, through the client factory.

Each turn's call goes through the ledger transport (a ``CallRecord`` per HTTP request) and, when
replaying, consumes the next cassette line of (role, phase, attempt): the builder's, or the
planner's (whose requests name no phase). A turn with no line left is a ``cassette_exhausted``
reply, sent nowhere.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from autopack.llm.budget import STREAMING_THRESHOLD
from autopack.llm.cassette import Cassette
from autopack.llm.client import ClientFactory, create_message
from autopack.ports import TurnReply, TurnRequest

ROLE = "builder"


class ClaudeTurns:
    """A ``TurnModel`` backed by Claude (live, recording or cassette replay)."""

    def __init__(self, client_factory: ClientFactory, *, cassette: Cassette | None = None,
                 clock: Callable[[], float] = time.monotonic, prices: Mapping | None = None, role: str = ROLE):
        self.client_factory = client_factory
        self.role = role
        self.cassette = cassette
        self.clock = clock
        self.prices = prices

    def reply(self, request: TurnRequest) -> TurnReply:
        from autopack.llm.builder import call_failure

        phase, attempt, role = request.phase, request.attempt, self.role
        if self.cassette is not None and not self.cassette.has_next(role, phase, attempt):
            key = f"phase '{phase}' attempt {attempt}" if phase else "the plan"
            message = f"cassette has no {role} response for {key} (turn {request.turn})"
            return TurnReply((), None, 0, (), {"error": message, "kind": "cassette_exhausted"},
                             "cassette_exhausted", message)
        outcome = create_message(
            self.client_factory(role, phase, attempt), role=role, model=request.model,
            max_tokens=request.max_tokens, stream=request.max_tokens > STREAMING_THRESHOLD, clock=self.clock,
            predicted_tokens=request.predicted_tokens, prices=self.prices,
            system=request.system, messages=request.messages, tools=request.tools,
        )
        if outcome.message is None:
            kind, message = call_failure(outcome, phase, attempt)
            return TurnReply((), None, 0, outcome.calls, {"error": message, "kind": kind}, kind, message)
        message = outcome.message
        return TurnReply(tuple(content_blocks(message)), message.stop_reason, message.usage.output_tokens or 0,
                         outcome.calls, response_dict(message))


def content_blocks(message: Any) -> list[dict]:
    """The blocks of an SDK message as they are sent back in the next turn's assistant message."""
    blocks = []
    for block in message.content:
        if block.type == "text":
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        elif block.type == "thinking":
            blocks.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
        elif block.type == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": block.data})
    return blocks


def response_dict(message: Any) -> dict:
    """An SDK message for the transcript: its blocks, stop reason and token counts."""
    usage = message.usage
    return {"content": content_blocks(message), "stop_reason": message.stop_reason,
            "usage": {"input_tokens": usage.input_tokens or 0, "output_tokens": usage.output_tokens or 0,
                      "cache_read_input_tokens": getattr(usage, "cache_read_input_tokens", None) or 0,
                      "cache_creation_input_tokens": getattr(usage, "cache_creation_input_tokens", None) or 0}}
