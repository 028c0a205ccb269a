"""The builder: one Messages API call per attempt whose ``tool_use`` blocks are the edits (contract 2).

``render_prompt`` builds the request (a stable, cached prefix — system prompt, run goal,
files — then the phase's variable part); ``ClaudeBuilder.build`` makes the call and turns
the answer into ``EditOp``s, or into a failure kind the runner records.

A response that is (or may be) cut off by ``max_tokens`` is never parsed, so it can never
be applied: the builder records an ``Escalation`` and asks once more with the escalated
budget (``budget.escalated_budget``); cut off again, the attempt fails as ``truncated``.
Budgets above ``STREAMING_THRESHOLD`` are streamed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from autopack.domain.lifecycle import FailureKind
from autopack.edits import TOOL_DEFINITIONS, EditError, EditOp, parse_tool_uses
from autopack.llm.budget import DEFAULT_CAP, STREAMING_THRESHOLD, escalated_budget, is_truncated
from autopack.llm.cassette import Cassette
from autopack.llm.client import CallOutcome, CallRecord, ClientFactory, create_message

ROLE = "builder"
_CACHE = {"type": "ephemeral"}
_SKIPPED_DIRS = frozenset({".git", ".autopack", "__pycache__", ".pytest_cache", ".mypy_cache",
                           ".ruff_cache", ".venv", "node_modules"})
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
class BuilderRequest:
    """Everything the builder is shown for one attempt of one phase."""

    run_goal: str
    phase_id: str
    phase_goal: str
    category: str
    complexity: str
    acceptance: tuple[str, ...]
    scope: tuple[str, ...] | None
    scope_text: str | None
    deliverables: tuple[str, ...]
    files: dict[str, str]  # path -> content (scope + context), already capped
    omitted_files: tuple[str, ...]  # paths left out because of the cap
    attempt: int
    failure_digest: str | None = None  # previous attempt's failure, on a retry
    model: str | None = None  # overrides the builder's model (the runner's model ladder)


@dataclass(frozen=True)
class Escalation:
    """A truncated response and the one retry it earned."""

    reason: str  # the stop_reason ("max_tokens"), or "near_limit" when ≥ 95 % of the budget was used
    utilisation: float  # output tokens / budget of the truncated response
    base: int  # the budget that was cut off
    new: int  # the escalated budget of the retry


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


# Asked before an escalated call with its max_tokens and what this attempt's calls cost so far:
# None to make the call, or why not (a cost cap).
EscalationCheck = Callable[[int, float], "str | None"]


class Builder(Protocol):
    def build(self, request: BuilderRequest, budget: int | None = None,
              may_escalate: EscalationCheck | None = None) -> BuilderResult: ...


class ClaudeBuilder:
    """Builds with a Claude model through ``client_factory`` (live, recording or cassette replay)."""

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

    def build(self, request: BuilderRequest, budget: int | None = None,
              may_escalate: EscalationCheck | None = None) -> BuilderResult:
        """One attempt: a call at ``budget`` (default: ``max_tokens``), and one escalated call if it was cut off
        and ``may_escalate`` allows it (else the attempt is ``truncated``).

        ``budget`` is also recorded as each call's ``predicted_tokens``. The escalated call uses
        the same (builder, phase, attempt) key, so in a cassette it is that key's next line.
        """
        model = request.model or self.model
        base = budget or self.max_tokens
        system, messages = render_prompt(request)
        first = self._call(request, model, base, budget, system, messages)
        if first is None:
            return self._no_line(request, model, (), None)
        if first.message is None:
            return _failed(first, first.calls, model, None, request)
        calls, message = first.calls, first.message
        if message.stop_reason == "model_context_window_exceeded":
            return BuilderResult(None, FailureKind.CONTEXT_WINDOW, _CONTEXT_WINDOW_MESSAGE, _text(message), calls,
                                 None, model)
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
        second = self._call(request, model, new, budget, system, messages)
        if second is None:
            return self._no_line(request, model, calls, escalation)
        calls += second.calls
        if second.message is None:
            return _failed(second, calls, model, escalation, request)
        retried = second.message
        if retried.stop_reason == "model_context_window_exceeded":
            return BuilderResult(None, FailureKind.CONTEXT_WINDOW, _CONTEXT_WINDOW_MESSAGE, _text(retried), calls,
                                 escalation, model)
        if is_truncated(retried.stop_reason, retried.usage.output_tokens or 0, new):
            return BuilderResult(None, FailureKind.TRUNCATED, f"response cut off at max_tokens={base} and again at "
                                 f"the escalated max_tokens={new}; its edits were not applied", _text(retried), calls,
                                 escalation, model)
        return _interpret(retried, calls, model, escalation)

    def _call(self, request: BuilderRequest, model: str, max_tokens: int, predicted: int | None,
              system: list[dict], messages: list[dict]) -> CallOutcome | None:
        """One call at ``max_tokens`` (streamed above the threshold); None when the cassette has no line for it."""
        phase, attempt = request.phase_id, request.attempt
        if self.cassette is not None and not self.cassette.has_next(ROLE, phase, attempt):
            return None
        return create_message(
            self.client_factory(ROLE, phase, attempt), role=ROLE, model=model, max_tokens=max_tokens,
            stream=max_tokens > STREAMING_THRESHOLD, clock=self.clock, predicted_tokens=predicted,
            prices=self.prices,
            system=system, messages=messages, tools=TOOL_DEFINITIONS,
        )

    def _no_line(self, request: BuilderRequest, model: str, calls: tuple[CallRecord, ...],
                 escalation: Escalation | None) -> BuilderResult:
        which = "escalated builder response" if escalation else "builder response"
        message = f"cassette has no {which} for phase '{request.phase_id}' attempt {request.attempt}"
        return BuilderResult(None, FailureKind.CASSETTE_EXHAUSTED, message, "", calls, escalation, model)


_CONTEXT_WINDOW_MESSAGE = ("the prompt and answer do not fit the model's context window; narrow the phase "
                           "(fewer scope/context files) or split it")


def _failed(outcome: CallOutcome, calls: tuple[CallRecord, ...], model: str, escalation: Escalation | None,
            request: BuilderRequest) -> BuilderResult:
    """The result of a call that returned no message."""
    if outcome.cassette_exhausted:
        message = (f"cassette ran out of builder responses for phase '{request.phase_id}' attempt "
                   f"{request.attempt} while the API client retried")
        return BuilderResult(None, FailureKind.CASSETTE_EXHAUSTED, message, "", calls, escalation, model)
    error = outcome.error or "unknown error"
    if outcome.malformed:
        return BuilderResult(None, FailureKind.MALFORMED, f"{error}; nothing was applied", "", calls, escalation,
                             model)
    if outcome.http_status == 400 and _CONTEXT_WINDOW.search(error):
        return BuilderResult(None, FailureKind.CONTEXT_WINDOW, f"{_CONTEXT_WINDOW_MESSAGE} ({error})", "", calls,
                             escalation, model)
    return BuilderResult(None, FailureKind.API_ERROR, _one_line(f"API error: {error}"), "", calls, escalation, model)


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
        return BuilderResult(None, FailureKind.MALFORMED, _one_line(f"malformed edits: {problem}"), text, calls,
                             escalation, model)
    return BuilderResult(ops, None, _summary(ops), text, calls, escalation, model)


def _summary(ops: tuple[EditOp, ...]) -> str:
    if not ops:
        return "builder made no edits"
    shown = ", ".join(f"{op.tool} {op.path}" for op in ops[:5])
    more = f", and {len(ops) - 5} more" if len(ops) > 5 else ""
    return f"builder proposed {len(ops)} edit{'s' if len(ops) != 1 else ''}: {shown}{more}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_prompt(request: BuilderRequest) -> tuple[list[dict], list[dict]]:
    """(system blocks, messages): system prompt and files are the cached prefix, the phase part follows."""
    system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": _CACHE}]
    content = [
        {"type": "text", "text": _project_part(request), "cache_control": _CACHE},
        {"type": "text", "text": _phase_part(request)},
    ]
    return system, [{"role": "user", "content": content}]


def _fence(text: str) -> str:
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
        fence = _fence(content)
        newline = "" if content.endswith("\n") or not content else "\n"
        lines.append(f"\n## {path}\n{fence}\n{content}{newline}{fence}")
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


def collect_files(root: Path, scope: Sequence[str] | None, context: Sequence[str], *,
                  max_bytes: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """Existing UTF-8 text files named by scope (files and dir/ entries) and context, in path order.

    Each file is included while it fits in what is left of ``max_bytes``; the ones that do not
    fit are returned as omitted. Missing paths, binary files, symlinks leaving ``root``, and
    .git/.autopack/cache directories are skipped.
    """
    root = Path(root).resolve()
    candidates: set[str] = set()
    for entry in [*(scope or ()), *context]:
        candidates.update(_expand(root, entry))
    files: dict[str, str] = {}
    omitted: list[str] = []
    budget = max_bytes
    for path in sorted(candidates):
        try:
            data = (root / path).read_bytes()
        except OSError:
            continue
        text = _as_text(data)
        if text is None:
            continue
        if len(data) > budget:
            omitted.append(path)
            continue
        files[path] = text
        budget -= len(data)
    return files, tuple(omitted)


def _expand(root: Path, entry: str) -> list[str]:
    """The readable regular files an entry names, as root-relative POSIX paths."""
    parts = [part for part in entry.split("/") if part not in ("", ".")]
    if ".." in parts or any(part in _SKIPPED_DIRS for part in parts):
        return []
    target = root.joinpath(*parts)
    if target.is_file():
        relative = _relative(root, target)
        return [relative] if relative else []
    if not target.is_dir():
        return []
    found = []
    for directory, subdirs, names in os.walk(target):
        subdirs[:] = [name for name in subdirs if name not in _SKIPPED_DIRS]
        for name in names:
            path = Path(directory, name)
            relative = _relative(root, path) if path.is_file() else None
            if relative:
                found.append(relative)
    return found


def _relative(root: Path, path: Path) -> str | None:
    """The POSIX path of ``path`` under ``root``, or None when it resolves outside (a symlink out)."""
    if not path.resolve().is_relative_to(root):
        return None
    return path.relative_to(root).as_posix()


def _as_text(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
