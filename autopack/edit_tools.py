"""The builder's edit tools (contract 2): their definitions, and the shape check of each call.

``parse_tool_uses`` turns the model's ``tool_use`` blocks (hostile input) into ``EditOp``s or
one ``EditError`` listing every malformed block; ``autopack.edits`` then checks paths and
scope and applies them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from autopack.errors import UsageError
from autopack.text import head_tail, shown

TOOL_NAMES = ("write_file", "edit_file", "delete_file")

_FIELDS: dict[str, tuple[str, ...]] = {
    "write_file": ("path", "content"),
    "edit_file": ("path", "old", "new"),
    "delete_file": ("path",),
}

_PATH_DESCRIPTION = (
    "POSIX path relative to the project root, e.g. 'src/app/main.py'. "
    "No leading '/', no '..', no backslashes; must be inside the phase scope."
)
_ALL_OR_NOTHING = (
    " All edits in one answer are applied together, in order, or not at all:"
    " one invalid edit rejects the whole set."
)


def _tool(name: str, description: str, applied: str, **fields: str) -> dict:
    properties = {field: {"type": "string", "description": text} for field, text in fields.items()}
    return {
        "name": name,
        "description": description + applied,
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        },
    }


def edit_tool_definitions(applied: str = _ALL_OR_NOTHING) -> list[dict]:
    """The definitions of the three edit tools; ``applied`` ends each description, saying how calls are applied."""
    return [
        _tool(
            "write_file",
            "Create a file, or replace the whole content of an existing one. Parent directories "
            "are created as needed. Prefer edit_file for a local change to a large existing file.",
            applied,
            path=_PATH_DESCRIPTION,
            content="The complete new content of the file, written exactly as given (UTF-8).",
        ),
        _tool(
            "edit_file",
            "Replace one piece of text in an existing file. `old` must match the file's current "
            "content exactly (whitespace and indentation included) and exactly once: include enough "
            "surrounding lines to make it unique. A later edit of the same file sees the result of "
            "earlier ones.",
            applied,
            path=_PATH_DESCRIPTION,
            old="Exact text to replace; must occur exactly once.",
            new="Replacement text (may be empty to remove `old`).",
        ),
        _tool("delete_file", "Delete an existing file.", applied, path=_PATH_DESCRIPTION),
    ]


TOOL_DEFINITIONS: list[dict] = edit_tool_definitions()



@dataclass(frozen=True)
class EditOp:
    """One validated-shape tool call; paths are checked by ``apply_edits``."""

    tool: str
    path: str
    content: str | None = None
    old: str | None = None
    new: str | None = None


@dataclass(frozen=True)
class ApplyStats:
    """What an applied edit set did; ``files_touched`` lists files whose content changed."""

    operations_parsed: int
    operations_applied: int
    files_touched: tuple[str, ...]
    bytes_written: int

    def to_dict(self) -> dict:
        return {**asdict(self), "files_touched": list(self.files_touched)}


class EditError(UsageError):
    """The builder's edits were rejected or could not be written; nothing was applied."""

    SHOWN = 10  # reasons in the message; all of them stay in ``reasons``

    def __init__(self, reasons: Sequence[str]):
        self.reasons = tuple(reasons)
        listed = [head_tail(reason, 300) for reason in self.reasons[: self.SHOWN]]
        more = len(self.reasons) - len(listed)
        super().__init__("; ".join(listed) + (f"; and {more} more problem{'s' * (more != 1)}" if more else ""))


class Rejected(Exception):
    """One operation's problem, before it is prefixed with the operation's label."""


def edit_label(index: int, tool: object, path: object = None) -> str:
    name = tool if isinstance(tool, str) and tool.isprintable() else repr(tool)
    if not isinstance(path, str):
        return f"edit {index} ({name})"
    return f"edit {index} ({name} {shown(path, quote=not (path and path.isprintable()), limit=80)})"


def parse_tool_uses(blocks: list[dict]) -> list[EditOp]:
    """Turn ``[{"name": ..., "input": {...}}, ...]`` into EditOps; raise EditError listing every bad block."""
    ops: list[EditOp] = []
    reasons: list[str] = []
    for index, block in enumerate(blocks, 1):
        if not isinstance(block, dict):
            reasons.append(f"edit {index}: expected a tool_use block, got {type(block).__name__}")
            continue
        name, arguments = block.get("name"), block.get("input")
        path = arguments.get("path") if isinstance(arguments, dict) else None
        try:
            ops.append(_op_from_input(name, arguments))
        except Rejected as problem:
            reasons.append(f"{edit_label(index, name, path)}: {problem}")
    if reasons:
        raise EditError(reasons)
    return ops


def _op_from_input(name: object, arguments: object) -> EditOp:
    if name not in _FIELDS:
        raise Rejected(f"unknown tool; the tools are {', '.join(TOOL_NAMES)}")
    if not isinstance(arguments, dict):
        raise Rejected(f"input must be an object, got {type(arguments).__name__}")
    expected = _FIELDS[name]
    problems = [f"missing field '{field}'" for field in expected if field not in arguments]
    problems += [f"unexpected field {shown(key)}" for key in arguments if key not in expected]
    problems += [
        f"field '{field}' must be a string, got {type(arguments[field]).__name__}"
        for field in expected
        if field in arguments and not isinstance(arguments[field], str)
    ]
    if problems:
        raise Rejected(", ".join(problems))
    return EditOp(tool=name, **arguments)


def check_op_fields(op: EditOp) -> None:
    """Re-check an EditOp's shape (ops may be built without parse_tool_uses)."""
    fields = ("path", "content", "old", "new")
    _op_from_input(op.tool, {field: getattr(op, field) for field in fields if getattr(op, field) is not None})
