"""The calc example through the real CLI: run, status, resume, queue-only, dry run, refusals."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLE, git, rows

PHASES = ["add-power", "add-modulo", "document-operations"]
KNOWN_FAILING = "tests.test_ops::test_divide_by_zero_message"
DELTA_KEYS = {"new_failures", "fixed", "still_failing", "removed", "flaky", "collection_errors"}
PHASE_STATES = {"queued", "executing", "ci_running", "gate", "complete", "failed", "skipped"}
SHA = re.compile(r"[0-9a-f]{40}")


def cassette_usage(path: Path) -> dict[str, int]:
    totals = {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    for line in path.read_text().splitlines():
        usage = json.loads(line)["response"]["body"]["usage"]
        totals["input"] += usage["input_tokens"]
        totals["output"] += usage["output_tokens"]
        totals["cache_read"] += usage.get("cache_read_input_tokens") or 0
        totals["cache_write"] += usage.get("cache_creation_input_tokens") or 0
    return totals


def assert_contract4(status: dict[str, Any]) -> None:
    """The fields and types DESIGN.md's contract 4 promises (extra fields are allowed)."""
    assert status["schema"] == 1
    run = status["run"]
    assert run["state"] in {"complete", "failed", "running", "queued"}
    assert run["branch"] == f"autopack/{run['id']}"
    assert set(run["tokens"]) == {"input", "output", "cache_read", "cache_write"}
    assert all(isinstance(n, int) for n in run["tokens"].values())
    assert isinstance(run["cost_usd"], float)
    for phase in status["phases"]:
        assert phase["state"] in PHASE_STATES
        assert isinstance(phase["attempts"], int)
        assert phase["commit"] is None or SHA.fullmatch(phase["commit"])
        decision = phase["decision"]
        if decision is not None:
            assert decision["verdict"] in {"complete", "failed"}
            assert all(isinstance(reason, str) for reason in decision["reasons"])
            assert DELTA_KEYS <= set(decision["delta"])
            assert all(isinstance(decision["delta"][key], list) for key in DELTA_KEYS)
        failure = phase["last_failure"]
        if failure is not None:
            assert {"kind", "fingerprint", "message"} <= set(failure)


def status_json(autopack, project: Path, *args: str) -> dict[str, Any]:
    done = autopack("status", *args, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def checkout_state(project: Path) -> tuple[str, str, str]:
    return (git(project, "rev-parse", "HEAD"), git(project, "symbolic-ref", "HEAD"),
            git(project, "status", "--porcelain", "--untracked-files=all"))


@dataclass
class FinishedRun:
    project: Path
    db: Path
    before: tuple[str, str, str]
    output: str
    status: dict[str, Any]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_calc_project, autopack) -> FinishedRun:
    """The example carried out once with `autopack run plan.toml`; shared by the read-only tests."""
    project = make_calc_project(tmp_path_factory.mktemp("example"))
    before = checkout_state(project)
    done = autopack("run", "plan.toml", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    return FinishedRun(project, project / ".autopack" / "autopack.db", before, done.stdout,
                       status_json(autopack, project, "calc-demo"))


def test_status_json_follows_contract_4(finished):
    status = finished.status
    assert_contract4(status)
    run = status["run"]
    assert (run["id"], run["state"], run["branch"]) == ("calc-demo", "complete", "autopack/calc-demo")
    assert run["tokens"] == cassette_usage(EXAMPLE / "cassette.jsonl")
    assert run["cost_usd"] > 0
    phases = status["phases"]
    assert [p["id"] for p in phases] == PHASES
    assert [p["state"] for p in phases] == ["complete"] * 3
    assert [p["attempts"] for p in phases] == [1, 2, 1]
    assert all(SHA.fullmatch(p["commit"]) for p in phases)
    assert all(p["decision"]["verdict"] == "complete" and p["last_failure"] is None for p in phases)


def test_status_json_lists_each_attempts_builder_and_transcript_turns(finished):
    assert [p["transcripts"] for p in finished.status["phases"]] == [
        [{"attempt": 1, "builder": "single", "turns": 1}],
        [{"attempt": 1, "builder": "single", "turns": 1}, {"attempt": 2, "builder": "single", "turns": 1}],
        [{"attempt": 1, "builder": "single", "turns": 1}]]


def test_status_transcript_shows_an_attempts_exchange_in_full(finished, autopack):
    shown = status_json(autopack, finished.project, "calc-demo", "--transcript", "add-modulo:1")
    assert (shown["schema"], shown["phase"], shown["attempt"], shown["builder"]) == (1, "add-modulo", 1, "single")
    assert (shown["state"], shown["failure_kind"]) == ("failed", "regression")
    [exchange] = shown["exchanges"]
    assert exchange["request"]["tools"] == ["write_file", "edit_file", "delete_file"]
    assert exchange["request"]["system"].startswith("You are the builder of autopack")
    cassette = [json.loads(line) for line in (EXAMPLE / "cassette.jsonl").read_text().splitlines()]
    answer = next(c["response"]["body"] for c in cassette if (c["phase"], c["attempt"]) == ("add-modulo", 1))
    assert exchange["response"]["content"] == [
        {key: block[key] for key in ("type", "text", "id", "name", "input") if key in block}
        for block in answer["content"]]
    last = status_json(autopack, finished.project, "calc-demo", "--transcript", "add-modulo")
    assert last["attempt"] == 2
    text = autopack("status", "calc-demo", "--transcript", "add-modulo:2", cwd=finished.project)
    assert text.returncode == 0, text.stderr
    assert "attempt 2: single builder" in text.stdout and "edit_file" in text.stdout


@pytest.mark.parametrize("args, needle", [
    (("--transcript", "add-modulo:9"), "no attempt 9 of phase 'add-modulo'"),
    (("--transcript", "nope"), "no attempt of phase 'nope'"),
    (("--transcript", "add-modulo:x"), "PHASE:N"),
])
def test_status_transcript_of_no_such_attempt_is_a_usage_error(finished, autopack, args, needle):
    done = autopack("status", "calc-demo", *args, cwd=finished.project)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("autopack: error: --transcript") and needle in line, line


def test_stats_show_the_cache_hit_ratio_per_builder_mode(finished, autopack):
    stats = status_json(autopack, finished.project, "--stats")
    usage = cassette_usage(EXAMPLE / "cassette.jsonl")
    ratio = round(usage["cache_read"] / (usage["input"] + usage["cache_read"] + usage["cache_write"]), 4)
    assert stats["by_builder"] == {"single": {"attempts": 4, "builder_calls": 4, "cache_hit_ratio": ratio}}
    text = autopack("status", "--stats", cwd=finished.project)
    assert f"builder single: 4 attempts, 4 calls, cache hit ratio {ratio:.1%}" in text.stdout


def test_known_failing_test_keeps_failing_and_does_not_block(finished):
    for phase in finished.status["phases"]:
        delta = phase["decision"]["delta"]
        assert delta["still_failing"] == [KNOWN_FAILING]
        assert delta["new_failures"] == [] and delta["collection_errors"] == []
        assert phase["decision"]["absolute"]["exit_code"] != 0  # the suite fails; the delta is clean


def test_rejected_attempt_is_recorded_with_its_patch(finished):
    attempts = rows(finished.db, "SELECT a.number, a.state, a.failure_kind, a.decision, a.patch_path "
                                 "FROM attempts a JOIN phases p ON p.pk = a.phase_pk "
                                 "WHERE p.phase_id = 'add-modulo' ORDER BY a.number")
    assert [(n, state, kind) for n, state, kind, _, _ in attempts] == [(1, "failed", "regression"),
                                                                       (2, "complete", None)]
    rejected = json.loads(attempts[0][3])
    assert rejected["verdict"] == "failed"
    assert rejected["delta"]["new_failures"] == ["tests.test_ops::test_divide"]
    patch = Path(attempts[0][4])
    assert patch == finished.db.parent / "runs" / "calc-demo" / "patches" / "add-modulo-attempt-1.patch"
    assert "+    return a // b" in patch.read_text()
    commit = finished.status["phases"][1]["commit"]
    assert "return a / b" in git(finished.project, "show", f"{commit}:target/calc/ops.py")
    assert "add-modulo: attempt 1 failed: regression" in finished.output


def test_branch_has_one_commit_per_phase_with_trailers(finished):
    project, run = finished.project, finished.status["run"]
    commits = git(project, "rev-list", "--reverse", f"{run['base_commit']}..autopack/calc-demo").split()
    assert commits == [p["commit"] for p in finished.status["phases"]]
    for commit, phase_id, attempt in zip(commits, PHASES, [1, 2, 1]):
        subject = git(project, "log", "-1", "--format=%s", commit)
        assert subject == f"autopack: calc-demo / {phase_id} (attempt {attempt})"
        trailers = git(project, "log", "-1", "--format=%(trailers:only,unfold)", commit).splitlines()
        assert trailers == ["Autopack-Run: calc-demo", f"Autopack-Phase: {phase_id}",
                            f"Autopack-Attempt: {attempt}"]


def test_user_checkout_is_untouched(finished):
    assert checkout_state(finished.project) == finished.before
    assert finished.before[1:] == ("refs/heads/main", "")
    git(finished.project, "check-ignore", "-q", ".autopack/autopack.db")  # raises if not ignored


def test_worktree_is_clean_at_the_last_commit(finished):
    worktree = Path(finished.status["run"]["worktree"])
    assert worktree == finished.project / ".autopack" / "worktrees" / "calc-demo"
    assert git(worktree, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(worktree, "rev-parse", "HEAD") == finished.status["phases"][-1]["commit"]


def test_second_run_does_nothing(finished, autopack):
    counts = "SELECT (SELECT count(*) FROM attempts), (SELECT count(*) FROM llm_calls), " \
             "(SELECT count(*) FROM test_runs)"
    before = rows(finished.db, counts)
    done = autopack("run", "plan.toml", cwd=finished.project)
    assert done.returncode == 0, done.stderr
    assert rows(finished.db, counts) == before
    assert git(finished.project, "rev-parse", "autopack/calc-demo") == finished.status["phases"][-1]["commit"]
    assert status_json(autopack, finished.project, "calc-demo")["phases"] == finished.status["phases"]


def test_status_without_run_id_lists_runs(finished, autopack):
    listing = status_json(autopack, finished.project)
    assert set(listing) == {"schema", "runs", "total_runs", "executors", "stale_executors", "waiting_phases"}
    assert listing["total_runs"] == 1
    assert listing["schema"] == 1 and listing["executors"] == listing["stale_executors"] == []
    [run] = listing["runs"]
    assert (run["id"], run["state"], run["branch"]) == ("calc-demo", "complete", "autopack/calc-demo")
    assert run["tokens"] == finished.status["run"]["tokens"]


@pytest.mark.parametrize("edits, refusal", [
    ([('goal = "List every operation', 'goal = "List each operation')],
     "phases.document-operations: the phase is complete and committed in run 'calc-demo', so it cannot change"),
    ([('test_command = "python -m pytest -q"', 'test_command = "python -m pytest"')],
     "run.test_command: changed since run 'calc-demo' was recorded"),
    ([('id = "add-modulo"', 'id = "add-mod"'), ('"add-power", "add-modulo"]', '"add-power", "add-mod"]')],
     "phases cannot be added, removed or reordered"),
], ids=["complete-phase", "run-key", "phase-list"])
def test_a_plan_change_a_recorded_run_cannot_take_is_refused_and_the_database_untouched(finished, autopack, edits,
                                                                                         refusal):
    plan = finished.project / "plan.toml"
    original = changed = plan.read_text()
    db_bytes = finished.db.read_bytes()
    for old, new in edits:
        changed = changed.replace(old, new)
    plan.write_text(changed)
    try:
        done = autopack("run", "plan.toml", cwd=finished.project)
    finally:
        plan.write_text(original)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("autopack: error: plan.toml: ") and refusal in line, line
    assert finished.db.read_bytes() == db_bytes


def test_dry_run_prints_phases_in_order_and_creates_nothing(calc_project, autopack):
    done = autopack("run", "plan.toml", "--dry-run", cwd=calc_project)
    assert done.returncode == 0, done.stderr
    positions = [done.stdout.find(phase_id) for phase_id in PHASES]
    assert -1 not in positions and positions == sorted(positions), done.stdout
    assert not (calc_project / ".autopack").exists()


def test_queue_only_records_phases_then_run_id_executes_them(calc_project, autopack):
    """Also: an exhausted cassette (one line for three phases) fails the phase and `status` says why."""
    done = autopack("run", "plan.toml", "--queue-only", cwd=calc_project)
    assert done.returncode == 0, done.stderr
    queued = status_json(autopack, calc_project, "calc-demo")
    assert queued["run"]["state"] == "queued"
    assert [(p["id"], p["state"], p["attempts"]) for p in queued["phases"]] == [(p, "queued", 0) for p in PHASES]
    assert queued["run"]["tokens"] == {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0}
    assert git(calc_project, "branch", "--list", "autopack/*") == ""

    short = calc_project / "short.jsonl"
    short.write_text((calc_project / "cassette.jsonl").read_text().splitlines()[0] + "\n")
    done = autopack("run", "--run-id", "calc-demo", "--cassette", "short.jsonl", cwd=calc_project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    status = status_json(autopack, calc_project, "calc-demo")
    assert status["run"]["state"] == "failed"
    assert [(p["state"], p["attempts"]) for p in status["phases"]] == [("complete", 1), ("failed", 1),
                                                                        ("skipped", 0)]
    failure = status["phases"][1]["last_failure"]  # an exhausted cassette ends the pass at once
    assert failure["kind"] == "cassette_exhausted"
    assert "add-modulo" in failure["message"] and "attempt 1" in failure["message"]
    text = autopack("status", "calc-demo", cwd=calc_project)
    assert text.returncode == 0 and "cassette_exhausted" in text.stdout


def test_live_run_without_api_key_is_an_environment_problem(calc_project, autopack):
    plan = calc_project / "plan.toml"
    plan.write_text(plan.read_text().replace('cassette = "cassette.jsonl"\n', ""))
    done = autopack("run", "plan.toml", cwd=calc_project)
    assert done.returncode == 4
    [line] = done.stderr.splitlines()
    assert line.startswith("autopack: error: ") and "ANTHROPIC_API_KEY" in line
    assert not (calc_project / ".autopack").exists()


GOLDEN = Path(__file__).resolve().parent / "data" / "calc_single_golden.json"


def test_the_single_builder_sends_the_same_request_bytes_and_makes_the_same_decisions(calc_project, base_env):
    """The calc example (builder = "single") through the real anthropic client and its cassette, in this
    process: every request body, and every phase's decision, equal those of autopack before the agent
    builder existed (tests/data/calc_single_golden.json, captured from commit 6ae06dc)."""
    import httpx2

    from autopack import launch
    from autopack.config import load_settings
    from autopack.llm.cassette import Cassette
    from autopack.llm.client import make_client_factory
    from autopack.plan import load_plan
    from autopack.ports import SilentObserver
    from autopack.store import open_store
    from autopack.store.queries import run_status

    sent = []

    class Capturing(Cassette):
        def transport(self, role, phase, attempt):
            inner = super().transport(role, phase, attempt)

            def handle(request):
                sent.append({"role": role, "phase": phase, "attempt": attempt, "body": json.loads(request.read())})
                return inner.handle_request(request)

            return httpx2.MockTransport(handle)

    settings = load_settings(calc_project, environ={**base_env, "AUTOPACK_DB": str(calc_project / "state.db")})
    plan = load_plan(calc_project / "plan.toml")
    recorded = Cassette.load(calc_project / "cassette.jsonl")
    cassette = Capturing(list(recorded.entries), recorded.source)
    clients = launch.ModelClients(make_client_factory(cassette=cassette, api_key=None), cassette, None)
    with open_store(settings.db) as store:
        run = launch.record_run(store, plan, launch.check_new_run(settings, plan), settings)
        result = launch.execute(store, settings, plan, run, clients, SilentObserver())
        phases = run_status(store, run.id)["phases"]
    golden = json.loads(GOLDEN.read_text())
    assert result.state == "complete"
    assert sent == golden["requests"]
    assert [judged(p) for p in phases] == [judged(p) for p in golden["phases"]]


def judged(phase: dict) -> dict:
    """What a phase's outcome says about the builder's work: state, attempts, verdict, kind, counts and
    the delta as captured (the finalizer's reasons are worded by the finalizer, and its decisions gain
    keys as it learns more)."""
    decision = phase["decision"]
    delta = {key: decision["delta"][key] for key in ("new_failures", "fixed", "still_failing", "removed",
                                                      "flaky", "collection_errors", "newly_skipped", "added")}
    return {"id": phase["id"], "state": phase["state"], "attempts": phase["attempts"],
            "verdict": decision["verdict"], "failure_kind": decision["failure_kind"],
            "absolute": decision["absolute"], "delta": delta}
