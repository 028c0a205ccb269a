"""Test files and the tests in them: which changed files are tests (by each toolchain's naming
rules), which report outcomes live in which files, and which tests an attempt touched. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterable, Mapping, Sequence

from autopack.junit import TestOutcome

_TEST_DIRS = frozenset({"tests", "test", "__tests__", "testdata", "spec", "specs"})
_TEST_NAME = re.compile(
    r"^(test_.*\.py|.*_test\.py|tests?\.py|conftest\.py"  # Python (tests.py: Django)
    r"|.*\.(test|spec)\.[cm]?[jt]sx?|test-.*\.[cm]?[jt]s|.*[-_]test\.[cm]?[jt]s"  # Node
    r"|.*_test\.go"  # Go
    r"|.*(Tests?|IT)\.(java|kt)|Test.*\.(java|kt))$")  # Java / Kotlin (IT: failsafe's integration tests)
_PYTHON_TEST_MODULE = re.compile(r"^(test_.*|.*_test)\.py$")
_RUST_INLINE_TESTS = re.compile(r"#\[cfg\(test\)\]")


def is_test_file(path: str) -> bool:
    """Whether ``path`` (relative to the project) is test code or test data by the toolchains'
    naming rules: Python ``test_*.py``/``*_test.py``/``conftest.py``, Node ``*.test.*``/
    ``*.spec.*``/``__tests__/``, Go ``*_test.go``/``testdata/``, Rust and every other
    toolchain's ``tests/``/``test/`` directories, Java ``src/test/`` and ``*Test.java``."""
    parts = PurePosixPath(path).parts
    return bool(_TEST_DIRS.intersection(parts[:-1])) or bool(_TEST_NAME.match(parts[-1] if parts else ""))


def has_inline_tests(path: str, text: str) -> bool:
    """A Rust source file outside ``tests/`` that holds a ``#[cfg(test)]`` module: its tests are
    touched when it changes, but it is source too, so it is not applied at the base."""
    return path.endswith(".rs") and bool(_RUST_INLINE_TESTS.search(text))


def is_python_test_module(path: str) -> bool:
    """A file pytest collects by default (``test_*.py``, ``*_test.py``)."""
    return bool(_PYTHON_TEST_MODULE.match(PurePosixPath(path).name))


def is_test_module(path: str) -> bool:
    """Test code by its name (not ``conftest.py``, not test data): its tests are its own."""
    name = PurePosixPath(path).name
    return name != "conftest.py" and bool(_TEST_NAME.match(name))


@dataclass(frozen=True)
class Change:
    """One changed file of the attempt, relative to the project: status A (added), M, D."""

    status: str
    path: str


def node_id(outcome: TestOutcome) -> str | None:
    """The pytest node id of an outcome, when it can be rebuilt (acceptance ids are written so)."""
    from autopack.testcommand import pytest_node_id

    return pytest_node_id(outcome)


def ids_of(outcome: TestOutcome, prefix: str = "") -> set[str]:
    """Every name a plan may give this test: its report id and, for pytest, its node id (also
    relative to the project when pytest's rootdir lies above it)."""
    names = {outcome.test_id}
    if (nid := node_id(outcome)) is not None:
        names |= {nid, project_path(nid, prefix)}
    return names


@dataclass(frozen=True)
class Layout:
    """What places a test id without a file in a file: Go ids name a package (``go.mod``'s module
    path + directory) and a function, which ``declared`` finds in the changed ``_test.go`` files."""

    go_module: str | None = None
    declared: Mapping[str, frozenset[str]] = field(default_factory=dict)  # path -> test functions in it
    file_prefix: str = ""  # the project's directory in the report's file paths (pytest's rootdir above it)


NO_LAYOUT = Layout()
GO_TEST_FUNCTION = re.compile(r"^func\s+((?:Test|Benchmark|Example|Fuzz)\w*)\s*\(", re.MULTILINE)


def belongs_to(outcome: TestOutcome, files: Iterable[str], layout: Layout = NO_LAYOUT) -> bool:
    """Whether the test lives in one of ``files`` (project-relative): by the report's file,
    else by the id's shape (Go package and function, Java class, Rust test target or module)."""
    files = list(files)
    if outcome.file:
        return project_path(outcome.file, layout.file_prefix) in files
    suite, _, name = outcome.test_id.partition("::")
    for path in files:
        pure = PurePosixPath(path)
        if path.endswith(".go"):
            directory = str(pure.parent) if str(pure.parent) != "." else ""
            package = "/".join(part for part in (layout.go_module or "", directory) if part)
            declared = layout.declared.get(path)
            if (suite == package or (directory and suite.endswith("/" + directory))) and (
                    declared is None or name.partition("/")[0] in declared):
                return True
        elif pure.suffix in (".java", ".kt"):
            rooted = [p for p in ("src/test/java/", "src/test/kotlin/") if path.startswith(p)]
            dotted = str(pure.with_suffix(""))[len(rooted[0]) if rooted else 0:].replace("/", ".")
            if suite == dotted or suite.startswith(dotted + "$") or (not rooted and suite.endswith("." + pure.stem)):
                return True
        elif pure.suffix == ".rs":
            if suite.endswith(f"({path})") or name.startswith(_rust_module(path) + "::"):
                return True
    return False


def project_path(file: str, prefix: str = "") -> str:
    """A report's file path relative to the project."""
    file = file.replace("\\", "/").removeprefix("./")
    return file.removeprefix(prefix + "/") if prefix else file


def _rust_module(path: str) -> str:
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts)


@dataclass(frozen=True)
class Touched:
    """The tests the phase touched: ids in the new report that are new or live in a changed test file."""

    test_files: tuple[str, ...]  # changed test files (added, modified, deleted), project-relative
    applied_at_base: tuple[str, ...]  # the test-file changes the fail-to-pass tree carries
    reverted: tuple[str, ...]  # changed pre-existing test files whose base version runs on the new code
    ids: tuple[str, ...]
    layout: Layout = NO_LAYOUT
    # A changed test file none of whose tests the report can place (node 20's JUnit names no file):
    # the fail-to-pass run then also touches the file-less tests whose outcome it changes.
    unattributed: bool = False


def touched_tests(changes: Sequence[Change], inline_test_files: Sequence[str], baseline: Mapping[str, TestOutcome],
                  after: Sequence[TestOutcome], layout: Layout = NO_LAYOUT) -> Touched:
    """Which tests the attempt touched; ``inline_test_files``: changed sources holding tests (Rust)."""
    test_changes = [c for c in changes if is_test_file(c.path)]
    files = [c.path for c in test_changes if c.status != "D"] + list(inline_test_files)
    ids = [o.test_id for o in after if not o.collection_error
           and (o.test_id not in baseline or belongs_to(o, files, layout))]
    placed = {path for path in files for o in after if belongs_to(o, [path], layout)}
    unattributed = any(is_test_module(path) and path not in placed for path in files) and any(
        o.file is None for o in after)
    return Touched(
        test_files=tuple(sorted({c.path for c in test_changes} | set(inline_test_files))),
        applied_at_base=tuple(c.path for c in test_changes),
        reverted=tuple(c.path for c in test_changes if c.status == "M"),
        ids=tuple(ids),
        layout=layout,
        unattributed=unattributed,
    )
