"""Drains from the command line: priorities, parking, stop rules, --run-id, drain-one, pick-next.

Every CLI call is a real `python -m autopack` subprocess over generated runs (tests/drainkit.py)
whose suite is a tiny JUnit-writing script, so each phase costs one fast suite run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import rows
from drainkit import PhaseScript, Workbench


def drain(wb: Workbench, *args: str) -> tuple[int, dict]:
    """`autopack drain --json ARGS`: exit code and summary; no "database is locked" ever."""
    done = wb.cli("drain", "--json", *args)
    assert "database is locked" not in done.stdout + done.stderr
    assert done.stdout.strip(), f"exit {done.returncode}: {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def dry_run(wb: Workbench, *args: str) -> list[dict]:
    done = wb.cli("drain", "--dry-run", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["candidates"]


def drained(summary: dict) -> list[tuple[str, str, str]]:
    return [(p["run_id"], p["phase_id"], p["state"]) for p in summary["phases"]]


@pytest.fixture
def wb(tmp_path: Path, store_db: str) -> Workbench:
    return Workbench(tmp_path, store_db=store_db)


# -- priority ----------------------------------------------------------------------------


def test_prioritise_orders_by_rank_then_oldest_failure_then_run_then_plan_order() -> None:
    from autopack.drain import prioritise
    from autopack.store.drainable import DrainablePhase

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    template = DrainablePhase(run_id="r1", phase_id="x", phase_pk=0, state="failed", failure_kind=None,
                              failed_at=None, position=0, run_created_at=t0, parked_reason=None,
                              escalated_budget=None, attempts=1)

    def failed(phase_id: str, kind: str | None, minutes: int, position: int = 0, run_id: str = "r1"):
        return replace(template, phase_id=phase_id, failure_kind=kind, position=position, run_id=run_id,
                       failed_at=t0 + timedelta(minutes=minutes))

    def queued(phase_id: str, position: int, run_id: str = "r1", created_minutes: int = 0):
        return replace(template, phase_id=phase_id, state="queued", position=position, run_id=run_id,
                       attempts=0, run_created_at=t0 + timedelta(minutes=created_minutes))

    phases = [
        queued("q-late-run", 0, run_id="r2", created_minutes=5),
        queued("q2", 2), queued("q1", 1),
        failed("odd", "something_new", 10),  # a kind another autopack version recorded
        failed("exhausted", "cassette_exhausted", 1), failed("window", "context_window", 2),
        failed("refused", "refusal", 3),
        failed("regression", "regression", 1), failed("removed", "tests_removed", 2),
        failed("report", "report_invalid", 3), failed("tampered", "git_tampered", 4),
        failed("apply", "apply_error", 1), failed("malformed", "malformed", 2), failed("cut-off", "truncated", 3),
        failed("deliverables", "deliverables_missing", 1), failed("noop", "no_op", 2),
        failed("collection", "collection_error", 1),
        failed("timeout-new", "timeout", 9), failed("api-old", "api_error", 3),
        failed("unknown", None, 5), failed("interrupted", "interrupted", 7), failed("abandoned", "abandoned", 8),
        failed("capped", "cost_cap", 6),  # no longer recorded; older databases hold it
        # same failure time: plan order decides
        failed("tie-b", "apply_error", 30, position=2), failed("tie-a", "apply_error", 30, position=1),
    ]
    order = prioritise(phases)
    assert [c.phase.phase_id for c in order] == [
        "api-old", "unknown", "capped", "interrupted", "abandoned", "timeout-new", "odd",
        "collection",
        "deliverables", "noop",
        "apply", "malformed", "cut-off", "tie-a", "tie-b",
        "regression", "removed", "report", "tampered",
        "exhausted", "window", "refused", "q1", "q2", "q-late-run",
    ]
    assert [c.rank for c in order] == [0] * 7 + [1] + [2] * 2 + [3] * 5 + [4] * 4 + [5] * 6
    reasons = {c.phase.phase_id: c.reason for c in order}
    assert "transient" in reasons["api-old"] and "api_error" in reasons["api-old"]
    assert reasons["odd"] == "transient failure: failed with something_new"
    assert "collection error" in reasons["collection"]
    assert reasons["exhausted"] == "needs a plan or cassette change: failed with cassette_exhausted"
    assert "queued" in reasons["q1"]


def recorded_kind_literals() -> dict[str, list[str]]:
    """Every failure kind written as a string literal where autopack records one, with where it is.

    The places: ``Failure(kind, ...)``, ``BuilderResult(ops, kind, ...)``, a ``failure_kind=`` or
    ``kind=`` keyword, an assignment to ``.failure_kind``, and the finalizer's ``(kind, reason)``
    problems. Kinds written as ``FailureKind.X`` are members by construction.
    """
    import ast

    root = Path(__file__).resolve().parent.parent / "autopack"
    found: dict[str, list[str]] = {}

    def note(node: ast.AST, path: Path) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.setdefault(node.value, []).append(f"{path.relative_to(root)}:{node.lineno}")

    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name == "Failure" and node.args:
                    note(node.args[0], path)
                if name == "BuilderResult" and len(node.args) > 1:
                    note(node.args[1], path)
                if name in ("append", "extend") and getattr(node.func.value, "id", None) == "problems":
                    for tuple_node in ast.walk(node):
                        if isinstance(tuple_node, ast.Tuple) and tuple_node.elts:
                            note(tuple_node.elts[0], path)
                for keyword in node.keywords:
                    if keyword.arg in ("failure_kind", "kind") and name in ("fail_phase", "finish_attempt"):
                        note(keyword.value, path)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets = target.elts if isinstance(target, ast.Tuple) else [target]
                    values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value] * len(targets)
                    for one, value in zip(targets, values):
                        if isinstance(one, ast.Attribute) and one.attr == "failure_kind":
                            note(value, path)
    return found


def test_every_failure_kind_the_code_records_has_a_drain_rank() -> None:
    from autopack.domain.lifecycle import RANK_LABELS, FailureKind

    literals = recorded_kind_literals()
    assert {"regression", "timeout", "no_op", "git_tampered"} <= set(literals)  # abandoned: FailureKind.ABANDONED
    unknown = {kind: where for kind, where in literals.items() if kind not in set(FailureKind)}
    assert unknown == {}, f"kinds recorded without a FailureKind (and so without a drain rank): {unknown}"
    for kind in FailureKind:
        assert 0 <= kind.rank < len(RANK_LABELS), kind


def test_the_store_refuses_to_record_a_kind_without_a_rank(wb: Workbench) -> None:
    wb.queue("r", [PhaseScript("a")])
    with wb.open_store() as store:
        phase = store.phases("r")[0]
        with pytest.raises(ValueError, match="made_up_kind"):
            store.fail_phase(phase.pk, state="failed", kind="made_up_kind", message="m", fingerprint=None,
                             decision=None)
        assert store.phases("r")[0].failure_kind is None


def test_a_queued_phase_that_was_interrupted_ranks_as_a_transient_failure() -> None:
    from autopack.drain import prioritise
    from autopack.store.drainable import DrainablePhase

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    fresh = DrainablePhase("r", "fresh", 1, "queued", None, None, 0, t0, None, None, 0)
    interrupted = replace(fresh, phase_id="interrupted", phase_pk=2, position=1, failure_kind="interrupted",
                          failed_at=t0, attempts=1)
    regression = replace(fresh, phase_id="regression", phase_pk=3, state="failed", failure_kind="regression",
                         failed_at=t0, attempts=1)
    order = prioritise([fresh, regression, interrupted])
    assert [c.phase.phase_id for c in order] == ["interrupted", "regression", "fresh"]


# -- stop rules, JUnit, dry run ----------------------------------------------------------


def file_hashes(db: Path | str) -> dict[str, object]:
    """The store's bytes (a SQLite file and its -wal/-shm), or on PostgreSQL every table's rows."""
    if not isinstance(db, Path):
        tables = [t for (t,) in rows(db, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return {t: sorted(map(repr, rows(db, f"SELECT * FROM {t}"))) for t in sorted(tables)}
    paths = {suffix: db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm")}
    return {s: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for s, p in paths.items()}


def test_zero_yield_stop_junit_xml_and_a_dry_run_that_changes_nothing(wb: Workbench) -> None:
    wb.queue("zy", [PhaseScript("good"), PhaseScript("breaks", ("break",)),
                    PhaseScript("outside", ("outside",)), PhaseScript("outside-too", ("outside",))])
    junit = wb.root / "drain.xml"
    code, summary = drain(wb, "--max-consecutive-zero-yield", "2", "--junit-xml", str(junit))

    assert code == 1
    assert drained(summary) == [("zy", "good", "complete"), ("zy", "breaks", "failed"),
                                ("zy", "outside", "failed")]
    assert "2 consecutive" in summary["stop_reason"]
    assert wb.phase_states("zy")["outside-too"] == "queued"

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"good", "breaks", "outside"}
    assert all(c.get("classname") == "zy" for c in cases.values())
    assert cases["good"].find("failure") is None
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    regression = next(p for p in summary["phases"] if p["phase_id"] == "breaks")
    assert regression["failure_kind"] == "regression" and regression["reasons"]
    failure = cases["breaks"].find("failure")
    assert all(reason in failure.get("message") for reason in regression["reasons"])
    assert "outside" in cases["outside"].find("failure").get("message")

    before = file_hashes(wb.db)
    candidates = dry_run(wb)
    text = wb.cli("drain", "--dry-run")
    picked = wb.cli("pick-next", "--explain", "--format", "json")
    assert text.returncode == 0 and picked.returncode == 0
    assert file_hashes(wb.db) == before
    # apply errors before regressions before queued phases; each with its reason
    assert [(c["phase_id"], c["rank"]) for c in candidates] == [("outside", 3), ("breaks", 4), ("outside-too", 5)]
    assert "unusable answer" in candidates[0]["reason"] and "regression" in candidates[1]["reason"]
    assert "outside" in text.stdout and "breaks" in text.stdout


def test_the_time_budget_stops_a_drain_between_phases(wb: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopack.config import load_settings
    from autopack.drain import Drainer, DrainOptions
    from autopack.runner import SilentObserver

    monkeypatch.setenv("PATH", wb.env["PATH"])
    wb.queue("timed", [PhaseScript("a"), PhaseScript("b")])
    seconds = itertools.count(0, 45)  # each look at the clock: 45 s later
    with wb.open_store() as store:
        report = Drainer(store, load_settings(wb.root, environ=wb.env), DrainOptions(max_minutes=1),
                         SilentObserver(), clock=lambda: next(seconds)).drain()
    assert [(r.phase_id, r.state) for r in report.results] == [("a", "complete")]
    assert report.stop_reason == "time budget of 1 min used"
    assert wb.phase_states("timed") == {"a": "complete", "b": "queued"}


# -- parking -----------------------------------------------------------------------------


def test_identical_failures_park_a_phase_until_include_parked(tmp_path: Path, store_db: str) -> None:
    wb = Workbench(tmp_path, store_db=store_db)
    three_identical = ("outside", "outside", "outside", "ok")
    wb.queue("drained", [PhaseScript("stuck", three_identical, max_attempts=3)])
    ran = wb.cli("run", str(wb.add_run("ran", [PhaseScript("stuck", three_identical, max_attempts=3)])))
    assert ran.returncode == 1, ran.stderr

    code, summary = drain(wb)
    # the run's phase already failed 3 times the same way: parked without a 4th attempt
    assert drained(summary) == [("drained", "stuck", "failed")]
    assert summary["phases"][0]["attempts"] == 3
    assert "same way" in summary["phases"][0]["parked"]
    assert code == 1
    assert [p["attempts"] for p in wb.status("ran")["phases"]] == [3]

    assert dry_run(wb) == []
    parked = dry_run(wb, "--include-parked")
    assert sorted(c["run_id"] for c in parked) == ["drained", "ran"]
    assert all("parked" in c["reason"] for c in parked)

    code, summary = drain(wb, "--include-parked")
    assert code == 0
    assert sorted(drained(summary)) == [("drained", "stuck", "complete"), ("ran", "stuck", "complete")]
    assert wb.commits("drained") == [("stuck", "4")] and wb.commits("ran") == [("stuck", "4")]


def test_changing_a_parked_phase_in_the_plan_unparks_it_and_a_drain_completes_the_run(wb: Workbench) -> None:
    plan = wb.add_run("fixme", [PhaseScript("stuck", ("outside",) * 3 + ("ok",), max_attempts=3),
                                PhaseScript("after", depends_on=("stuck",))])
    ran = wb.cli("run", str(plan))
    assert ran.returncode == 1, ran.stderr
    assert wb.phase_states("fixme") == {"stuck": "failed", "after": "skipped"}
    assert dry_run(wb) == []  # parked: three identical failures

    plan.write_text(plan.read_text().replace('goal = "Write out/stuck.txt"',
                                             'goal = "Write out/stuck.txt; only out/ is in scope"'))
    taken = wb.cli("run", str(plan), "--queue-only")
    assert taken.returncode == 0, taken.stderr
    assert taken.stderr == ("autopack: the plan changed: run 'fixme' takes it (phases changed: stuck); "
                            "queued again: stuck, after\n")
    assert wb.phase_states("fixme") == {"stuck": "queued", "after": "queued"}
    assert wb.status("fixme")["phases"][0]["parked"] is None
    assert [c["phase_id"] for c in dry_run(wb)] == ["stuck"]

    code, summary = drain(wb, "--run-id", "fixme")
    assert code == 0, summary
    assert wb.commits("fixme") == [("stuck", "4"), ("after", "1")]
    assert wb.cli("run", str(plan)).stderr == ""  # the run holds the changed plan now


# -- drain --run-id ----------------------------------------------------------------------


def test_drain_run_id_completes_a_run_with_five_failed_phases_and_one_queued(wb: Workbench) -> None:
    retried = [PhaseScript(f"f{n}", ("outside", "ok")) for n in range(1, 6)]
    wb.queue("ci", [*retried, PhaseScript("last")])
    code, summary = drain(wb, "--batch-size", "5")
    assert code == 1 and summary["failed"] == 5
    assert wb.phase_states("ci") == {**{f"f{n}": "failed" for n in range(1, 6)}, "last": "queued"}

    code, summary = drain(wb, "--run-id", "ci")
    assert code == 0, summary
    assert summary["run"] == {"id": "ci", "state": "complete"}
    assert summary["completed"] == 6
    assert sorted(wb.commits("ci")) == sorted([(f"f{n}", "2") for n in range(1, 6)] + [("last", "1")])


def test_a_locked_run_exits_75_for_run_id_and_is_skipped_by_a_plain_drain(wb: Workbench) -> None:
    from autopack.lock import PgRunLock, RunLock
    from autopack.store.location import PostgresUrl

    wb.queue("held", [PhaseScript("a")])
    wb.queue("free", [PhaseScript("a")])
    held = RunLock(wb.db.parent / "locks", "held") if isinstance(wb.db, Path) else PgRunLock(PostgresUrl(wb.db), "held")
    with held:
        done = wb.cli("drain", "--run-id", "held")
        assert done.returncode == 75, done.stderr
        assert "held" in done.stderr and "try again later" in done.stderr
        code, summary = drain(wb)
    assert code == 0
    assert drained(summary) == [("free", "a", "complete")]
    assert summary["busy_runs"] == ["held"]
    assert wb.phase_states("held") == {"a": "queued"}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_a_plain_drain_cannot_enter_is_named_with_why_and_exits_1(wb: Workbench, workers: int) -> None:
    wb.queue_many({"blocked": [PhaseScript("a")], "free": [PhaseScript("a")]})
    occupied = wb.state_dir / "worktrees" / "blocked"
    occupied.mkdir(parents=True)
    (occupied / "precious.txt").write_text("not autopack's\n")
    why = f"{occupied} exists but is not a git worktree"

    code, summary = drain(wb, "--workers", str(workers))

    assert code == 1  # work was left undone, though nothing drained failed
    assert drained(summary) == [("free", "a", "complete")] and summary["failed"] == 0
    assert list(summary["unavailable_runs"]) == ["blocked"] and why in summary["unavailable_runs"]["blocked"]
    assert wb.phase_states("blocked") == {"a": "queued"}
    text = wb.cli("drain", "--quiet")
    assert text.returncode == 1
    [line] = [line for line in text.stdout.splitlines() if "blocked" in line]
    assert line.startswith("not drained: run blocked: ") and why in line, text.stdout


def test_queue_only_needs_no_api_key_and_the_drain_that_executes_asks_for_one(wb: Workbench) -> None:
    """Queueing from a terminal for a drain that runs elsewhere with the key (no cassette either)."""
    plan = wb.add_run("live", [PhaseScript("a")])
    plan.write_text(plan.read_text().replace('cassette = "live.jsonl"\n', ""))
    taken = wb.cli("run", str(plan), "--queue-only")
    assert (taken.returncode, taken.stderr) == (0, ""), taken.stderr
    assert wb.phase_states("live") == {"a": "queued"}
    for option in ("--cassette", "--record"):  # they would be ignored: only the executing command uses them
        refused = wb.cli("run", str(plan), "--queue-only", option, str(wb.plans / "live.jsonl"))
        assert refused.returncode == 2 and refused.stderr.startswith("autopack: error: --queue-only"), refused.stderr

    done = wb.cli("drain", "--run-id", "live")
    assert done.returncode == 4, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("autopack: error: ANTHROPIC_API_KEY is not set"), line
    assert wb.phase_states("live") == {"a": "queued"} and wb.status("live")["phases"][0]["attempts"] == 0


def test_skipped_dependents_are_queued_again_when_a_drain_completes_their_dependency(wb: Workbench) -> None:
    plan = wb.add_run("deps", [PhaseScript("base", ("outside", "ok")), PhaseScript("next", depends_on=("base",)),
                               PhaseScript("last", depends_on=("next",))])
    ran = wb.cli("run", str(plan))
    assert ran.returncode == 1
    assert wb.phase_states("deps") == {"base": "failed", "next": "skipped", "last": "skipped"}

    code, summary = drain(wb)
    assert code == 0
    assert drained(summary) == [("deps", "base", "complete"), ("deps", "next", "complete"),
                                ("deps", "last", "complete")]
    assert wb.commits("deps") == [("base", "2"), ("next", "1"), ("last", "1")]


# -- drain-one ---------------------------------------------------------------------------


def test_drain_one_requeues_a_failed_phase_and_refuses_a_complete_one_unless_forced(wb: Workbench) -> None:
    wb.queue("one", [PhaseScript("a", ("outside", "ok", "ok")), PhaseScript("b")])
    args = ("drain-one", "--run-id", "one", "--phase-id", "a")
    assert wb.cli(*args).returncode == 1
    assert wb.phase_states("one") == {"a": "failed", "b": "queued"}

    again = wb.cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["phases"][0]["state"] == "complete"
    assert wb.phase_states("one") == {"a": "complete", "b": "queued"}

    refused = wb.cli(*args)
    assert refused.returncode == 2
    assert "already complete" in refused.stderr and "--force" in refused.stderr
    forced = wb.cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert wb.commits("one") == [("a", "2"), ("a", "3")]

    unknown = wb.cli("drain-one", "--run-id", "one", "--phase-id", "nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr and "a, b" in unknown.stderr


# -- pick-next ---------------------------------------------------------------------------


def test_pick_next_prints_the_best_run_and_nothing_when_there_is_nothing_to_drain(wb: Workbench) -> None:
    empty = wb.cli("pick-next")
    assert (empty.returncode, empty.stdout) == (0, "")
    explained = wb.cli("pick-next", "--explain")  # no empty table
    assert (explained.returncode, explained.stdout, explained.stderr) == (0, "", "nothing to drain\n")
    nulls = wb.cli("pick-next", "--format", "json")
    assert nulls.returncode == 0
    assert json.loads(nulls.stdout) == {"schema": 1, "run_id": None, "run_type": None, "score": None}

    wb.queue_many({"small": [PhaseScript("a", category="tests")]})
    plan = wb.add_run("big", [PhaseScript(n, category="docs") for n in ("a", "b", "c")], run_type="docs-sweep")
    assert wb.cli("run", str(plan), "--queue-only").returncode == 0

    text = wb.cli("pick-next")
    assert (text.returncode, text.stdout) == (0, "big\tdocs-sweep\n")
    explained = wb.cli("pick-next", "--format", "json", "--explain")
    payload = json.loads(explained.stdout)
    assert (payload["run_id"], payload["run_type"]) == ("big", "docs-sweep")
    top = {s["run_id"]: s for s in payload["top"]}
    assert top["big"]["components"]["drainable"] == 3 and top["small"]["components"]["drainable"] == 1
    assert (top["small"]["run_type"], top["small"]["type_source"]) == ("tests", "inferred")
    assert top["big"]["score"] > top["small"]["score"]
    table = wb.cli("pick-next", "--explain")
    assert table.stdout.startswith("big\tdocs-sweep\n") and "small" in table.stdout


def test_a_long_dry_run_prints_the_first_fifty_and_counts_the_rest(wb: Workbench) -> None:
    wb.queue("many", [PhaseScript(f"p{n:02d}") for n in range(55)])
    text = wb.cli("drain", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "p49" in text.stdout and "p50" not in text.stdout
    assert "5 more drainable phase(s) after these; `--json` lists them all" in text.stdout
    assert "p54" in wb.cli("drain", "--dry-run", "--batch-size", "60").stdout
    assert len(dry_run(wb)) == 55
