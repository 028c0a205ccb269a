"""Outcomes read from a test command's console output, for runners that write no JUnit XML.

Two converters turn a runner's output into per-test outcomes:

- ``go-test-json``: the event stream of ``go test -json``. Exact per test and subtest
  (``<package>::<Test>/<sub>``); a test still running when its package's binary died
  (panic, ``os.Exit``) is failed; a package that fails without a failing test gets an
  error ``<package>::[package]``.
- ``libtest``: the plain ``cargo test`` output, ``test <name> ... ok|FAILED|ignored``
  lines grouped by the ``Running <source> (<binary>)`` / ``Doc-tests <crate>`` headers
  (``calc (src/lib.rs)::tests::adds``). libtest's JSON format needs a nightly toolchain
  (``-Z unstable-options``), so the text is parsed instead. Trade-offs: a test that prints
  with ``--nocapture`` can split its result line (that test is then missing); a test
  binary that crashes loses the tests it had not reported (they count as removed).

``build_errors`` recognises compile and build failures in a runner's output as
collection errors with ids ``build::<unit>``, so a broken build never reads as "0 tests,
all fine": TypeScript ``error TS...`` (per file), Go ``[build failed]``/``[setup failed]``
(per package), Rust ``error[E...]`` + ``could not compile`` (per crate), Maven
``COMPILATION ERROR`` (per module and goal), Gradle ``> Task :compile... FAILED`` (per task),
and pytest sessions that stopped before running any test: ``ImportError while loading
conftest`` (per conftest), ``ERROR:`` usage and configuration errors (``build::pytest``) and
``INTERNALERROR>`` tracebacks (``pytest::internal``, the id pytest's own JUnit report uses).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from autopack.junit import TestOutcome, cap_text

CONVERTERS = ("go-test-json", "libtest")
BUILD_PREFIX = "build::"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_GO_PACKAGE_SUFFIX = re.compile(r" \[[^\]]*\]$")  # "pkg [pkg.test]" -> "pkg"
_GO_FAIL_LINE = re.compile(r"^FAIL\s+(\S+)\s+\[(build|setup) failed\]")
_GO_SOURCE_ERROR = re.compile(r"^(?:\./)?(\S+)\.go:\d+(?::\d+)?: ")
_LIBTEST_RESULT = re.compile(r"^test (?P<name>.+) \.\.\. (?P<result>ok|FAILED|ignored)\b")
_LIBTEST_RUNNING = re.compile(r"^\s*Running (?:unittests )?(?P<source>\S+) \((?P<binary>[^)]+)\)")
_LIBTEST_DOCTESTS = re.compile(r"^\s*Doc-tests (?P<crate>\S+)")
_LIBTEST_FAILURE_HEADER = re.compile(r"^---- (?P<name>.+) stdout ----$")
_CARGO_COULD_NOT_COMPILE = re.compile(r"^error: could not compile `(?P<crate>[^`]+)`")
_RUST_ERROR_START = re.compile(r"^error(\[E\d+\])?: ")
_TSC_ERROR = re.compile(r"^(?:(?P<file>[^\s(:][^(:]*?)(?:\(\d+,\d+\):|:\d+:\d+ -) )?error TS\d+: ")
_MAVEN_GOAL_FAILED = re.compile(
    r"Failed to execute goal [\w.\-]+:[\w.\-]+:[\w.\-]+:(?P<goal>\w+) \([^)]*\) on project "
    r"(?P<project>[^:\s]+): Compilation failure"
)
_MAVEN_SOURCE_ERROR = re.compile(r"^\[ERROR\] (?P<text>\S+\.\w+:\[\d+,\d+\] .*)$")
_GRADLE_TASK_FAILED = re.compile(r"^> Task (?P<task>:[\w:.\-]*compile\w*) FAILED")
_GRADLE_SOURCE_ERROR = re.compile(r"^(?:e: (?:file://)?\S+|\S+\.(?:java|groovy|scala):\d+: error: .*)")
_PYTEST_CONFTEST_ERROR = re.compile(r"^ImportError while loading conftest '(?P<path>[^']+)'\.$")
_PYTEST_USAGE_ERROR = re.compile(r"^ERROR: (?P<usage>usage: )?")  # pytest's UsageError (its usage line says nothing)
_PYTEST_DIRS = re.compile(r"^\s+(inifile|configfile|rootdir): ")  # after a usage error: machine-specific
_PYTEST_INTERNAL_ERROR = "INTERNALERROR> "
PYTEST_INTERNAL_ID = "pytest::internal"
PYTEST_STOPPED = {2: "interrupted", 3: "internal error", 4: "usage error"}  # pytest's exit codes


def convert_output(converter: str, text: str, root: Path) -> list[TestOutcome]:
    """Per-test outcomes and build errors from the output of ``go test -json`` or ``cargo test``."""
    text = _clean(text, root)
    if converter == "go-test-json":
        return _go_test_json(text)
    if converter == "libtest":
        return _libtest(text) + _rust_build_errors(text)
    raise ValueError(f"unknown converter {converter!r}; expected one of {', '.join(CONVERTERS)}")


def build_errors(ecosystem: str | None, text: str, root: Path) -> list[TestOutcome]:
    """Collection errors for the compile/build failures of ``ecosystem`` found in ``text``."""
    scanner = _SCANNERS.get(ecosystem or "")
    return scanner(_clean(text, root)) if scanner else []


def _clean(text: str, root: Path) -> str:
    """Without colour codes and the project's absolute path (messages stay stable across worktrees)."""
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    for prefix in {str(root), str(Path(root).resolve())}:
        text = text.replace(prefix.rstrip("/") + "/", "")
    return text


def _build_error(unit: str, lines: list[str], fallback: str) -> TestOutcome:
    message = "\n".join(line.rstrip() for line in lines).strip() or fallback
    return TestOutcome(test_id=BUILD_PREFIX + unit, outcome="error", message=cap_text(message),
                       collection_error=True)


# --- Go -----------------------------------------------------------------------------


@dataclass
class _GoTest:
    action: str | None = None
    output: list[str] = field(default_factory=list)


@dataclass
class _GoPackage:
    action: str | None = None
    output: list[str] = field(default_factory=list)
    build_failed: bool = False
    build_output: list[str] = field(default_factory=list)


def _go_test_json(text: str) -> list[TestOutcome]:
    tests: dict[tuple[str, str], _GoTest] = {}
    packages: dict[str, _GoPackage] = {}
    plain: list[str] = []
    for line in text.splitlines():
        event = _json_object(line)
        if event is None:
            plain.append(line)
            continue
        action = event.get("Action")
        if action in ("build-output", "build-fail"):
            package = packages.setdefault(_GO_PACKAGE_SUFFIX.sub("", str(event.get("ImportPath", ""))), _GoPackage())
            package.build_failed |= action == "build-fail"
            package.build_output.append(str(event.get("Output", "")))
            continue
        name = str(event.get("Package", ""))
        package = packages.setdefault(name, _GoPackage())
        test = str(event.get("Test") or "")
        target = tests.setdefault((name, test), _GoTest()) if test else package
        if action == "output":
            output = str(event.get("Output", ""))
            target.output.append(output)
            if not test and _GO_FAIL_LINE.match(output):
                package.build_failed = True
        elif action in ("run", "pass", "fail", "skip"):
            target.action = action
            if not test and event.get("FailedBuild"):
                package.build_failed = True
    outcomes = []
    for (package_name, test), result in tests.items():
        outcome = {"pass": "passed", "fail": "failed", "skip": "skipped"}.get(result.action or "")
        if outcome is None:  # started, never finished: the test binary died under it
            if packages[package_name].action != "fail":
                continue
            outcome = "failed"
            result.output.append("(did not finish: the test binary failed)\n")
            result.output += packages[package_name].output[-20:]
        message = "" if outcome == "passed" else _go_message(result.output)
        outcomes.append(TestOutcome(f"{package_name}::{test}", outcome, message=message))  # type: ignore[arg-type]
    broken = {o.test_id.partition("::")[0] for o in outcomes if o.outcome == "failed"}
    for name, package in packages.items():
        if name and package.action == "fail" and not package.build_failed and name not in broken:
            outcomes.append(TestOutcome(f"{name}::[package]", "error", message=_go_message(package.output)))
    return outcomes + _go_build_errors(plain, packages)


def _go_message(output: list[str]) -> str:
    progress = ("=== RUN", "=== PAUSE", "=== CONT")
    lines = [line for line in "".join(output).splitlines() if not line.startswith(progress)]
    return cap_text("\n".join(lines).strip())


def _go_build_errors(plain: list[str], packages: dict[str, _GoPackage] | None = None) -> list[TestOutcome]:
    """``# pkg`` blocks and ``FAIL pkg [build failed]`` lines (plain text), plus JSON build events."""
    blocks: dict[str, list[str]] = {}
    failed: list[str] = []
    current: str | None = None
    for line in plain:
        if line.startswith("# "):
            current = _GO_PACKAGE_SUFFIX.sub("", line[2:].strip())
            blocks.setdefault(current, [])
        elif (match := _GO_FAIL_LINE.match(line)) is not None:
            failed.append(match.group(1))
            current = None
        elif current is not None and line.strip():
            blocks[current].append(line)
    for name, package in (packages or {}).items():
        if package.build_failed:
            failed.append(name)
            blocks.setdefault(name, []).extend("".join(package.build_output).splitlines())
    errors = [_build_error(name, blocks.get(name, []), f"{name}: build failed") for name in dict.fromkeys(failed)]
    if errors:
        return errors
    by_directory: dict[str, list[str]] = {}  # `go test` refused to start, e.g. an unresolvable import
    for line in plain:
        if (match := _GO_SOURCE_ERROR.match(line)) is not None:
            by_directory.setdefault(str(Path(match.group(1)).parent), []).append(line)
    return [_build_error(directory, lines, f"{directory}: setup failed") for directory, lines in by_directory.items()]


def _json_object(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# --- Rust ---------------------------------------------------------------------------


def _libtest(text: str) -> list[TestOutcome]:
    suite = "tests"
    results: dict[str, TestOutcome] = {}
    failure_text: dict[str, list[str]] = {}
    capturing: str | None = None
    for line in text.splitlines():
        if (running := _LIBTEST_RUNNING.match(line)) is not None:
            binary = re.sub(r"-[0-9a-f]{16}$", "", Path(running.group("binary")).name)
            suite, capturing = f"{binary} ({running.group('source')})", None
        elif (doctests := _LIBTEST_DOCTESTS.match(line)) is not None:
            suite, capturing = f"{doctests.group('crate')} (doc)", None
        elif (result := _LIBTEST_RESULT.match(line)) is not None:
            test_id = f"{suite}::{result.group('name')}"
            outcome = {"ok": "passed", "FAILED": "failed", "ignored": "skipped"}[result.group("result")]
            results[test_id] = TestOutcome(test_id, outcome)  # type: ignore[arg-type]
        elif (header := _LIBTEST_FAILURE_HEADER.match(line)) is not None:
            capturing = f"{suite}::{header.group('name')}"
            failure_text[capturing] = []
        elif capturing is not None:
            if line == "failures:" or line.startswith("test result: "):
                capturing = None
            else:
                failure_text[capturing].append(line)
    return [
        TestOutcome(o.test_id, o.outcome, message=cap_text("\n".join(failure_text.get(o.test_id, [])).strip()))
        if o.outcome == "failed" else o
        for o in results.values()
    ]


def _rust_build_errors(text: str) -> list[TestOutcome]:
    diagnostics: list[str] = []
    units: list[str] = []
    in_error = False
    for line in text.splitlines():
        if (match := _CARGO_COULD_NOT_COMPILE.match(line)) is not None:
            units.append(match.group("crate"))  # one per crate: which targets fail first is a race
            in_error = False
        elif _RUST_ERROR_START.match(line) and not line.startswith(("error: test failed", "error: doctest failed")):
            in_error = True
            diagnostics.append(line)
        elif in_error:
            if not line.strip():
                in_error = False
            diagnostics.append(line)
    return [_build_error(unit, diagnostics, f"{unit}: could not compile") for unit in dict.fromkeys(units)]


# --- Java, TypeScript ---------------------------------------------------------------


def _maven_build_errors(text: str) -> list[TestOutcome]:
    lines = text.splitlines()
    sources = list(dict.fromkeys(m.group("text") for m in map(_MAVEN_SOURCE_ERROR.match, lines) if m))
    units = [f"{m.group('project')} ({m.group('goal')})" for m in map(_MAVEN_GOAL_FAILED.search, lines) if m]
    if not units and any("COMPILATION ERROR" in line for line in lines):
        units = ["maven"]
    return [_build_error(unit, sources, f"{unit}: compilation failure") for unit in dict.fromkeys(units)]


def _gradle_build_errors(text: str) -> list[TestOutcome]:
    lines = text.splitlines()
    sources = list(dict.fromkeys(line for line in lines if _GRADLE_SOURCE_ERROR.match(line)))
    units = [m.group("task").lstrip(":") for m in map(_GRADLE_TASK_FAILED.match, lines) if m]
    return [_build_error(unit, sources, f"{unit}: compilation failed") for unit in dict.fromkeys(units)]


def _typescript_build_errors(text: str) -> list[TestOutcome]:
    by_file: dict[str, list[str]] = {}
    for line in text.splitlines():
        if (match := _TSC_ERROR.match(line.strip())) is not None:
            by_file.setdefault(match.group("file") or "tsc", []).append(line.strip())
    return [_build_error(file, lines, f"{file}: TypeScript error") for file, lines in by_file.items()]


# --- Python ---------------------------------------------------------------------------


def pytest_session_errors(text: str, exit_code: int, root: Path) -> list[TestOutcome]:
    """Why a pytest session that exited with a ``PYTEST_STOPPED`` code stopped before any test
    ran, from its output: the errors ``build_errors("python", ...)`` recognises, else one
    ``build::pytest`` error with the output's last lines."""
    found = build_errors("python", text, root)
    if found:
        return found
    tail = "\n".join(_clean(text, root).strip().splitlines()[-20:])
    message = f"pytest exited {exit_code} ({PYTEST_STOPPED.get(exit_code, 'error')}) before running any test\n{tail}"
    return [_build_error("pytest", message.splitlines(), "pytest: stopped")]


def _pytest_session_errors(text: str) -> list[TestOutcome]:
    """What stopped a pytest session before any test ran: conftest import, usage and internal errors."""
    lines = text.splitlines()
    errors: list[TestOutcome] = []
    for index, line in enumerate(lines):
        if (match := _PYTEST_CONFTEST_ERROR.match(line)) is not None:
            path = match.group("path")
            errors.append(replace(_build_error(path, _block(lines, index), f"{path}: cannot be imported"), file=path))
        elif (match := _PYTEST_USAGE_ERROR.match(line)) is not None:
            block = [line[match.end():], *(text for text in _block(lines, index)[1:] if not _PYTEST_DIRS.match(text))]
            errors.append(_build_error("pytest", block[1:] if match.group("usage") else block, "pytest: usage error"))
    internal = [line.removeprefix(_PYTEST_INTERNAL_ERROR) for line in lines if line.startswith(_PYTEST_INTERNAL_ERROR)]
    if internal:
        errors.append(TestOutcome(PYTEST_INTERNAL_ID, "error", message=cap_text("\n".join(internal)),
                                  collection_error=True))
    return errors


def _block(lines: list[str], start: int) -> list[str]:
    """``lines[start]`` and the lines after it, up to the next blank line."""
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def _go_text_build_errors(text: str) -> list[TestOutcome]:
    return _go_build_errors([line for line in text.splitlines() if _json_object(line) is None])


_SCANNERS: dict[str, Callable[[str], list[TestOutcome]]] = {
    "node": _typescript_build_errors,
    "go": _go_text_build_errors,
    "rust": _rust_build_errors,
    "java-maven": _maven_build_errors,
    "java-gradle": _gradle_build_errors,
    "python": _pytest_session_errors,
}
