"""The agent builder's tools on one attempt's worktree (contract 2b), and the single builder's apply.

Each call is one unit: an edit goes through ``edits.apply_edits`` with every check of contract
2 (scope, protected paths, symlinks) and is applied whole or not at all. A refused or failed
call comes back as an error result that the model can correct, never as a failed attempt.
Every result is redacted and capped at ``ToolLimits.result_max_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from autopack.edits import (ApplyStats, EditError, EditOp, apply_edits, check_path, edit_tool_definitions,
                            parse_tool_uses)
from autopack.engine.reads import PROTECTED_PATHS, ProjectReader, ReadLimits, Refused
from autopack.ports import ToolResult
from autopack.text import head_tail

TRACE_MAX_CHARS = 800  # of each failing test's message in a run_tests result
FAILURES_SHOWN = 20
OUTPUT_TAIL_CHARS = 3000  # of the test output, shown when the run produced no per-test outcomes
MAX_SELECTED_TESTS = 100
EDIT_TOOLS = ("write_file", "edit_file", "delete_file")

_PATH = {"type": "string", "description": "POSIX path relative to the project root, e.g. 'src/app/main.py'."}


def _tool(name: str, description: str, properties: dict, required: Sequence[str] = ()) -> dict:
    return {"name": name, "description": description,
            "input_schema": {"type": "object", "properties": properties, "required": list(required),
                             "additionalProperties": False}}


AGENT_TOOL_DEFINITIONS: list[dict] = [
    _tool("list_files", "List the project's files (tracked ones, and new ones git does not ignore) with their "
          "sizes, in path order. Capped: narrow it with path or glob.",
          {"path": {"type": "string", "description": "Only files under this directory (or this file)."},
           "glob": {"type": "string", "description": "fnmatch pattern matched against the path and the file "
                    "name, e.g. '*.py' or 'tests/test_*.py'; '*' also matches '/'."}}),
    _tool("read_file", "Read a file's lines, numbered: each line is shown after its number and a tab, which "
          "are not part of the content. Capped: read on with start_line.",
          {"path": _PATH, "start_line": {"type": "integer", "minimum": 1},
           "end_line": {"type": "integer", "minimum": 1}}, ["path"]),
    _tool("search", "Search the project's text files line by line for a Python regular expression (an invalid "
          "one is searched as literal text). Returns path:line: text, in path order, capped.",
          {"pattern": {"type": "string"},
           "path": {"type": "string", "description": "Only files under this directory (or this file)."},
           "glob": {"type": "string", "description": "fnmatch pattern matched against the path and the file "
                    "name, e.g. '*.py'."}}, ["pattern"]),
    *edit_tool_definitions(" Each call is applied at once, whole or not at all: a rejected call changes "
                           "nothing and its result says why."),
    _tool("run_tests", "Run the project's test command on the current files, or only the named tests (pytest "
          "node ids such as 'tests/test_x.py::test_y'). Returns the counts and the failing tests. A few runs per "
          "attempt at most; after finish the gate runs the full suite anyway.",
          {"tests": {"type": "array", "items": {"type": "string"}}}),
    _tool("finish", "End the attempt when the phase is done: autopack then runs the full test suite and judges "
          "the change. Tool calls after finish in the same turn are not run.",
          {"summary": {"type": "string", "description": "What you changed and why, in a few sentences."}},
          ["summary"]),
]
_FIELDS = {tool["name"]: tuple(tool["input_schema"]["properties"]) for tool in AGENT_TOOL_DEFINITIONS}


@dataclass(frozen=True)
class ToolLimits:
    """Caps of the tools' results and of the attempt's test runs (settings, `run.limits` overrides)."""

    reads: ReadLimits = field(default_factory=ReadLimits)
    result_max_bytes: int = 30_000
    max_test_runs: int = 5

    @classmethod
    def from_settings(cls, settings: Any, plan_limits: Mapping[str, Any]) -> ToolLimits:
        reads = ReadLimits(read_max_lines=settings.agent_read_max_lines, read_max_bytes=settings.agent_read_max_bytes,
                           list_max_entries=settings.agent_list_max_entries,
                           search_max_matches=settings.agent_search_max_matches)
        runs = plan_limits.get("agent_max_test_runs", settings.agent_max_test_runs)  # 0 is a limit too
        return cls(reads, settings.agent_result_max_bytes, int(runs))


class AttemptTools:
    """The toolbox of one attempt: reads through ``reader``, edits inside ``scope``, ``run_tests`` capped.

    ``run_tests(select)`` runs the suite (the runner's sandboxed run, recorded as kind ``agent``)
    and returns its TestReport; ``selectable`` says whether tests can be named (pytest).
    """

    def __init__(self, reader: ProjectReader, scope: Sequence[str] | None, *,
                 run_tests: Callable[[tuple[str, ...]], Any], selectable: bool, limits: ToolLimits,
                 redact: Callable[[str], str] = str):
        self.reader = reader
        self.scope = scope
        self.run_tests = run_tests
        self.selectable = selectable
        self.limits = limits
        self.redact = redact
        self.edits = 0
        self.test_runs = 0
        self._parsed = self._applied = self._bytes = 0
        self._touched: dict[str, None] = {}

    def apply(self, ops: Sequence[EditOp]) -> ApplyStats:
        """Apply a whole set of edits, all or nothing (EditError lists every problem)."""
        stats = apply_edits(self.reader.root, list(ops), self.scope, PROTECTED_PATHS)
        self.reader.changed()
        self.edits += len(ops)
        self._parsed += stats.operations_parsed
        self._applied += stats.operations_applied
        self._bytes += stats.bytes_written
        self._touched.update(dict.fromkeys(stats.files_touched))
        return stats

    def apply_stats(self) -> dict:
        """What the attempt's edits did, summed over its calls (``ApplyStats.to_dict`` for one call)."""
        return {"operations_parsed": self._parsed, "operations_applied": self._applied,
                "files_touched": list(self._touched), "bytes_written": self._bytes}

    def execute(self, name: str, arguments: Any) -> ToolResult:
        try:
            text, is_error = self._dispatch(name, arguments), False
        except Refused as problem:
            text, is_error = str(problem), True
        return ToolResult(self._cap(self.redact(text)), is_error)

    def _dispatch(self, name: str, arguments: Any) -> str:
        if name not in _FIELDS or name == "finish":
            raise Refused(f"unknown tool {name!r}; the tools are {', '.join(_FIELDS)}")
        if not isinstance(arguments, dict):
            raise Refused(f"{name}: the input must be an object, got {type(arguments).__name__}")
        unexpected = sorted(set(arguments) - set(_FIELDS[name]))
        if unexpected:
            raise Refused(f"{name}: unexpected field {unexpected[0]!r}; it takes {', '.join(_FIELDS[name])}")
        if name == "list_files":
            return self.reader.list_files(arguments.get("path"), arguments.get("glob"))
        if name == "read_file":
            if "path" not in arguments:
                raise Refused("read_file: missing field 'path'")
            return self.reader.read_file(arguments["path"], arguments.get("start_line"), arguments.get("end_line"))
        if name == "search":
            return self.reader.search(arguments.get("pattern"), arguments.get("path"), arguments.get("glob"))
        if name in EDIT_TOOLS:
            return self._edit(name, arguments)
        return self._tests(arguments.get("tests", []))

    def _edit(self, name: str, arguments: dict) -> str:
        try:
            [op] = parse_tool_uses([{"name": name, "input": arguments}])
            stats = self.apply([op])
        except EditError as problem:
            raise Refused(f"rejected, nothing was changed: {problem}") from None
        if not stats.files_touched:
            return f"{op.path}: no change (the file already is as given)"
        if name == "delete_file":
            return f"deleted {op.path}"
        return f"{'wrote' if name == 'write_file' else 'edited'} {op.path} ({stats.bytes_written} bytes written)"

    def _tests(self, tests: Any) -> str:
        if not isinstance(tests, list) or not all(isinstance(test, str) and test for test in tests):
            raise Refused("run_tests: tests must be a list of test ids (strings)")
        if len(tests) > MAX_SELECTED_TESTS:
            raise Refused(f"run_tests: at most {MAX_SELECTED_TESTS} tests at once; name fewer, or none for all")
        for test in tests:
            try:
                if test.startswith("-"):
                    raise ValueError("it starts with '-', which would be an option")
                check_path(test.split("::", 1)[0].split("[", 1)[0], PROTECTED_PATHS)
            except ValueError as problem:
                raise Refused(f"run_tests: {test!r} is not a test id: {problem}") from None
        if tests and not self.selectable:
            raise Refused("run_tests: this project's test command is not pytest, so tests cannot be named; "
                          "call run_tests without tests to run the whole suite")
        limit = self.limits.max_test_runs
        if self.test_runs >= limit:
            used = f"this attempt's {limit} test runs are used up" if limit else "it is off for this run"
            raise Refused(f"run_tests: {used}; finish when the change is done (the gate runs the full suite)")
        self.test_runs += 1
        self.reader.changed()
        report = self.run_tests(tuple(tests))
        return describe_report(report, f"test run {self.test_runs} of {limit}"
                               + (f" ({len(tests)} named test{'s' * (len(tests) != 1)})" if tests else ""))

    def _cap(self, text: str) -> str:
        data = text.encode("utf-8")
        cap = self.limits.result_max_bytes
        if len(data) <= cap:
            return text
        note = f"\n[result cut at {cap} bytes: {len(data) - cap} more not shown]"
        return data[: max(0, cap - len(note))].decode("utf-8", errors="ignore") + note


def describe_report(report: Any, title: str) -> str:
    """A TestReport for the model: counts, then the failing tests with their messages trimmed."""
    counts = report.counts()
    exit_text = "killed at the time limit" if report.timed_out else f"exit code {report.exit_code}"
    lines = [f"{title}: {exit_text}",
             f"{counts['total']} tests: {counts['passed']} passed, {counts['failed']} failed, "
             f"{counts['error']} errors, {counts['skipped']} skipped"]
    if report.junit_error:
        lines.append(f"no per-test results: {report.junit_error}")
    failing = [o for o in report.outcomes if o.collection_error or o.outcome in ("failed", "error")]
    for outcome in failing[:FAILURES_SHOWN]:
        label = "COLLECTION ERROR" if outcome.collection_error else outcome.outcome.upper()
        lines.append(f"{label} {outcome.test_id}")
        lines.extend(f"    {line}" for line in head_tail(outcome.message.strip(), TRACE_MAX_CHARS, "\n[...]\n").splitlines())
    if len(failing) > FAILURES_SHOWN:
        lines.append(f"[{len(failing) - FAILURES_SHOWN} more failing tests not shown]")
    if not report.outcomes and report.output_tail.strip():
        lines += ["end of the output:", head_tail(report.output_tail.strip(), OUTPUT_TAIL_CHARS, "\n[...]\n")]
    return "\n".join(lines)


def tools_for(root: Path, files: Callable[[], list[str]], scope: Sequence[str] | None, *, limits: ToolLimits,
              run_tests: Callable[[tuple[str, ...]], Any], selectable: bool, state_dir: Path | None,
              redact: Callable[[str], str]) -> AttemptTools:
    """The toolbox of an attempt whose project is at ``root``."""
    return AttemptTools(ProjectReader(root, files, limits.reads, state_dir), scope, run_tests=run_tests,
                        selectable=selectable, limits=limits, redact=redact)
