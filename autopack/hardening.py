"""Deterministic failure patterns: recognise a known cause in a failed attempt's evidence.

Run after a failed attempt and before the doctor: when a pattern matches, its hint goes
into the next attempt's prompt and the doctor call is skipped. Pure functions over
``Evidence``; patterns are tried in ``PATTERNS`` order, the first match wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence

MATCH_MAX_CHARS = 240
FIELDS = ("kind", "message", "output_tail", "failures", "apply_errors")


@dataclass(frozen=True)
class Evidence:
    """What a failed attempt left behind."""

    kind: str  # the failure kind (contract 4): regression, collection_error, apply_error, timeout, ...
    message: str
    output_tail: str = ""  # the end of the test command's output
    failures: Sequence[tuple[str, str]] = ()  # (test_id, message) of failing tests
    apply_errors: Sequence[str] = ()  # why the edits were rejected


@dataclass(frozen=True)
class Hint:
    """A recognised cause: the pattern's name, advice for the next attempt, and the evidence line it matched."""

    pattern: str
    hint: str
    match: str


@dataclass(frozen=True)
class Pattern:
    """A named failure cause: regexes searched in the given evidence fields, and a hint template.

    The template is formatted with the match's named groups, and ``{match}`` (the matched line).
    Every regex of a pattern defines the groups its template uses.
    """

    name: str
    fields: tuple[str, ...]
    regexes: tuple[re.Pattern[str], ...]
    hint: str


def _patterns(*regexes: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(regex) for regex in regexes)


PATTERNS: tuple[Pattern, ...] = (
    # Goal evidence (contract 5): the rule that failed is in the message; first, as the test output is not the cause.
    Pattern(
        "tests_weakened", ("message",),
        _patterns(r"fails on the new code, so the edits made them pass: (?P<subject>[^;]+)"),
        "The original version of {subject} fails on your code, so your edits to those tests changed what "
        "they check. Restore their original assertions and change the code until they pass; add new tests "
        "next to the old ones instead of rewriting them.",
    ),
    Pattern(
        "tests_skipped", ("message",),
        _patterns(r"tests that passed in the baseline are skipped now: (?P<subject>[^;]+)"),
        "Tests that passed before your change are skipped now ({subject}). Remove the skip or xfail you "
        "added and make them pass on the new code.",
    ),
    Pattern(
        "acceptance_failed", ("message",),
        _patterns(r"acceptance test (?P<subject>\S+) (?P<problem>[^;]+)"),
        "The plan's acceptance test {subject} {problem}. It must exist with exactly that id, fail (or not "
        "exist) before your change and pass after it.",
    ),
    Pattern(
        "no_goal_evidence", ("message",),
        _patterns(r"(?P<subject>no test fails before the phase and passes after)",
                  r"(?P<subject>touched tests fail on the new code): (?P<tests>[^;]+)"),
        "Nothing shows the goal was reached ({subject}). Add a test that exercises the new behaviour "
        "and fails on the code as it was before your change, and make every test you added or changed pass.",
    ),
    Pattern(
        "test_timeout", ("message", "failures", "kind"),
        _patterns(r"(?P<subject>timed out after [^;\n]*)", r"\b(?P<subject>Timeout)\b", r"^(?P<subject>timeout)$"),
        "The tests ran into the time limit ({match}). Look for an infinite loop, a blocking call "
        "(input(), a socket or network request, a lock, sleep) or an expensive computation in the code "
        "or tests you wrote; keep tests fast and offline.",
    ),
    Pattern(
        "scope_violation", ("apply_errors", "message"),
        _patterns(r"\((?:write_file|edit_file|delete_file) (?P<subject>[^)]+)\): path is outside the phase scope"
                  r" \((?P<scope>[^)]*)\)",
                  r"(?P<subject>path) is outside the phase scope \((?P<scope>[^)]*)\)"),
        "The edit to {subject} was rejected because it is outside the phase scope ({scope}), so no edit "
        "was applied. Make every change inside the scope; if the goal seems to need another file, "
        "reach it from inside the scope instead.",
    ),
    Pattern(
        "syntax_error", ("failures", "output_tail", "message"),
        _patterns(r"File \"(?P<subject>[^\"]+)\", line (?P<line>\d+)[^\n]*(?:\n[^\n]*){0,6}?\n[^\n]*?"
                  r"(?P<error>SyntaxError|IndentationError|TabError): (?P<detail>[^\n]*)"),
        "{subject} line {line} does not parse ({error}: {detail}). Fix that file so it is valid Python: "
        "check brackets, colons, quotes and indentation; for a file you rewrote, send its complete "
        "content with write_file.",
    ),
    Pattern(
        "missing_python_module", ("failures", "output_tail", "message"),
        _patterns(r"ModuleNotFoundError: No module named '(?P<subject>[^']+)'",
                  r"ImportError: No module named '?(?P<subject>[\w.]+)'?"),
        "Python cannot import '{subject}'. If it is part of this project, create the module at the path "
        "the import expects (with the package's __init__.py) or fix the import to the real module path; "
        "if it is a third-party package, it is not installed: use the standard library or code already "
        "in the project instead.",
    ),
    Pattern(
        "missing_node_module", ("failures", "output_tail", "message"),
        _patterns(r"Cannot find (?:module|package) '(?P<subject>[^']+)'"),
        "Node cannot resolve '{subject}' ({match}). For a project file use a relative path "
        "('./...') to a file that exists, with its extension for ES modules; for a package, use only "
        "dependencies already in package.json.",
    ),
    Pattern(
        "permission_error", ("failures", "output_tail", "message"),
        _patterns(r"PermissionError: \[Errno \d+\] [^:\n]*: '(?P<subject>[^']+)'",
                  r"EACCES: permission denied, \w+ '(?P<subject>[^']+)'"),
        "Access to {subject} was denied. Do not write outside the project or into read-only locations, "
        "and do not change file modes: in tests, write to a temporary directory (pytest's tmp_path, "
        "os.tmpdir()).",
    ),
    Pattern(
        "wrong_working_directory", ("output_tail", "failures", "message"),
        _patterns(r"file or directory not found: (?P<subject>\S+)",
                  r"No such file or directory: '(?P<subject>(?!/)[^']+)'",
                  r"ENOENT: no such file or directory, \w+ '(?P<subject>(?!/)[^']+)'"),
        "'{subject}' was looked up relative to the working directory, and the tests run from the project "
        "root, where it does not exist. Build paths from the code file's own location (e.g. "
        "Path(__file__).parent / ...) and check that the file is where the command expects it.",
    ),
    Pattern(
        "no_tests_collected", ("output_tail", "message"),
        _patterns(r"(?P<subject>collected 0 items)(?! /)", r"(?P<subject>no tests ran) in \d",
                  r"(?P<subject>exit code 5)\b", r"(?P<subject>exited 5)\b"),
        "The test command found no tests ({subject}). Test files must be named test_*.py (or *_test.py) "
        "and contain test_* functions (or Test* classes), in the directories the test command searches.",
    ),
)


def diagnose(evidence: Evidence) -> Hint | None:
    """The first pattern that matches the evidence, with its hint; None when no known cause is seen."""
    for pattern in PATTERNS:
        for text in _texts(evidence, pattern.fields):
            for regex in pattern.regexes:
                found = regex.search(text)
                if found:
                    match = _matched_line(found)
                    values = {key: value or "" for key, value in found.groupdict().items()}
                    return Hint(pattern=pattern.name, hint=pattern.hint.format(match=match, **values), match=match)
    return None


def _texts(evidence: Evidence, fields: tuple[str, ...]) -> Iterator[str]:
    for name in fields:
        if name == "failures":
            yield from (f"{test_id}: {message}" for test_id, message in evidence.failures)
        elif name == "apply_errors":
            yield from evidence.apply_errors
        elif name in FIELDS:
            value = getattr(evidence, name)
            if value:
                yield value


def _matched_line(found: re.Match[str]) -> str:
    """The whole line(s) the match spans, as one line."""
    text = found.string
    start = text.rfind("\n", 0, found.start()) + 1
    end = text.find("\n", found.end())
    line = " ".join(text[start:end if end != -1 else len(text)].split())
    return line if len(line) <= MATCH_MAX_CHARS else line[: MATCH_MAX_CHARS - 3] + "..."
