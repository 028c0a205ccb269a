"""The builder: one Messages API call per attempt whose ``tool_use`` blocks are the edits (contract 2).

``render_prompt`` builds the request (a stable, cached prefix — system prompt, run goal,
files — then the phase's variable part); ``ClaudeBuilder.build`` makes the call and turns
the answer into ``EditOp``s, or into a failure kind the runner records. A response cut off
by ``max_tokens`` is never parsed, so it can never be applied.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from autopack.edits import TOOL_DEFINITIONS, EditError, EditOp, parse_tool_uses
from autopack.llm.cassette import Cassette
from autopack.llm.client import CallRecord, ClientFactory, create_message

ROLE = "builder"
_CACHE = {"type": "ephemeral"}
_SKIPPED_DIRS = frozenset({".git", ".autopack", "__pycache__", ".pytest_cache", ".mypy_cache",
                           ".ruff_cache", ".venv", "node_modules"})
_TRUNCATING_STOPS = ("max_tokens", "model_context_window_exceeded")

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


@dataclass(frozen=True)
class BuilderResult:
    """The edits to apply (None when nothing may be applied) or why there are none."""

    ops: tuple[EditOp, ...] | None
    failure_kind: str | None  # None | "truncated" | "api_error" | "cassette_exhausted" | "refusal" | "malformed"
    message: str  # one line: what happened
    text: str  # the model's prose (text blocks), for the log
    calls: tuple[CallRecord, ...]


class Builder(Protocol):
    def build(self, request: BuilderRequest) -> BuilderResult: ...


class ClaudeBuilder:
    """Builds with a Claude model through ``client_factory`` (live or cassette replay)."""

    def __init__(self, client_factory: ClientFactory, *, model: str, max_tokens: int,
                 cassette: Cassette | None = None, clock: Callable[[], float] = time.monotonic):
        self.client_factory = client_factory
        self.model = model
        self.max_tokens = max_tokens
        self.cassette = cassette
        self.clock = clock

    def build(self, request: BuilderRequest) -> BuilderResult:
        phase, attempt = request.phase_id, request.attempt
        if self.cassette is not None and not self.cassette.has_next(ROLE, phase, attempt):
            return BuilderResult(
                ops=None, failure_kind="cassette_exhausted",
                message=f"cassette has no builder response for phase '{phase}' attempt {attempt}",
                text="", calls=(),
            )
        system, messages = render_prompt(request)
        outcome = create_message(
            self.client_factory(ROLE, phase, attempt), role=ROLE, model=self.model,
            max_tokens=self.max_tokens, clock=self.clock,
            system=system, messages=messages, tools=TOOL_DEFINITIONS,
        )
        calls = (outcome.record,)
        if outcome.message is None:
            if outcome.cassette_exhausted:
                message = (f"cassette ran out of builder responses for phase '{phase}' attempt {attempt} "
                           f"while the API client retried")
                return BuilderResult(None, "cassette_exhausted", message, "", calls)
            return BuilderResult(None, "api_error", _one_line(f"API error: {outcome.record.error}"), "", calls)
        return _interpret(outcome.message, self.max_tokens, calls)


def _interpret(message, max_tokens: int, calls: tuple[CallRecord, ...]) -> BuilderResult:
    text = "\n\n".join(block.text for block in message.content if block.type == "text")
    if message.stop_reason in _TRUNCATING_STOPS:
        return BuilderResult(
            None, "truncated",
            f"response cut off ({message.stop_reason}, max_tokens={max_tokens}); its edits were not applied",
            text, calls,
        )
    if message.stop_reason == "refusal":
        return BuilderResult(None, "refusal", "the model refused to make this change", text, calls)
    blocks = [{"name": block.name, "input": block.input} for block in message.content if block.type == "tool_use"]
    try:
        ops = tuple(parse_tool_uses(blocks))
    except EditError as problem:
        return BuilderResult(None, "malformed", _one_line(f"malformed edits: {problem}"), text, calls)
    return BuilderResult(ops, None, _summary(ops), text, calls)


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
