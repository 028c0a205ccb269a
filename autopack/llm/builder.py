"""The single builder: one Messages API call per attempt whose ``tool_use`` blocks are the edits (contract 2).

``render_prompt`` builds the request (a stable, cached prefix — system prompt, run goal,
files — then the phase's variable part); ``ClaudeBuilder.build`` makes the call and turns
the answer into ``EditOp``s, or into a failure kind; ``ClaudeBuilder.attempt`` (the
``ports.Builder`` method) applies them through the toolbox, all or nothing.

A response that is (or may be) cut off by ``max_tokens`` is never parsed, so it can never
be applied: the builder records an ``Escalation`` and asks once more with the escalated
budget (``budget.escalated_budget``); cut off again, the attempt fails as ``truncated``.
Budgets above ``STREAMING_THRESHOLD`` are streamed.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from autopack.domain.lifecycle import FailureKind
from autopack.edit_tools import TOOL_DEFINITIONS, EditError, EditOp, parse_tool_uses
from autopack.llm.budget import DEFAULT_CAP, STREAMING_THRESHOLD, escalated_budget, is_truncated
from autopack.llm.cassette import Cassette
from autopack.llm.client import CallOutcome, CallRecord, ClientFactory, create_message
from autopack.ports import AttemptLog, BuilderRequest, BuildOutcome, Escalation, Toolbox, TranscriptEntry
from autopack.text import one_line

__all__ = ["BuilderRequest", "BuilderResult", "ClaudeBuilder", "Escalation", "render_prompt"]

ROLE = "builder"
_CACHE = {"type": "ephemeral"}
_CONTEXT_WINDOW = re.compile(r"prompt is too long|context (window|limit|length)|too many (input )?tokens", re.I)

SYSTEM_PROMPT = """\
You are the builder of autopack, an autonomous coding agent. You carry out ONE phase of a \
larger plan on a git repository, with no human in the loop: nobody will answer questions, \
so never ask any. Decide, then act.

How your work is applied:
- You change files ONLY by calling the tools write_file, edit_file and delete_file. Text \
you write outside tool calls is logged, never applied.
- Make ALL the edits for this phase in this one response. There is no second turn.
- The edits are applied all-or-nothing: one invalid edit rejects the whole set.
- Paths are POSIX paths relative to the project root (e.g. "src/app/main.py").
- Stay inside the phase scope; an edit outside it is rejected. Never touch .git/.

How to edit:
- New files, and files you rewrite substantially: write_file with the complete content.
- Small changes to an existing file: edit_file whose `old` is copied exactly from the file \
as shown (whitespace and indentation included) and occurs exactly once; include enough \
surrounding lines to make it unique.
- Never write placeholders, "..." elisions or TODO stubs in place of real code.

What counts as done:
- The phase goal and its acceptance criteria are met; do only this phase's work.
- Every listed deliverable exists afterwards.
- The project's existing tests keep passing: the phase fails if a test that passed before \
now fails, or if a test disappears. Add or update tests for the behaviour you change.
- Follow the project's existing style, layout and conventions.
- If a previous attempt failed, fix the cause it reports instead of repeating it."""


@dataclass(frozen=True)
class BuilderResult:
    """The edits to apply (None when nothing may be applied) or why there are none."""

    ops: tuple[EditOp, ...] | None
    failure_kind: FailureKind | None  # truncated, api_error, context_window, cassette_exhausted, refusal, malformed
    message: str  # one line: what happened
    text: str  # the model's prose (text blocks), for the log
    calls: tuple[CallRecord, ...]  # one per HTTP request, in order (SDK retries and the escalated call included)
    escalation: Escalation | None = None
    model: str | None = None  # the model the calls were made with
    responses: tuple[dict, ...] = ()  # each call's answer, for the transcript


# Asked before an escalated call with its max_tokens and what this attempt's calls cost so far:
# None to make the call, or why not (a cost cap).
EscalationCheck = Callable[[int, float], "str | None"]


class ClaudeBuilder:
    """The single builder (``builder = "single"``): one call per attempt whose whole answer is applied
    through the toolbox, all or nothing. Calls Claude through ``client_factory`` (live, recording or
    cassette replay)."""

    mode = "single"

    def __init__(self, client_factory: ClientFactory, *, model: str, max_tokens: int,
                 cassette: Cassette | None = None, clock: Callable[[], float] = time.monotonic,
                 budget_cap: int = DEFAULT_CAP, prices: Mapping | None = None):
        self.client_factory = client_factory
        self.prices = prices
        self.model = model
        self.max_tokens = max_tokens
        self.cassette = cassette
        self.clock = clock
        self.budget_cap = budget_cap

    def request_chars(self, request: BuilderRequest) -> int:
        """The size of the whole request: system prompt, tool definitions, files and phase."""
        return len(json.dumps([*render_prompt(request), TOOL_DEFINITIONS]))

    def attempt(self, request: BuilderRequest, toolbox: Toolbox, log: AttemptLog, max_tokens: int) -> BuildOutcome:
        """The one call (escalated once when cut off, if the cost caps allow it), then its whole answer
        applied through ``toolbox``, all or nothing: a rejected set fails the attempt as ``apply_error``."""
        model = request.model or self.model
        chars = self.request_chars(request)
        result = self.build(request, max_tokens,
                            may_escalate=lambda tokens, spent: log.cost_refusal(model, chars, tokens, spent))
        system, messages = render_prompt(request)
        first = {"system": system[0]["text"], "tools": [tool["name"] for tool in TOOL_DEFINITIONS],
                 "messages": messages}
        budgets = (max_tokens, result.escalation.new) if result.escalation else (max_tokens,)
        for number, (response, tokens) in enumerate(zip(result.responses, budgets)):
            log.record(result.calls if number == 0 else (),
                       TranscriptEntry(1, first if number == 0 else {"messages": []}, response, tokens))
        if not result.responses:
            log.record(result.calls, None)
        escalations = (result.escalation,) if result.escalation else ()
        outcome = BuildOutcome(result.failure_kind, result.message, result.calls, escalations, turns=1,
                               model=result.model)
        if result.failure_kind:
            return outcome
        try:
            toolbox.apply(result.ops)
        except EditError as problem:
            return replace(outcome, failure_kind=FailureKind.APPLY_ERROR, message=str(problem),
                           evidence="\n".join(problem.reasons))
        return replace(outcome, edits=len(result.ops))

    def build(self, request: BuilderRequest, budget: int | None = None,
              may_escalate: EscalationCheck | None = None) -> BuilderResult:
        """One call at ``budget`` (default: ``max_tokens``), and one escalated call if it was cut off
        and ``may_escalate`` allows it (else the attempt is ``truncated``).

        ``budget`` is also recorded as each call's ``predicted_tokens``. The escalated call uses
        the same (builder, phase, attempt) key, so in a cassette it is that key's next line.
        """
        responses: list[dict] = []
        result = self._build(request, budget, may_escalate, responses)
        return replace(result, responses=tuple(responses))

    def _build(self, request: BuilderRequest, budget: int | None, may_escalate: EscalationCheck | None,
               responses: list[dict]) -> BuilderResult:
        model = request.model or self.model
        base = budget or self.max_tokens
        system, messages = render_prompt(request)
        first = self._call(request, model, base, budget, system, messages, responses)
        if first is None:
            return self._no_line(request, model, (), None)
        if first.message is None:
            return _failed(first, first.calls, model, None, request)
        calls, message = first.calls, first.message
        if message.stop_reason == "model_context_window_exceeded":
            return BuilderResult(None, FailureKind.CONTEXT_WINDOW, CONTEXT_WINDOW_MESSAGE, _text(message), calls, None, model)
        output = message.usage.output_tokens or 0
        if not is_truncated(message.stop_reason, output, base):
            return _interpret(message, calls, model, None)
        new = escalated_budget(base, cap=self.budget_cap)
        if new <= base:
            return BuilderResult(None, FailureKind.TRUNCATED, f"response cut off at max_tokens={base}, which is "
                                 f"already the cap ({self.budget_cap}); its edits were not applied", _text(message),
                                 calls, None, model)
        refusal = may_escalate(new, sum(call.cost_usd or 0.0 for call in calls)) if may_escalate else None
        if refusal:
            return BuilderResult(None, FailureKind.TRUNCATED, f"response cut off at max_tokens={base}; the escalated "
                                 f"call (max_tokens={new}) was not made: {refusal}; its edits were not applied",
                                 _text(message), calls, None, model)
        reason = message.stop_reason if message.stop_reason == "max_tokens" else "near_limit"
        escalation = Escalation(reason=reason, utilisation=round(output / base, 4), base=base, new=new)
        second = self._call(request, model, new, budget, system, messages, responses)
        if second is None:
            return self._no_line(request, model, calls, escalation)
        calls += second.calls
        if second.message is None:
            return _failed(second, calls, model, escalation, request)
        retried = second.message
        if retried.stop_reason == "model_context_window_exceeded":
            return BuilderResult(None, FailureKind.CONTEXT_WINDOW, CONTEXT_WINDOW_MESSAGE, _text(retried), calls,
                                 escalation, model)
        if is_truncated(retried.stop_reason, retried.usage.output_tokens or 0, new):
            return BuilderResult(None, FailureKind.TRUNCATED, f"response cut off at max_tokens={base} and again at "
                                 f"the escalated max_tokens={new}; its edits were not applied", _text(retried), calls,
                                 escalation, model)
        return _interpret(retried, calls, model, escalation)

    def _call(self, request: BuilderRequest, model: str, max_tokens: int, predicted: int | None,
              system: list[dict], messages: list[dict], responses: list[dict]) -> CallOutcome | None:
        """One call at ``max_tokens`` (streamed above the threshold); None when the cassette has no line for it."""
        from autopack.llm.turns import response_dict

        phase, attempt = request.phase_id, request.attempt
        if self.cassette is not None and not self.cassette.has_next(ROLE, phase, attempt):
            return None
        outcome = create_message(
            self.client_factory(ROLE, phase, attempt), role=ROLE, model=model, max_tokens=max_tokens,
            stream=max_tokens > STREAMING_THRESHOLD, clock=self.clock, predicted_tokens=predicted,
            prices=self.prices,
            system=system, messages=messages, tools=TOOL_DEFINITIONS,
        )
        responses.append(response_dict(outcome.message) if outcome.message is not None
                         else {"error": outcome.error, "http_status": outcome.http_status})
        return outcome

    def _no_line(self, request: BuilderRequest, model: str, calls: tuple[CallRecord, ...],
                 escalation: Escalation | None) -> BuilderResult:
        which = "escalated builder response" if escalation else "builder response"
        message = f"cassette has no {which} for phase '{request.phase_id}' attempt {request.attempt}"
        return BuilderResult(None, FailureKind.CASSETTE_EXHAUSTED, message, "", calls, escalation, model)


CONTEXT_WINDOW_MESSAGE = ("the prompt and answer do not fit the model's context window; narrow the phase "
                           "(fewer scope/context files) or split it")


def _failed(outcome: CallOutcome, calls: tuple[CallRecord, ...], model: str, escalation: Escalation | None,
            request: BuilderRequest) -> BuilderResult:
    """The result of a call that returned no message."""
    kind, message = call_failure(outcome, request.phase_id, request.attempt)
    return BuilderResult(None, kind, message, "", calls, escalation, model)


def call_failure(outcome: CallOutcome, phase: str, attempt: int) -> tuple[str, str]:
    """(failure kind, one-line message) of a builder call that returned no message."""
    if outcome.cassette_exhausted:
        return FailureKind.CASSETTE_EXHAUSTED, (f"cassette ran out of builder responses for phase '{phase}' attempt "
                                      f"{attempt} while the API client retried")
    error = outcome.error or "unknown error"
    if outcome.malformed:
        return FailureKind.MALFORMED, f"{error}; nothing was applied"
    if outcome.http_status == 400 and _CONTEXT_WINDOW.search(error):
        return FailureKind.CONTEXT_WINDOW, f"{CONTEXT_WINDOW_MESSAGE} ({error})"
    return FailureKind.API_ERROR, one_line(f"API error: {error}")


def _text(message) -> str:
    return "\n\n".join(block.text for block in message.content if block.type == "text")


def _interpret(message, calls: tuple[CallRecord, ...], model: str, escalation: Escalation | None) -> BuilderResult:
    text = _text(message)
    if message.stop_reason == "refusal":
        return BuilderResult(None, FailureKind.REFUSAL, "the model refused to make this change (stop_reason refusal); "
                             "rephrase the phase goal", text, calls, escalation, model)
    blocks = [{"name": block.name, "input": block.input} for block in message.content if block.type == "tool_use"]
    try:
        ops = tuple(parse_tool_uses(blocks))
    except EditError as problem:
        return BuilderResult(None, FailureKind.MALFORMED, one_line(f"malformed edits: {problem}"), text, calls,
                             escalation, model)
    return BuilderResult(ops, None, _summary(ops), text, calls, escalation, model)


def _summary(ops: tuple[EditOp, ...]) -> str:
    if not ops:
        return "builder made no edits"
    shown = ", ".join(f"{op.tool} {op.path}" for op in ops[:5])
    more = f", and {len(ops) - 5} more" if len(ops) > 5 else ""
    return f"builder proposed {len(ops)} edit{'s' if len(ops) != 1 else ''}: {shown}{more}"


def render_prompt(request: BuilderRequest) -> tuple[list[dict], list[dict]]:
    """(system blocks, messages): system prompt and files are the cached prefix, the phase part follows."""
    system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": _CACHE}]
    content = [
        {"type": "text", "text": _project_part(request), "cache_control": _CACHE},
        {"type": "text", "text": _phase_part(request)},
    ]
    return system, [{"role": "user", "content": content}]


def fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _project_part(request: BuilderRequest) -> str:
    lines = [f"# Run goal\n{request.run_goal}", "", "# Files (current content)"]
    if not request.files:
        lines.append("(no existing files in scope or context)")
    for path, content in request.files.items():
        marks = fence(content)
        newline = "" if content.endswith("\n") or not content else "\n"
        lines.append(f"\n## {path}\n{marks}\n{content}{newline}{marks}")
    if request.omitted_files:
        lines.append("\n# Files not shown (size cap); they exist, do not rewrite them blindly")
        lines.extend(f"- {path}" for path in request.omitted_files)
    return "\n".join(lines)


def _bullets(items: Sequence[str], empty: str) -> list[str]:
    return [f"- {item}" for item in items] or [empty]


def _phase_part(request: BuilderRequest) -> str:
    lines = [
        f"# Phase '{request.phase_id}' (attempt {request.attempt})",
        f"Goal: {request.phase_goal}",
        f"Category: {request.category}; complexity: {request.complexity}",
        "",
        "# Acceptance criteria",
        *_bullets(request.acceptance, "(none given: the goal is the criterion)"),
        "",
        "# Scope (the only paths you may change; an entry ending in '/' covers everything under it)",
    ]
    if request.scope is not None:
        lines += _bullets(request.scope, "(empty)")
    else:
        lines.append(f"(no path list) {request.scope_text or 'any file in the project'}")
    lines += ["", "# Deliverables (must exist when you are done)", *_bullets(request.deliverables, "(none)")]
    if request.failure_digest:
        lines += ["", "# Your previous attempt failed:", request.failure_digest.strip(),
                  "Fix that cause in this attempt; the files above are the state to edit."]
    lines += ["", "Make all the edits for this phase now, with the tools."]
    return "\n".join(lines)
