"""Re-running failed tests in the context they failed in, before anyone calls them flaky.

A test that fails in the full suite and passes alone may be flaky, or it may depend on
what ran before it (module state, a cache keyed wrongly): only the context it failed in
can tell. So the suspects are re-run alone first (pytest node ids, cheap): those that fail
again are confirmed at once. When any passes alone, or cannot be named, the whole test
command runs again; a suspect is flaky only when it passes there. Runners other than
pytest cannot select tests, so for them the whole command is the only re-run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from autopack.finalizer import BROKEN, confirmed_report
from autopack.store import CONFIRMED_TEST_RUN
from autopack.testcommand import pytest_node_id
from autopack.testrun import TestOutcome, TestReport

RERUN_ALONE = "rerun"  # test-run kinds, as recorded
RERUN_SUITE = "rerun_suite"


@dataclass(frozen=True)
class Reruns:
    """The re-runs of one set of suspects: alone (pytest only) and in the whole suite."""

    alone: TestReport | None = None
    in_suite: TestReport | None = None


RunSuite = Callable[[str, tuple[str, ...]], TestReport]  # (kind, node ids to select; () = all) -> report


def rerun_suspects(suspects: Sequence[TestOutcome], run: RunSuite, *, pytest: bool) -> Reruns:
    """Re-run ``suspects`` with ``run``: alone when they can be selected, then, unless every
    one failed again alone, the whole suite."""
    if not suspects:
        return Reruns()
    alone = None
    node_ids = tuple(dict.fromkeys(n for n in map(pytest_node_id, suspects) if n)) if pytest else ()
    if node_ids:
        alone = run(RERUN_ALONE, node_ids)
        again = alone.by_id()
        if all(s.test_id in again and again[s.test_id].outcome in BROKEN for s in suspects):
            return Reruns(alone=alone)
    return Reruns(alone=alone, in_suite=run(RERUN_SUITE, ()))


def record_confirmed(store: Any, run_id: str, attempt_id: int, tree_sha: str, report: TestReport,
                     test_run_id: int, reruns: Reruns) -> tuple[TestReport, int]:
    """What the baseline cache must hold for ``tree_sha``, and its test run: ``report`` with the
    whole-suite re-run's passes overlaid, recorded as a test run of its own kind when that
    changes anything (else ``report`` and ``test_run_id`` as they are)."""
    confirmed = confirmed_report(report, reruns.in_suite)
    if confirmed is report:
        return report, test_run_id
    return confirmed, store.record_test_run(run_id, attempt_id, CONFIRMED_TEST_RUN, tree_sha, confirmed, None)
