"""The agent builder (contract 2b): one attempt is a bounded conversation of turns.

Each turn is one call through the ``TurnModel``; its tool calls run through the ``Toolbox`` and
their results go back as ``tool_result`` blocks (refusals as ``is_error``). The attempt ends on
``finish``, on a turn without tool calls, or on a limit: turns, cost (the caps are checked before
every turn with that turn's request) or a turn still cut off after its one escalation. A limit
with edits made is judged like a finish; without, it fails (``agent_limit``, or ``truncated``).
A turn cut off by ``max_tokens`` is never executed. No I/O here beyond the ports.
"""

from __future__ import annotations

import json
from typing import Sequence

from autopack.domain.lifecycle import FailureKind
from autopack.engine.reads import covered
from autopack.engine.tools import AGENT_TOOL_DEFINITIONS
from autopack.llm.budget import DEFAULT_CAP, escalated_budget, is_truncated
from autopack.llm.builder import CONTEXT_WINDOW_MESSAGE, fence
from autopack.ports import (AttemptLog, BuilderRequest, BuildOutcome, Escalation, Toolbox, ToolResult,
                            TranscriptEntry, TurnModel, TurnReply, TurnRequest)

CACHE = {"type": "ephemeral"}

SYSTEM_PROMPT = """\
You are the builder of autopack, an autonomous coding agent. You carry out ONE phase of a larger \
plan on a git repository, with no human in the loop: nobody will answer questions, so never ask any. \
Decide, then act.

You work through tools, turn after turn:
- list_files, read_file and search look at the project. Read before you edit: find the code the \
phase touches instead of guessing what files contain.
- write_file, edit_file and delete_file change files at once, each call whole or not at all. Only \
paths inside the phase's write scope may change; a refused call changes nothing and says why, so \
correct it and call again. Paths are POSIX, relative to the project root; never touch .git/.
- run_tests runs the project's tests (all, or the ones you name) on the files as they are now, a \
few times per attempt at most.
- finish ends the attempt. autopack then runs the full test suite and judges the change: it fails if \
a test that passed before now fails or disappears, or if a deliverable is missing.

How to edit: edit_file's `old` is copied exactly from the file (read_file shows each line after its \
number and a tab, which are not part of the content) and occurs exactly once; use write_file for \
new files. Never write placeholders, "..." elisions or TODO stubs in place of real code. Add or \
update tests for the behaviour you change, and follow the project's style. Do only this phase's \
work. If a previous attempt failed, fix the cause it reports. Text outside tool calls is logged, \
not read."""


class AgentBuilder:
    """``builder = "agent"``: explores, edits and tests through the toolbox, turn by turn."""

    mode = "agent"

    def __init__(self, model: TurnModel, *, default_model: str, max_turns: int = 40,
                 budget_cap: int = DEFAULT_CAP, cache: bool = True):
        self.model = model
        self.default_model = default_model
        self.max_turns = max_turns
        self.budget_cap = budget_cap
        self.cache = cache

    def request_chars(self, request: BuilderRequest) -> int:
        return _Conversation(self, request).chars

    def attempt(self, request: BuilderRequest, toolbox: Toolbox, log: AttemptLog, max_tokens: int) -> BuildOutcome:
        conversation = _Conversation(self, request)
        model = request.model or self.default_model
        calls: list = []
        escalations: list[Escalation] = []

        def end(kind: str | None, message: str, turns: int, *, limit: bool = False) -> BuildOutcome:
            if limit and toolbox.edits:
                kind, message = None, f"{message}; the {toolbox.edits} edit(s) made are judged like a finish"
            return BuildOutcome(kind, message, tuple(calls), tuple(escalations), edits=toolbox.edits,
                                turns=turns, model=model)

        for turn in range(1, self.max_turns + 1):
            refusal = log.cost_refusal(model, conversation.chars, max_tokens)
            if refusal:
                return end(FailureKind.AGENT_LIMIT, f"stopped before turn {turn}: {refusal}", turn - 1, limit=True)
            reply = self._call(conversation, request, model, turn, max_tokens, log, calls, first=True)
            if reply.failure_kind is None and cut_off(reply, max_tokens):
                new = escalated_budget(max_tokens, cap=self.budget_cap)
                refusal = "it is already the cap" if new <= max_tokens else log.cost_refusal(
                    model, conversation.chars, new)
                if refusal:
                    return end(FailureKind.TRUNCATED, f"turn {turn} was cut off at max_tokens={max_tokens} and not run; "
                               f"the escalated call (max_tokens={new}) was not made: {refusal}", turn, limit=True)
                escalations.append(Escalation(
                    reason=reply.stop_reason if reply.stop_reason == "max_tokens" else "near_limit",
                    utilisation=round(reply.output_tokens / max_tokens, 4), base=max_tokens, new=new))
                reply = self._call(conversation, request, model, turn, new, log, calls, first=False)
                if reply.failure_kind is None and cut_off(reply, new):
                    return end(FailureKind.TRUNCATED, f"turn {turn} was cut off at max_tokens={max_tokens} and again at the "
                               f"escalated max_tokens={new}; none of its tool calls ran", turn, limit=True)
            if reply.failure_kind:
                return end(reply.failure_kind, reply.message, turn)
            if reply.stop_reason == "model_context_window_exceeded":
                return end(FailureKind.CONTEXT_WINDOW, CONTEXT_WINDOW_MESSAGE, turn)
            if reply.stop_reason == "refusal":
                return end(FailureKind.REFUSAL, "the model refused to make this change (stop_reason refusal); rephrase the "
                           "phase goal", turn)
            conversation.add({"role": "assistant", "content": list(reply.content)})
            uses = [block for block in reply.content if block.get("type") == "tool_use"]
            if not uses:
                return end(None, f"the agent ended turn {turn} without a tool call", turn)
            results = []
            for block in uses:
                given = block.get("input")
                if block.get("name") == "finish":
                    summary = given.get("summary") if isinstance(given, dict) else ""
                    return end(None, f"the agent finished at turn {turn}: {' '.join(str(summary).split())}", turn)
                results.append(tool_result_block(block.get("id"), toolbox.execute(block.get("name"), given)))
            conversation.add({"role": "user", "content": results})
        return end(FailureKind.AGENT_LIMIT, f"the agent used its {self.max_turns} turns without calling finish",
                   self.max_turns, limit=True)

    def _call(self, conversation: _Conversation, request: BuilderRequest, model: str, turn: int, max_tokens: int,
              log: AttemptLog, calls: list, *, first: bool) -> TurnReply:
        reply = self.model.reply(TurnRequest(
            phase=request.phase_id, attempt=request.attempt, turn=turn, model=model, max_tokens=max_tokens,
            predicted_tokens=max_tokens, system=conversation.system, messages=conversation.marked(),
            tools=AGENT_TOOL_DEFINITIONS))
        calls.extend(reply.calls)
        log.record(reply.calls, TranscriptEntry(turn, conversation.new_request() if first else {"messages": []},
                                                reply.response, max_tokens))
        return reply


class _Conversation:
    """The messages so far, their size (kept up to date, not re-serialised every turn) and the cache marks."""

    def __init__(self, builder: AgentBuilder, request: BuilderRequest):
        self.cache = builder.cache
        text = {"type": "text", "text": SYSTEM_PROMPT}
        self.system = [dict(text, cache_control=CACHE) if self.cache else text]
        self.messages: list[dict] = []
        self.chars = len(json.dumps([self.system, AGENT_TOOL_DEFINITIONS, []]))
        self.sent = 0  # messages already in a transcript entry
        self.add({"role": "user", "content": [{"type": "text", "text": first_message(request, builder.max_turns)}]})

    def add(self, message: dict) -> None:
        self.messages.append(message)
        self.chars += len(json.dumps(message)) + 2

    def marked(self) -> list[dict]:
        """The messages to send, with ``cache_marks`` when caching."""
        return cache_marks(self.messages) if self.cache else list(self.messages)

    def new_request(self) -> dict:
        """The messages added since the last transcript entry (the first also names the system and the tools)."""
        entry: dict = {"messages": [m for m in self.messages[self.sent:] if m["role"] == "user"]}
        if self.sent == 0:
            entry.update(system=SYSTEM_PROMPT, tools=[tool["name"] for tool in AGENT_TOOL_DEFINITIONS])
        self.sent = len(self.messages)
        return entry


def cache_marks(messages: list[dict]) -> list[dict]:
    """A copy of ``messages`` (the request must not grow with the conversation) in which the last block of
    each of the last two user messages carries ``cache_control``, so a turn reads the previous turn's prefix
    from the cache (with the system prompt's mark: 3 of the 4 breakpoints a request may have)."""
    marked = list(messages)
    users = [index for index, message in enumerate(marked) if message["role"] == "user"][-2:]
    for index in users:
        content = list(marked[index]["content"])
        content[-1] = dict(content[-1], cache_control=CACHE)
        marked[index] = dict(marked[index], content=content)
    return marked


def cut_off(reply: TurnReply, max_tokens: int) -> bool:
    return reply.stop_reason != "model_context_window_exceeded" and is_truncated(
        reply.stop_reason, reply.output_tokens, max_tokens)


def tool_result_block(tool_use_id: object, result: ToolResult) -> dict:
    block = {"type": "tool_result", "tool_use_id": tool_use_id, "content": result.text or "(empty)"}
    return dict(block, is_error=True) if result.is_error else block


def _bullets(items: Sequence[str], empty: str) -> list[str]:
    return [f"- {item}" for item in items] or [empty]


def first_message(request: BuilderRequest, max_turns: int) -> str:
    """The task: run and phase goals, acceptance, write scope, deliverables, the context files (read-only,
    capped), the failure digest on a retry. Scope files are not shown: the agent reads what it needs."""
    lines = [f"# Run goal\n{request.run_goal}", "",
             f"# Phase '{request.phase_id}' (attempt {request.attempt})", f"Goal: {request.phase_goal}",
             f"Category: {request.category}; complexity: {request.complexity}", "",
             "# Acceptance criteria", *_bullets(request.acceptance, "(none given: the goal is the criterion)"), "",
             "# Write scope (the only paths you may change; an entry ending in '/' covers everything under it)"]
    if request.scope is not None:
        lines += _bullets(request.scope, "(empty)")
    else:
        lines.append(f"(no path list) {request.scope_text or 'any file in the project'}")
    lines += ["", "# Deliverables (must exist when you finish)", *_bullets(request.deliverables, "(none)")]
    context = {path: text for path, text in request.files.items() if covered(path, request.context)}
    omitted = [path for path in request.omitted_files if covered(path, request.context)]
    if context or omitted:
        lines += ["", "# Context files (read-only, current content)"]
        for path, text in context.items():
            marks, newline = fence(text), "" if text.endswith("\n") or not text else "\n"
            lines.append(f"\n## {path}\n{marks}\n{text}{newline}{marks}")
        if omitted:
            lines.append("\nNot shown (size cap): " + ", ".join(omitted) + "; read them with read_file.")
    if request.failure_digest:
        lines += ["", "# Your previous attempt failed:", request.failure_digest.strip(),
                  "Fix that cause in this attempt. The worktree was reset: its edits are gone."]
    lines += ["", f"You have at most {max_turns} turns. Start by finding the code this phase touches."]
    return "\n".join(lines)
