"""A deterministic builder for tests and benchmarks: the agent loop playing a script, no HTTP.

``ScriptedBuilder(turns)`` is the agent builder with ``ScriptedTurns`` as its model: each turn's
reply is the next ``ScriptedTurn`` (its tool calls, text and stop reason), across attempts in
order. Replies carry token counts estimated from the request and the reply (4 characters a
token) and ledger rows priced like real calls, so transcripts, the ledger and the cost caps
work as they do with Claude. A script that has run out answers like an exhausted cassette.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from autopack.engine.agent import AgentBuilder
from autopack.llm.client import CallRecord, Usage, cost_usd
from autopack.ports import TurnReply, TurnRequest

SCRIPTED_MODEL = "claude-sonnet-5-5"  # priced, so the cost caps see scripted calls


@dataclass(frozen=True)
class ScriptedTurn:
    """One reply: tool calls as (name, input) pairs, then optional text."""

    calls: tuple[tuple[str, Any], ...] = ()
    text: str = ""
    stop_reason: str | None = None  # default: tool_use with calls, else end_turn
    output_tokens: int | None = None  # default: the reply's size / 4

    @classmethod
    def of(cls, *calls: tuple[str, Any], **fields: Any) -> ScriptedTurn:
        return cls(tuple(calls), **fields)


class ScriptedTurns:
    """A ``TurnModel`` that plays ``turns`` in order and remembers the requests' sizes."""

    def __init__(self, turns: Iterable[ScriptedTurn], prices: Mapping | None = None):
        self.turns = list(turns)
        self.played = 0
        self.prices = prices
        self.request_sizes: list[int] = []  # characters of each request's JSON

    def reply(self, request: TurnRequest) -> TurnReply:
        size = len(json.dumps([request.system, request.tools, request.messages]))
        self.request_sizes.append(size)
        if self.played == len(self.turns):
            message = (f"the script has no turn left for phase '{request.phase}' attempt {request.attempt} "
                       f"(turn {request.turn})")
            return TurnReply((), None, 0, (), {"error": message, "kind": "cassette_exhausted"},
                             "cassette_exhausted", message)
        turn = self.turns[self.played]
        self.played += 1
        content = [{"type": "text", "text": turn.text}] if turn.text else []
        content += [{"type": "tool_use", "id": f"toolu_{request.attempt:02d}_{request.turn:03d}_{n}", "name": name,
                     "input": given} for n, (name, given) in enumerate(turn.calls)]
        output = turn.output_tokens if turn.output_tokens is not None else len(json.dumps(content)) // 4 + 1
        stop = turn.stop_reason or ("tool_use" if turn.calls else "end_turn")
        usage = Usage(input_tokens=size // 4, output_tokens=output)
        call = CallRecord(role="builder", model=request.model, max_tokens=request.max_tokens, usage=usage,
                          stop_reason=stop, latency_ms=0, request_id=f"req_scripted_{self.played}",
                          cost_usd=cost_usd(request.model, usage, self.prices), status="ok",
                          http_status=200, predicted_tokens=request.predicted_tokens)
        response = {"content": content, "stop_reason": stop,
                    "usage": {"input_tokens": usage.input_tokens, "output_tokens": output}}
        return TurnReply(tuple(content), stop, output, (call,), response)


class ScriptedBuilder(AgentBuilder):
    """The agent builder playing ``turns`` (``ScriptedTurn``s, or lists of (name, input) calls)."""

    def __init__(self, turns: Iterable[ScriptedTurn | list | tuple], *, model: str = SCRIPTED_MODEL,
                 prices: Mapping | None = None, **limits: Any):
        script = [turn if isinstance(turn, ScriptedTurn) else ScriptedTurn(tuple(turn)) for turn in turns]
        super().__init__(ScriptedTurns(script, prices), default_model=model, **limits)
