"""Issue [B] through the real CLI: budgets and escalation, API faults, cost caps, the ledger, the doctor.

Every scenario is a real ``autopack run``/``drain`` subprocess on a real git repository, fed by
a cassette written here (the real anthropic client replays it through its HTTP transport),
then read back through ``status --json``, ``status --stats --json`` and the SQLite file.
The fast scenarios use the drain workbench's ``python check.py`` suite; the doctor and
hardening scenario uses real pytest runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from autopack.caps import estimate_call_usd
from autopack.llm.budget import escalated_budget, estimate_budget
from autopack.llm.client import PRICES_PER_MTOK
from conftest import git, rows
from drainkit import Workbench

SONNET, OPUS, HAIKU = "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
DIAGNOSIS = "DIAGNOSIS-MARKER: add() subtracts; restore a + b and keep test_add passing."


# --- cassettes and plans ---------------------------------------------------------------------------

def message(*writes: tuple[str, str], stop_reason: str = "tool_use", input_tokens: int = 1200,
            output_tokens: int = 300, text: str = "Editing.") -> dict:
    """A Messages API response body whose tool_use blocks write the given (path, content) files."""
    content: list[dict] = [{"type": "text", "text": text}]
    content += [{"type": "tool_use", "id": f"toolu_{n}", "name": "write_file",
                 "input": {"path": path, "content": body}} for n, (path, body) in enumerate(writes)]
    return {"id": "msg_test", "type": "message", "role": "assistant", "model": SONNET, "content": content,
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def line(role: str, phase: str, attempt: int, body: dict, status: int = 200) -> dict:
    headers = {"retry-after-ms": "1"} if status >= 400 else {}  # the SDK retries at once
    return {"role": role, "phase": phase, "attempt": attempt,
            "response": {"status": status, "headers": headers, "body": body}}


def write_cassette(path: Path, lines: list[dict], mode: str = "w") -> None:
    with path.open(mode) as out:
        out.writelines(json.dumps(entry) + "\n" for entry in lines)


def write_plan(wb: Workbench, run_id: str, phases: list[dict], cassette: list[dict], *,
               pytest_suite: bool = False, extra: str = "") -> Path:
    """plans/<run_id>.toml and its cassette; each phase dict gives id, scope and optional keys."""
    test = ('test_command = "python -m pytest -q -p no:cacheprovider"' if pytest_suite
            else 'test_command = "python check.py"\njunit_xml = "report.xml"')
    lines = ["[run]", f'id = "{run_id}"', 'goal = "Exercise live Claude behaviour"', 'repo = "../repo"', test,
             f'cassette = "{run_id}.jsonl"', 'builder = "single"', extra]
    for p in phases:
        lines += ["", "[[phases]]", f'id = "{p["id"]}"', f'goal = "Phase {p["id"]}"',
                  'category = "feature"', 'complexity = "low"', f"scope = {json.dumps(p['scope'])}",
                  f"deliverables = {json.dumps(p.get('deliverables', []))}",
                  f"max_attempts = {p.get('max_attempts', 1)}"]
    plan = wb.plans / f"{run_id}.toml"
    plan.write_text("\n".join(lines) + "\n")
    write_cassette(wb.plans / f"{run_id}.jsonl", cassette)
    return plan


def heuristic_budget(deliverables: int, scope_files: int, scope_bytes: int = 0) -> int:
    """The max_tokens the runner gives a feature/low phase with no history in the database."""
    return estimate_budget(category="feature", complexity="low", deliverables=deliverables,
                           scope_files=scope_files, scope_bytes=scope_bytes).max_tokens


# --- reading the results ---------------------------------------------------------------------------

def cli_json(wb: Workbench, *args: str) -> dict:
    done = wb.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def phases_by_id(status: dict) -> dict[str, dict]:
    return {p["id"]: p for p in status["phases"]}


def attempts(db: Path, run_id: str, phase_id: str) -> list[tuple]:
    """(number, state, failure_kind, model, budget) of a phase's attempts."""
    return rows(db, "SELECT a.number, a.state, a.failure_kind, a.model, a.budget FROM attempts a "
                    "JOIN phases p ON p.pk = a.phase_pk WHERE p.run_id = ? AND p.phase_id = ? ORDER BY a.number",
                run_id, phase_id)


def calls(db: Path, run_id: str, phase_id: str, role: str = "builder") -> list[tuple]:
    """(attempt number, model, max_tokens, stop_reason, http_status) of the ledger rows, in order."""
    return rows(db, "SELECT a.number, c.model, c.max_tokens, c.stop_reason, c.http_status FROM llm_calls c "
                    "JOIN attempts a ON a.id = c.attempt_id WHERE c.run_id = ? AND c.phase_id = ? AND c.role = ? "
                    "ORDER BY c.id", run_id, phase_id, role)


def events(db: Path, run_id: str, kind: str) -> list[tuple[str, dict]]:
    return [(phase, json.loads(data)) for phase, data in
            rows(db, "SELECT phase_id, data FROM events WHERE run_id = ? AND kind = ? ORDER BY id", run_id, kind)]


def branch_files(wb: Workbench, run_id: str) -> str:
    """Every path touched by any commit on any branch, and the run branch's tree."""
    history = git(wb.repo, "log", "--all", "--name-only", "--format=", env=wb.env)
    return history + "\n" + git(wb.repo, "ls-tree", "-r", "--name-only", f"autopack/{run_id}", env=wb.env)


def assert_ledger_totals(wb: Workbench, run_id: str, status: dict, stats: dict) -> None:
    """`status` and `status --stats` totals are the sums of the llm_calls rows."""
    inp, out, cread, cwrite, cost, n = rows(
        wb.db, "SELECT SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), "
               "SUM(cost_usd), COUNT(*) FROM llm_calls WHERE run_id = ?", run_id)[0]
    assert n > 0
    assert status["run"]["tokens"] == {"input": inp, "output": out, "cache_read": cread, "cache_write": cwrite}
    assert status["run"]["cost_usd"] == round(cost, 6)
    assert stats["cost_usd"] == round(cost, 6)


# --- 1 and 2: escalate once, then truncated ----------------------------------------------------------

@pytest.fixture(scope="module")
def truncation(tmp_path_factory) -> dict:
    """One run: `grow` is cut off once and completes at the escalated budget; `stuck` is cut off twice
    (first near the limit, then by max_tokens)."""
    wb = Workbench(tmp_path_factory.mktemp("truncation"))
    base = heuristic_budget(deliverables=1, scope_files=1)  # scope out/ holds the empty out/.keep
    cut = dict(stop_reason="max_tokens", output_tokens=base)
    cassette = [
        line("builder", "grow", 1, message(("out/POISON.txt", "half a file"), **cut)),
        line("builder", "grow", 1, message(("out/grow.txt", "done\n"), output_tokens=900)),
        # all of its budget used though the model says it finished: near the limit, also cut off
        line("builder", "stuck", 1, message(("out/POISON.txt", "half"), output_tokens=base)),
        line("builder", "stuck", 1, message(("out/POISON.txt", "still half"), stop_reason="max_tokens",
                                            output_tokens=escalated_budget(base))),
    ]
    phases = [{"id": "grow", "scope": ["out/"], "deliverables": ["out/grow.txt"], "max_attempts": 2},
              {"id": "stuck", "scope": ["out/"], "deliverables": ["out/stuck.txt"], "max_attempts": 1}]
    write_plan(wb, "trunc", phases, cassette)
    done = wb.cli("run", "plans/trunc.toml")
    return {"wb": wb, "done": done, "base": base, "new": escalated_budget(base),
            "status": cli_json(wb, "status", "trunc"), "stats": cli_json(wb, "status", "--stats", "--run-id", "trunc")}


def test_truncation_escalates_once_and_completes_without_applying_the_cut_answer(truncation):
    wb, base, new = truncation["wb"], truncation["base"], truncation["new"]
    grow = phases_by_id(truncation["status"])["grow"]
    assert (grow["state"], grow["attempts"], grow["model"]) == ("complete", 1, SONNET)
    assert calls(wb.db, "trunc", "grow") == [(1, SONNET, base, "max_tokens", 200), (1, SONNET, new, "tool_use", 200)]
    assert attempts(wb.db, "trunc", "grow") == [(1, "complete", None, SONNET, base)]
    assert events(wb.db, "trunc", "escalation")[0] == (
        "grow", {"reason": "max_tokens", "utilisation": 1.0, "base": base, "new": new})
    assert rows(wb.db, "SELECT escalated_budget FROM phases WHERE phase_id = 'grow'") == [(new,)]
    worktree = Path(truncation["status"]["run"]["worktree"])
    assert (worktree / "out" / "grow.txt").read_text() == "done\n"
    assert not (worktree / "out" / "POISON.txt").exists()
    assert "POISON.txt" not in branch_files(wb, "trunc")
    assert wb.commits("trunc") == [("grow", "1")]


def test_repeated_truncation_fails_the_attempt_as_truncated_naming_both_budgets(truncation):
    wb, base, new = truncation["wb"], truncation["base"], truncation["new"]
    assert truncation["done"].returncode == 1, truncation["done"].stderr
    stuck = phases_by_id(truncation["status"])["stuck"]
    assert (stuck["state"], stuck["attempts"], stuck["commit"]) == ("failed", 1, None)
    assert stuck["last_failure"]["kind"] == "truncated"
    assert f"max_tokens={base}" in stuck["last_failure"]["message"]
    assert f"max_tokens={new}" in stuck["last_failure"]["message"]
    assert calls(wb.db, "trunc", "stuck") == [(1, SONNET, base, "tool_use", 200), (1, SONNET, new, "max_tokens", 200)]
    assert not list((Path(truncation["status"]["run"]["worktree"]) / "out").glob("POISON*"))


def test_stats_count_truncations_and_completions_after_escalation(truncation):
    stats = truncation["stats"]
    assert (stats["builder_calls"], stats["truncated_calls"], stats["truncation_rate"]) == (4, 3, 0.75)
    assert (stats["escalations"], stats["completed_after_escalation"]) == (2, 1)
    assert stats["failure_kinds"] == {"truncated": 1}
    assert stats["completed_phases"] == 1
    assert_ledger_totals(truncation["wb"], "trunc", truncation["status"], stats)


# --- 3: API errors end the pass; a drain completes the phase -----------------------------------------

def test_overloaded_api_fails_as_api_error_without_burning_attempts_then_a_drain_completes_it(tmp_path):
    wb = Workbench(tmp_path, settings={"AUTOPACK_API_MAX_RETRIES": "1"})
    cassette = [line("builder", "broken", 1, message(("out/broken.bad", "x"))),
                line("builder", "busy", 1, OVERLOADED, status=529),
                line("builder", "busy", 1, OVERLOADED, status=529)]
    phases = [{"id": "broken", "scope": ["out/broken.txt", "out/broken.bad"], "deliverables": ["out/broken.txt"]},
              {"id": "busy", "scope": ["out/busy.txt"], "deliverables": ["out/busy.txt"], "max_attempts": 3}]
    write_plan(wb, "outage", phases, cassette)
    done = wb.cli("run", "plans/outage.toml")
    assert done.returncode == 1, done.stderr

    busy = phases_by_id(wb.status("outage"))["busy"]  # `status --json`, read in this process
    assert (busy["state"], busy["attempts"]) == ("failed", 1)  # not 3: the outage ended the pass
    assert busy["last_failure"]["kind"] == "api_error" and "529" in busy["last_failure"]["message"]
    budget = heuristic_budget(deliverables=1, scope_files=0)
    assert calls(wb.db, "outage", "busy") == [(1, SONNET, budget, None, 529)] * 2  # every HTTP request is a row
    assert rows(wb.db, "SELECT status, cost_usd FROM llm_calls WHERE phase_id = 'busy'") == [("error", 0.0)] * 2

    write_cassette(wb.plans / "outage.jsonl", [line("builder", "busy", 2, message(("out/busy.txt", "ok\n")))], "a")
    drained = cli_json_exit(wb, 1, "drain", "--run-id", "outage", "--batch-size", "1")
    assert [(p["phase_id"], p["state"], p["attempts"]) for p in drained["phases"]] == [("busy", "complete", 2)]
    status = cli_json(wb, "status", "outage")
    assert {p["id"]: p["state"] for p in status["phases"]} == {"broken": "failed", "busy": "complete"}
    assert [a[:3] for a in attempts(wb.db, "outage", "busy")] == [(1, "failed", "api_error"), (2, "complete", None)]
    assert wb.commits("outage") == [("busy", "2")]
    stats = cli_json(wb, "status", "--stats", "--run-id", "outage")
    assert stats["failure_kinds"] == {"api_error": 1, "regression": 1}
    assert_ledger_totals(wb, "outage", status, stats)


def cli_json_exit(wb: Workbench, code: int, *args: str) -> dict:
    done = wb.cli(*args, "--json")
    assert done.returncode == code, done.stdout + done.stderr
    return json.loads(done.stdout)


# --- 4: cost caps --------------------------------------------------------------------------------------

def cap_between_phases(first_phase_cost: float) -> float:
    """A cap the first phase's estimate fits under but first cost + second estimate does not.

    A phase's estimate is at least its budget's output at the builder's price; its prompt adds
    well under half of the first phase's cost (a few thousand characters).
    """
    output_only = estimate_call_usd(SONNET, 0, heuristic_budget(deliverables=1, scope_files=0))
    return round(output_only + first_phase_cost / 2, 4)


def test_cost_cap_stops_after_one_phase_and_holds_across_restarts(tmp_path):
    wb = Workbench(tmp_path)
    per_input, per_output = PRICES_PER_MTOK[SONNET][:2]
    first_cost = (1000 * per_input + 4000 * per_output) / 1e6
    cap = cap_between_phases(first_cost)
    cassette = [line("builder", f"p{n}", 1, message((f"out/p{n}.txt", "ok\n"), input_tokens=1000, output_tokens=4000))
                for n in (1, 2)]
    phases = [{"id": f"p{n}", "scope": [f"out/p{n}.txt"], "deliverables": [f"out/p{n}.txt"]} for n in (1, 2)]
    write_plan(wb, "capped", phases, cassette, extra=f"\n[run.limits]\nmax_cost_usd = {cap}")
    done = wb.cli("run", "plans/capped.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    assert_stopped_by_cap(done.stderr, "run.limits.max_cost_usd", cap, first_cost)
    untouched_after_cap(wb, "capped")

    again = wb.cli("run", "--run-id", "capped")
    assert again.returncode == 1, again.stdout + again.stderr
    assert_stopped_by_cap(again.stderr, "run.limits.max_cost_usd", cap, first_cost)
    untouched_after_cap(wb, "capped", wb.status("capped"))
    assert [phase for phase, _ in events(wb.db, "capped", "cost_cap")] == ["p2", "p2"]


def test_max_cost_flag_stops_the_run_the_same_way(tmp_path):
    wb = Workbench(tmp_path)
    first_cost = (1000 * PRICES_PER_MTOK[SONNET][0] + 4000 * PRICES_PER_MTOK[SONNET][1]) / 1e6
    cap = cap_between_phases(first_cost)
    cassette = [line("builder", f"p{n}", 1, message((f"out/p{n}.txt", "ok\n"), input_tokens=1000, output_tokens=4000))
                for n in (1, 2)]
    phases = [{"id": f"p{n}", "scope": [f"out/p{n}.txt"], "deliverables": [f"out/p{n}.txt"]} for n in (1, 2)]
    write_plan(wb, "flagged", phases, cassette)
    done = wb.cli("run", "plans/flagged.toml", "--max-cost", str(cap))
    assert done.returncode == 1, done.stdout + done.stderr
    assert_stopped_by_cap(done.stderr, "--max-cost", cap, first_cost)
    untouched_after_cap(wb, "flagged", wb.status("flagged"))


def test_a_cost_cap_refuses_the_escalated_call_and_the_attempt_fails_as_truncated(tmp_path):
    """The first call fits under the cap; after it was cut off, its cost plus the escalated call's
    estimate does not: the escalated call is not made, and the cut answer is not applied."""
    wb = Workbench(tmp_path)
    base = heuristic_budget(deliverables=1, scope_files=0)
    new, per_output = escalated_budget(base), PRICES_PER_MTOK[SONNET][1]
    cap = round((base + new / 2) * per_output / 1e6, 4)
    cassette = [line("builder", "p1", 1, message(("out/POISON.txt", "half"), stop_reason="max_tokens",
                                                 output_tokens=base)),
                line("builder", "p1", 1, message(("out/p1.txt", "ok\n"), output_tokens=900))]
    phases = [{"id": "p1", "scope": ["out/p1.txt"], "deliverables": ["out/p1.txt"]}]
    write_plan(wb, "refused", phases, cassette, extra=f"\n[run.limits]\nmax_cost_usd = {cap}")
    done = wb.cli("run", "plans/refused.toml")
    assert done.returncode == 1, done.stdout + done.stderr
    [(number, state, kind, _, budget)] = attempts(wb.db, "refused", "p1")
    assert (number, state, kind, budget) == (1, "failed", "truncated", base)
    failure = wb.status("refused")["phases"][0]["last_failure"]["message"]
    assert f"escalated call (max_tokens={new}) was not made" in failure and "run.limits.max_cost_usd" in failure
    assert calls(wb.db, "refused", "p1") == [(1, SONNET, base, "max_tokens", 200)]
    assert "POISON" not in branch_files(wb, "refused")


def assert_stopped_by_cap(stderr: str, label: str, cap: float, spent: float) -> None:
    assert "cost" in stderr and label in stderr, stderr
    assert f"${cap:.4f}" in stderr and f"spent ${spent:.4f}" in stderr, stderr
    estimate = float(re.search(r"estimated at \$(\d+\.\d+)", stderr).group(1))
    assert spent + estimate > cap >= estimate


def untouched_after_cap(wb: Workbench, run_id: str, status: dict | None = None) -> None:
    """p1 complete with one call; p2 queued as if never claimed: no attempt, no call, no commit."""
    status = phases_by_id(status or cli_json(wb, "status", run_id))
    assert [(p["state"], p["attempts"], p["last_failure"]) for p in status.values()] == [
        ("complete", 1, None), ("queued", 0, None)]
    assert status["p2"]["commit"] is None
    assert rows(wb.db, "SELECT phase_id FROM llm_calls WHERE run_id = ?", run_id) == [("p1",)]
    assert rows(wb.db, "SELECT COUNT(*) FROM attempts WHERE run_id = ?", run_id) == [(1,)]
    assert wb.commits(run_id) == [("p1", "1")]


# --- 6 and 8: hardening or the doctor after a failure; the model ladder ------------------------------

CALC = "def add(a, b):\n    return a + b\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
TEST_POWER = "from power import power\n\n\ndef test_power():\n    assert power(2, 3) == 8\n"


@pytest.fixture(scope="module")
def advised(tmp_path_factory) -> dict:
    """`add-mul` regresses test_add (the doctor diagnoses it), `power` imports a module it never wrote
    (a known pattern: no doctor); both complete at attempt 2 with the escalation model."""
    wb = Workbench(tmp_path_factory.mktemp("advised"))
    (wb.repo / "calc.py").write_text(CALC)
    (wb.repo / "tests").mkdir()
    (wb.repo / "tests" / "test_calc.py").write_text(TEST_CALC)
    git(wb.repo, "add", "-A", env=wb.env)
    git(wb.repo, "commit", "-q", "-m", "calc", env=wb.env)
    mul = CALC + "\n\ndef mul(a, b):\n    return a * b\n"
    cassette = [
        line("builder", "add-mul", 1, message(("calc.py", "def add(a, b):\n    return a - b\n"))),
        line("doctor", "add-mul", 1, message(text=DIAGNOSIS, stop_reason="end_turn", input_tokens=800, output_tokens=120)),
        line("builder", "add-mul", 2, message(("calc.py", mul), ("tests/test_mul.py",
             "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"))),
        line("builder", "power", 1, message(("tests/test_power.py", TEST_POWER))),
        line("doctor", "power", 1, message(text="never served", input_tokens=5, output_tokens=5)),
        line("builder", "power", 2, message(("power.py", "def power(a, b):\n    return a ** b\n"),
                                            ("tests/test_power.py", TEST_POWER))),
    ]
    phases = [{"id": "add-mul", "scope": ["calc.py", "tests/"], "max_attempts": 2},
              {"id": "power", "scope": ["power.py", "tests/test_power.py"],
               "deliverables": ["tests/test_power.py"], "max_attempts": 2}]
    write_plan(wb, "advice", phases, cassette, pytest_suite=True,
               extra=f'\n[run.models]\nbuilder = "{SONNET}"\ndoctor = "{HAIKU}"\nescalation = "{OPUS}"')
    done = wb.cli("run", "plans/advice.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    return {"wb": wb, "status": cli_json(wb, "status", "advice"),
            "stats": cli_json(wb, "status", "--stats", "--run-id", "advice")}


def test_doctor_is_called_for_a_plain_regression_and_its_line_consumed(advised):
    wb = advised["wb"]
    assert [a[:3] for a in attempts(wb.db, "advice", "add-mul")] == [(1, "failed", "regression"),
                                                                      (2, "complete", None)]
    assert calls(wb.db, "advice", "add-mul", "doctor") == [(1, HAIKU, 1024, "end_turn", 200)]
    assert not [e for e in events(wb.db, "advice", "doctor_skipped") if e[0] == "add-mul"]


def test_doctor_is_skipped_when_a_hardening_pattern_matches(advised):
    wb = advised["wb"]
    assert [a[:3] for a in attempts(wb.db, "advice", "power")] == [(1, "failed", "collection_error"),
                                                                    (2, "complete", None)]
    assert calls(wb.db, "advice", "power", "doctor") == []  # its doctor line was never requested
    [(phase, skipped)] = events(wb.db, "advice", "doctor_skipped")
    assert phase == "power"
    assert skipped["reason"] == "hardening:missing_python_module"
    # what it avoided: the median of this database's doctor calls (add-mul's, 800 + 120 tokens)
    assert (skipped["tokens_avoided"], skipped["sample_size"]) == (920, 1)
    doctor = advised["stats"]["doctor"]
    assert (doctor["calls"], doctor["skipped"], doctor["tokens_avoided"]) == (1, 1, 920)
    assert doctor["skipped_by_reason"] == {"hardening:missing_python_module": 1}


def test_the_last_attempt_of_a_pass_uses_the_escalation_model(advised):
    wb = advised["wb"]
    for phase_id in ("add-mul", "power"):
        assert [(n, model) for n, _, _, model, _ in attempts(wb.db, "advice", phase_id)] == [(1, SONNET), (2, OPUS)]
        assert [(n, model) for n, model, *_ in calls(wb.db, "advice", phase_id)] == [(1, SONNET), (2, OPUS)]
        assert phases_by_id(advised["status"])[phase_id]["model"] == OPUS


def test_ledger_totals_equal_status_totals_across_models_and_roles(advised):
    wb = advised["wb"]
    by_model = dict(rows(wb.db, "SELECT model, COUNT(*) FROM llm_calls WHERE run_id = 'advice' GROUP BY model"))
    assert by_model == {SONNET: 2, OPUS: 2, HAIKU: 1}
    assert_ledger_totals(wb, "advice", advised["status"], advised["stats"])
    assert advised["status"]["run"]["cost_usd"] > 0
