"""JUnit XML: per-test outcomes read safely from report files, and written back for converted output.

Reports from pytest, Maven Surefire, Gradle, gotestsum, cargo-nextest, vitest, jest-junit
and node's built-in runner are read. ``ecosystem="node"`` adds the node rules: the built-in
runner's ``describe`` nesting and ``file`` attribute make the test id, and a whole test file
that failed to load (node, vitest, jest-junit's "Test suite failed to run") is a collection error.
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from autopack.errors import AutopackError, UsageError
from autopack.text import head_tail, shown
from autopack.userfiles import read_regular

Outcome = Literal["passed", "failed", "error", "skipped"]

MAX_JUNIT_BYTES = 50 * 1024 * 1024
MESSAGE_CAP = 2000
COLLECTION_FAILURE = "collection failure"  # pytest's message for a module that failed to import
PYTEST_INTERNAL_ERROR = ("pytest", "internal", "internal error")  # classname, name, message of pytest's crash

_SEVERITY: dict[str, int] = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
_CHILD_OUTCOME = {"error": "error", "failure": "failed", "skipped": "skipped"}
_NODE_BUILTIN_CLASSNAME = "test"  # node --test-reporter=junit gives every testcase this classname
_JEST_SUITE_ERROR = "Test suite failed to run"


class JUnitError(AutopackError):
    """A JUnit XML report that cannot be read safely."""


@dataclass(frozen=True)
class TestOutcome:
    """One test's result as reported in JUnit XML (or converted from a runner's output)."""

    __test__ = False  # not a pytest test class

    test_id: str
    outcome: Outcome
    file: str | None = None
    message: str = ""
    duration_s: float = 0.0
    collection_error: bool = False


def parse_junit(
    paths: Sequence[Path], *, ecosystem: str | None = None, root: Path | None = None
) -> list[TestOutcome]:
    """Per-test outcomes from one or more JUnit XML files, merged by test id.

    A test reported more than once (pytest writes a teardown error as a second
    ``<testcase>``; several Surefire files may repeat a class) keeps its worst outcome:
    error > failed > skipped > passed. ``root`` makes absolute file paths relative.
    Raises JUnitError for unreadable, oversized, malformed or DOCTYPE/ENTITY documents.
    """
    return merge_outcomes(
        outcome for path in paths for outcome in _read_junit_file(Path(path), ecosystem, root)
    )


def merge_outcomes(outcomes: Iterator[TestOutcome] | Sequence[TestOutcome]) -> list[TestOutcome]:
    """Outcomes merged by test id (worst outcome wins, messages joined), in first-seen order."""
    merged: dict[str, TestOutcome] = {}
    for outcome in outcomes:
        previous = merged.get(outcome.test_id)
        merged[outcome.test_id] = outcome if previous is None else _merge(previous, outcome)
    return list(merged.values())


def junit_document(outcomes: Sequence[TestOutcome], *, suite: str) -> bytes:
    """``outcomes`` as a JUnit XML document; ``parse_junit`` reads back the same ids, outcomes and
    collection errors (a collection error's message gains pytest's "collection failure" line).
    A message's first line is the failure's ``message`` attribute, the rest its text."""
    from xml.etree.ElementTree import Element, SubElement, tostring

    counts = {kind: sum(o.outcome == kind for o in outcomes) for kind in _SEVERITY}
    totals = {"tests": str(len(outcomes)), "failures": str(counts["failed"]), "errors": str(counts["error"]),
              "skipped": str(counts["skipped"]), "time": f"{sum(o.duration_s for o in outcomes):.3f}"}
    document = Element("testsuites", **totals)
    root = SubElement(document, "testsuite", name=suite, **totals)
    for outcome in outcomes:
        classname, separator, name = outcome.test_id.partition("::")
        if outcome.collection_error or not separator:
            classname, name = "", outcome.test_id
        case = SubElement(root, "testcase", classname=classname, name=name,
                          time=f"{outcome.duration_s:.3f}")
        if outcome.file:
            case.set("file", outcome.file)
        if outcome.outcome != "passed":
            tag = {"failed": "failure", "error": "error", "skipped": "skipped"}[outcome.outcome]
            first, _, rest = outcome.message.partition("\n")
            if outcome.collection_error:  # pytest's marker, which parse_junit recognises
                first, rest = COLLECTION_FAILURE, outcome.message
            SubElement(case, tag, message=first).text = rest
    return tostring(document, encoding="utf-8", xml_declaration=True)


def junit_files(root: Path, pattern: str | None) -> list[Path]:
    """The files ``pattern`` names under ``root``: a file, a directory of *.xml, or a glob; only
    those that are inside ``root`` once symlinks are followed (a suite's symlink to a directory
    elsewhere must not have autopack read, or delete as stale, the files there)."""
    if not pattern:
        return []
    target = root / pattern
    if target.is_dir():
        found = [path for path in target.glob("*.xml") if path.is_file()]
    elif glob.has_magic(pattern):
        found = [Path(path) for path in glob.glob(os.path.join(glob.escape(str(root)), pattern), recursive=True)
                 if Path(path).is_file()]
    else:
        found = [target] if target.is_file() else []
    inside = Path(root).resolve()
    return sorted(path for path in found if path.resolve().is_relative_to(inside))


def check_inside(junit_xml: str) -> None:
    """UsageError unless ``junit_xml`` is a relative path that stays inside the repository."""
    if Path(junit_xml).is_absolute() or ".." in Path(junit_xml).parts:
        raise UsageError(f"junit_xml {shown(junit_xml)} must be relative to the repository, without '..'")


def cap_text(text: str, cap: int = MESSAGE_CAP) -> str:
    """Keep the head (the message) and the tail (where the traceback ends)."""
    return head_tail(text, cap, "\n[...]\n")


# --- reading ----------------------------------------------------------------------


def merged_document(paths: Sequence[Path]) -> bytes:
    """Several JUnit XML files as one document: a ``<testsuites>`` holding each file's suites, in order
    (what autopack keeps of a project that writes a report per package or class). A symlink, or a file
    that is not JUnit XML, is left out; ``parse_junit`` is what reports a malformed one."""
    from xml.etree.ElementTree import Element, tostring

    merged = Element("testsuites")
    for path in paths:
        if Path(path).is_symlink():  # as a single report is kept: not through a symlink
            continue
        try:
            document = _read_document(Path(path))
        except JUnitError:
            continue
        merged.extend(list(document) if document.tag == "testsuites" else [document])
    return tostring(merged, encoding="utf-8", xml_declaration=True)


def _read_junit_file(path: Path, ecosystem: str | None, root: Path | None) -> list[TestOutcome]:
    document = _read_document(path)
    if ecosystem == "node":
        return [_node_outcome(case, suites, path, root) for case, suites in _cases_with_suites(document)]
    return [_testcase_outcome(case, path) for case in document.iter("testcase")]


def _read_document(path: Path) -> Any:
    """The root element of the JUnit XML file at ``path``; JUnitError when it cannot be one."""
    try:
        data = read_regular(path, MAX_JUNIT_BYTES)
    except OSError as error:
        raise JUnitError(f"cannot read JUnit XML {path}: {error.strerror}") from error
    if len(data) > MAX_JUNIT_BYTES:
        raise JUnitError(f"JUnit XML {path} is larger than the 50 MB limit")
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", data, re.IGNORECASE):
        raise JUnitError(f"malformed JUnit XML: {path} declares a DOCTYPE or ENTITY (refused)")
    document = _parse_xml(data, path)
    if document.tag not in ("testsuites", "testsuite"):
        raise JUnitError(
            f"malformed JUnit XML: {path} has root <{document.tag}>, expected <testsuites> or <testsuite>"
        )
    return document


def _parse_xml(data: bytes, path: Path) -> Any:
    """Parse with expat, refusing any DTD (also catches declarations in UTF-16 documents)."""
    from xml.etree.ElementTree import TreeBuilder
    from xml.parsers import expat

    def refuse(*_: object) -> None:
        raise JUnitError(f"malformed JUnit XML: {path} declares a DOCTYPE or ENTITY (refused)")

    builder = TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise JUnitError(f"malformed JUnit XML: {path}: {error}") from error
    return builder.close()


def _testcase_outcome(case: Any, path: Path) -> TestOutcome:
    classname = case.get("classname") or ""
    name = case.get("name")
    if name is None:
        raise JUnitError(f"malformed JUnit XML: {path} has a <testcase> without a name")
    outcome, message, detail = _worst_child(case)
    return TestOutcome(
        test_id=f"{classname}::{name}" if classname else name,
        outcome=outcome,
        file=case.get("file"),
        message=cap_text(detail),
        duration_s=_duration(case),
        collection_error=outcome == "error" and ((not classname and message == COLLECTION_FAILURE)
                                                 or (classname, name, message) == PYTEST_INTERNAL_ERROR),
    )


def _node_outcome(case: Any, suites: list[str], path: Path, root: Path | None) -> TestOutcome:
    """A testcase from node's built-in runner, vitest or jest-junit."""
    classname = case.get("classname") or ""
    name = case.get("name")
    if name is None:
        raise JUnitError(f"malformed JUnit XML: {path} has a <testcase> without a name")
    outcome, _, detail = _worst_child(case)
    file = _relative(case.get("file"), root)
    broken = outcome in ("failed", "error")
    if classname == _NODE_BUILTIN_CLASSNAME:
        whole_file = Path(name).is_absolute() or name == case.get("file")
        if whole_file:  # the file's own test: it failed to load, or its process failed
            test_id = _relative(name, root) or name
        else:
            title = " > ".join([*suites, name.strip()])
            test_id = f"{file}::{title}" if file else title
        collection_error = whole_file and broken
    elif classname == _JEST_SUITE_ERROR:
        test_id, collection_error = name, True
    else:
        test_id = f"{classname}::{name.strip()}" if classname else name.strip()
        collection_error = classname == name and broken  # vitest: a test file that failed to load
    if collection_error:
        outcome = "error"
    return TestOutcome(test_id=test_id, outcome=outcome, file=file, message=cap_text(detail),
                       duration_s=_duration(case), collection_error=collection_error)


def _cases_with_suites(element: Any, suites: tuple[str, ...] = ()) -> Iterator[tuple[Any, list[str]]]:
    """Each <testcase> with the names of the <testsuite>s nested below the report's top level."""
    for child in element:
        if child.tag == "testcase":
            yield child, list(suites)
        elif child.tag == "testsuite":
            nested = element.tag == "testsuite" or _node_describe(child)
            yield from _cases_with_suites(child, (*suites, child.get("name") or "") if nested else suites)


def _node_describe(suite: Any) -> bool:
    """True for node's ``describe`` suites (top-level children of <testsuites>), not file suites."""
    return all(case.get("classname") == _NODE_BUILTIN_CLASSNAME for case in suite.iter("testcase"))


def _worst_child(case: Any) -> tuple[Outcome, str, str]:
    outcome: Outcome = "passed"
    message = detail = ""
    for child in case:
        kind = _CHILD_OUTCOME.get(child.tag)
        if kind is None or _SEVERITY[kind] <= _SEVERITY[outcome]:
            continue
        outcome = kind  # type: ignore[assignment]
        message = child.get("message") or ""
        detail = "\n".join(part for part in (message, (child.text or "").strip()) if part)
    return outcome, message, detail


def _duration(case: Any) -> float:
    """Seconds from the ``time`` attribute; 0.0 when absent, unreadable, negative or not finite."""
    try:
        seconds = float(case.get("time") or 0.0)
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds >= 0 else 0.0


def _relative(file: str | None, root: Path | None) -> str | None:
    if not file or root is None or not Path(file).is_absolute():
        return file
    try:
        return Path(file).relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        try:
            return Path(file).relative_to(Path(root)).as_posix()
        except ValueError:
            return file


def _merge(first: TestOutcome, second: TestOutcome) -> TestOutcome:
    worse, other = (first, second)
    if _SEVERITY[second.outcome] > _SEVERITY[first.outcome]:
        worse, other = second, first
    message = "\n".join(text for text in (worse.message, other.message) if text)
    return TestOutcome(
        test_id=first.test_id,
        outcome=worse.outcome,
        file=first.file or second.file,
        message=cap_text(message),
        duration_s=first.duration_s + second.duration_s,
        collection_error=first.collection_error or second.collection_error,
    )
