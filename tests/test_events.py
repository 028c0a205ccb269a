"""The JSON Lines event stream (`run|drain --events FILE|-`): what a CI system or dashboard reads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from conftest import rows
from drainkit import PhaseScript, Workbench

IDS = {"schema", "event", "time", "run_id", "phase_id", "attempt"}


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, make_calc_project, autopack):
    """The calc example run once with the stream on stdout."""
    project = make_calc_project(tmp_path_factory.mktemp("events"))
    done = autopack("run", "plan.toml", "--events", "-", cwd=project)
    assert done.returncode == 0, done.stderr
    return project, done


def parse(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_every_stdout_line_is_one_event_object_and_the_views_go_to_stderr(streamed):
    _, done = streamed
    events = parse(done.stdout)  # raises on any line that is not JSON: the summary table is not here
    assert all(IDS <= set(event) and event["schema"] == 1 for event in events)
    assert all(event["time"].endswith("Z") for event in events)
    assert (events[0]["event"], events[0]["phases"]) == ("run_started", ["add-power", "add-modulo",
                                                                       "document-operations"])
    assert (events[-1]["event"], events[-1]["counts"]) == ("run_finished", {"complete": 3})
    assert "add-modulo: attempt 1 failed: regression" in done.stderr
    assert "run calc-demo: complete" in done.stderr  # the summary, off stdout


def test_the_attempt_sequence_matches_the_attempts_in_the_store(streamed):
    project, done = streamed
    events = parse(done.stdout)
    stream = [(e["phase_id"], e["attempt"], e["event"], e.get("kind") or e.get("state"))
              for e in events if e["event"] in ("attempt_started", "attempt_failed", "phase_finished")]
    stored = rows(project / ".autopack" / "autopack.db",
                  "SELECT p.phase_id, a.number, a.state, a.failure_kind FROM attempts a "
                  "JOIN phases p ON p.pk = a.phase_pk ORDER BY a.id")
    expected = []
    for phase_id, number, state, kind in stored:
        expected.append((phase_id, number, "attempt_started", None))
        expected.append((phase_id, number, "attempt_failed", kind) if state == "failed"
                        else (phase_id, number, "phase_finished", "complete"))
    assert stream == expected
    assert [s[:3] for s in stream if s[1] == 1 and s[0] == "add-modulo"][1] == ("add-modulo", 1, "attempt_failed")
    commits = {e["phase_id"]: e["commit"] for e in events if e["event"] == "phase_finished"}
    assert commits == dict(rows(project / ".autopack" / "autopack.db", "SELECT phase_id, \"commit\" FROM phases"))


def test_llm_calls_and_test_runs_carry_their_attempt_and_add_up_to_the_ledger(streamed):
    project, done = streamed
    events = parse(done.stdout)
    db = project / ".autopack" / "autopack.db"
    calls = [e for e in events if e["event"] == "llm_call"]
    assert [(e["phase_id"], e["attempt"]) for e in calls] == rows(
        db, "SELECT phase_id, (SELECT number FROM attempts WHERE id = attempt_id) FROM llm_calls ORDER BY id")
    [(tokens_in, tokens_out, cost)] = rows(db, "SELECT sum(input_tokens), sum(output_tokens), sum(cost_usd) "
                                               "FROM llm_calls")
    assert (sum(e["input_tokens"] for e in calls), sum(e["output_tokens"] for e in calls)) == (tokens_in, tokens_out)
    assert sum(e["cost_usd"] for e in calls) == pytest.approx(cost)
    tests = [(e["phase_id"], e["attempt"], e["kind"], e["counts"]["total"]) for e in events if e["event"] == "tests"]
    assert tests == rows(db, "SELECT p.phase_id, a.number, t.kind, t.total FROM test_runs t "
                             "JOIN attempts a ON a.id = t.attempt_id JOIN phases p ON p.pk = a.phase_pk ORDER BY t.id")


def test_a_drain_streams_to_a_file_while_its_log_goes_on(tmp_path: Path) -> None:
    wb = Workbench(tmp_path)
    wb.queue_many({"r": [PhaseScript("a"), PhaseScript("b", answers=("break",))]})
    done = wb.cli("drain", "--events", str(tmp_path / "events.jsonl"))
    assert done.returncode == 1, done.stderr
    assert "b: attempt 1 failed: regression" in done.stdout and "drained 2 phases" in done.stdout
    events = parse((tmp_path / "events.jsonl").read_text())
    finished = [(e["run_id"], e["phase_id"], e["state"]) for e in events if e["event"] == "phase_finished"]
    assert finished == [("r", "a", "complete"), ("r", "b", "failed")]
    assert {e["run_id"] for e in events} == {"r"}


@pytest.mark.parametrize("args, expected", [
    (("drain", "--events", "-", "--json"), "--events -: stdout carries the --json summary"),
    (("drain", "--events", "x.jsonl", "--dry-run"), "--events x.jsonl: --dry-run executes nothing"),
    (("drain", "--events", "x.jsonl", "--workers", "2"), "--events x.jsonl: --workers runs other processes"),
    (("drain", "--events", "no/such/dir/e.jsonl"), "--events no/such/dir/e.jsonl: cannot write the event stream"),
])
def test_events_options_that_cannot_work_are_usage_errors(tmp_path: Path, args, expected) -> None:
    wb = Workbench(tmp_path)
    wb.queue("r", [PhaseScript("a")])
    done = wb.cli(*args)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert expected in done.stderr
    assert wb.phase_states("r") == {"a": "queued"}


def test_an_events_path_that_cannot_be_written_records_no_run(calc_project: Path, autopack) -> None:
    done = autopack("run", "plan.toml", "--events", str(calc_project / "missing" / "e.jsonl"), cwd=calc_project)
    assert done.returncode == 2 and "cannot write the event stream" in done.stderr
    assert not (calc_project / ".autopack" / "autopack.db").exists()


def test_the_plain_log_and_the_stream_come_from_the_same_event() -> None:
    from autopack.events import EVENTS, AttemptFailed, EventWriter
    from autopack.progress import PlainObserver

    log, stream = io.StringIO(), io.StringIO()
    writer = EventWriter(stream, PlainObserver(log))
    writer.notify(AttemptFailed(run_id="r", phase_id="p", attempt=2, kind="regression", message="t::x broke"))
    [record] = parse(stream.getvalue())
    assert {k: v for k, v in record.items() if k != "time"} == {
        "schema": 1, "event": "attempt_failed", "run_id": "r", "phase_id": "p", "attempt": 2,
        "kind": "regression", "message": "t::x broke"}
    assert log.getvalue().endswith(" p: attempt 2 failed: regression: t::x broke\n")
    assert len({cls.name for cls in EVENTS}) == len(EVENTS)
