"""Goal evidence for an attempt the regression rules passed (contract 5): find the touched
tests, run them where the rules need a run (at most one fail-to-pass and one old-tests run,
none when no test file changed), and judge (``autopack.domain.evidence``)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from autopack.domain.evidence import Evidence, RunRecord, Rules, judge
from autopack.domain.test_files import (GO_TEST_FUNCTION, Layout, has_inline_tests, is_python_test_module, is_test_file,
                                        project_path, touched_tests)
from autopack.testcommand import is_pytest
from autopack.testrun import TestReport

# (kind, tree sha, project root to run in, pytest selection) -> the report and its test-run id
RunSuite = Callable[[str, str, Path, tuple[str, ...]], tuple[TestReport, int]]

_GO_MODULE = re.compile(r"^module\s+(\S+)", re.MULTILINE)
_INLINE_TESTS_MAX_BYTES = 2_000_000


def gather_evidence(workspace: Any, spec: Any, test_command: str, baseline: TestReport, report: TestReport,
                    delta: Any, tree_sha: str, run_suite: RunSuite) -> Evidence:
    """The evidence of one attempt whose staged tree is ``tree_sha`` and whose gate ran ``report``."""
    from autopack.adapters.git.scratch import ScratchTree, staged_changes

    root = workspace.project_root
    pytest = is_pytest(test_command)
    report_root = _report_root(report, root) if pytest else "."
    changes = staged_changes(workspace)
    inline = [c.path for c in changes if c.status != "D" and not is_test_file(c.path)
              and c.path.endswith(".rs") and has_inline_tests(c.path, _read(root / c.path))]
    layout = Layout(go_module=_go_module(root), file_prefix=_prefix(root, report_root), declared={
        c.path: frozenset(GO_TEST_FUNCTION.findall(_read(root / c.path)))
        for c in changes if c.status != "D" and c.path.endswith("_test.go")})
    touched = touched_tests(changes, inline, baseline.by_id(), report.outcomes, layout)
    rules = Rules(f2p_required=spec.f2p_required, tests_may_change=spec.old_tests_may_change,
                  acceptance_tests=spec.acceptance_tests, allow_skip=spec.allow_skip)
    scratch = ScratchTree(workspace)
    # pytest names files relative to its rootdir, which positional arguments can move: pin the gate's
    rootdir = (f"--rootdir={report_root}",) if pytest else ()
    base_tree = workspace.head_tree()
    f2p = old_tests = None
    diffs: dict[str, str] = {}
    if (touched.ids or touched.unattributed) and touched.applied_at_base:
        tree = scratch.compose(base_tree, tree_sha, list(touched.applied_at_base))
        select = rootdir + _files_of(report, touched.ids, layout.file_prefix) if pytest else ()
        f2p = RunRecord("f2p", tree, select, *run_suite("f2p", tree, scratch.checkout(tree), select))
    if touched.reverted and not rules.tests_may_change:
        tree = scratch.compose(tree_sha, base_tree, list(touched.reverted))
        select = rootdir + _old_selection(touched.reverted) if pytest else ()
        old_tests = RunRecord("old_tests", tree, select, *run_suite("old_tests", tree, scratch.checkout(tree), select))
        diffs = {path: scratch.diff(base_tree, tree_sha, path) for path in touched.reverted}
    return judge(rules, touched, baseline, report, delta.fixed, delta.newly_skipped, f2p, old_tests, diffs)


def _files_of(report: TestReport, test_ids: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    """The test files holding ``test_ids``, relative to the project (pytest selects files: a node id
    that does not exist at the base would stop the whole session); () runs everything when one has none."""
    wanted = set(test_ids)
    files = {o.file for o in report.outcomes if o.test_id in wanted}
    if None in files or not files:
        return ()
    return tuple(sorted(project_path(f, prefix) for f in files if f))


def _report_root(report: TestReport, project_root: Path) -> str:
    """Where the report's file paths start, relative to the project root: ``.``, or ``..`` and up when
    pytest's rootdir is an ancestor (a configuration file above the project, in a monorepo)."""
    for file in [o.file for o in report.outcomes if o.file and not o.file.startswith("/")][:20]:
        for up in range(6):
            if (project_root.joinpath(*[".."] * up) / file).is_file():
                return "/".join([".."] * up) or "."
    return "."


def _prefix(project_root: Path, report_root: str) -> str:
    """The project's path below the report's root ("" when they are the same directory)."""
    if report_root == ".":
        return ""
    depth = report_root.count("..")
    return "/".join(project_root.resolve().parts[-depth:])


def _old_selection(reverted: tuple[str, ...]) -> tuple[str, ...]:
    """The reverted test modules, and the directory of each reverted conftest.py or data file."""
    chosen = set()
    for path in reverted:
        if is_python_test_module(path):
            chosen.add(path)
        else:
            parent = str(PurePosixPath(path).parent)
            if parent == ".":
                return ()
            chosen.add(parent)
    return tuple(sorted(chosen))


def _go_module(root: Path) -> str | None:
    try:
        found = _GO_MODULE.search((root / "go.mod").read_text(errors="replace"))
    except OSError:
        return None
    return found.group(1) if found else None


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(_INLINE_TESTS_MAX_BYTES).decode(errors="replace")
    except OSError:
        return ""
