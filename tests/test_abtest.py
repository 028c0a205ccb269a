"""`autopack ab-test`: synthetic runs with planted usage, statistics checked against hand computation."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from autopack import abtest, abtest_pairs
from autopack import paired_stats
from autopack.abtest import compare
from autopack.abtest_pairs import Pair
from autopack.paired_stats import bootstrap_mean_ci, sign_test_p, wilcoxon_p
from autopack.cli import main
from autopack.errors import UsageError
from autopack.plan import plan_from_dict
from autopack.render_abtest import delta_bar, to_markdown
from autopack.store import open_store
from autopack.store.metrics import run_facts, run_metrics
from autopack.store.models import Attempt, Event, LlmCall, Phase, Run, SuiteRun

EXPECTED_MARKDOWN = Path(__file__).parent / "data" / "abtest_expected.md"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
BASE = "b" * 40
PHASES = ("add-power", "add-mod")


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "autopack.db") as opened:
        yield opened


def make_run(store, run_id, *, tmp_path=Path("/tmp"), flags=None, goal="Add power and modulo", models=None,
             base=BASE, version=None, created=T0, states=("complete", "complete"), calls=(),
             builder_model="claude-sonnet-5-5", wall_s=100.0, test_runs=0, events=(), cassette=None,
             evidence_runs=()):
    """A run made by the store layer, then given planted rows: calls are (role, in, out, cread, cwrite, cost)."""
    run = {"id": run_id, "goal": goal, "flags": flags or {}, "models": models or {},
           **({"cassette": cassette} if cassette else {})}
    plan = plan_from_dict({"run": run, "phases": [{"id": p, "goal": f"do {p}"} for p in PHASES]},
                          tmp_path / "plan.toml")
    store.create_run(plan=plan, repo_root=tmp_path, subdir="", base_commit=base, branch=f"autopack/{run_id}",
                     worktree=tmp_path / run_id)
    with Session(store.engine) as session:
        session.execute(update(Run).where(Run.id == run_id).values(created_at=created, **(
            {"autopack_version": version} if version else {})))
        phases = list(session.exec(select(Phase).where(Phase.run_id == run_id).order_by(Phase.position)))
        for phase, state in zip(phases, states):
            phase.state = state
        session.flush()
        if wall_s is not None:
            session.add(Attempt(phase_pk=phases[0].pk, run_id=run_id, number=1, model=builder_model,
                                state="complete", started_at=created, finished_at=created + timedelta(seconds=10)))
            session.add(Attempt(phase_pk=phases[1].pk, run_id=run_id, number=1, model=builder_model,
                                state="complete", started_at=created + timedelta(seconds=10),
                                finished_at=created + timedelta(seconds=wall_s)))
        for role, inp, out, cread, cwrite, cost in calls:
            session.add(LlmCall(run_id=run_id, role=role, model="m", input_tokens=inp, output_tokens=out,
                                cache_read_tokens=cread, cache_write_tokens=cwrite, cost_usd=cost))
        for _ in range(test_runs):
            session.add(SuiteRun(run_id=run_id, kind="attempt", command="pytest"))
        for kind in evidence_runs:
            session.add(SuiteRun(run_id=run_id, kind=kind, command="pytest"))
        for kind in events:
            session.add(Event(run_id=run_id, kind=kind))
        session.commit()


# Six pairs with planted numbers; pair 3 has another base commit (warned, still included) and
# pair 7's plans differ (excluded). Deltas (treatment - control), by hand:
TOKEN_DELTAS = [-100, -200, -300, -400, -500, 50]
CONTROL_COST, TREATMENT_COSTS = 0.10, [0.08, 0.09, 0.10, 0.07, 0.12, 0.05]
TREATMENT_WALLS = [90.0, 110.0, 100.0, 80.0, 95.0, 70.0]  # control: 100 s each


def planted(store, tmp_path):
    for i in range(6):
        c_states = ("complete", "failed") if i == 0 else ("complete", "complete")
        t_states = ("complete", "failed") if i == 1 else ("complete", "complete")
        make_run(store, f"c{i + 1}", tmp_path=tmp_path, created=T0 + timedelta(hours=i), states=c_states,
                 calls=[("builder", 1000, 0, 0, 0, CONTROL_COST)], test_runs=2, events=["escalation"])
        make_run(store, f"t{i + 1}", tmp_path=tmp_path, flags={"hardening": True}, states=t_states,
                 created=T0 + timedelta(hours=i, minutes=30), base=BASE if i != 2 else "c" * 40,
                 calls=[("builder", 1000 + TOKEN_DELTAS[i], 0, 0, 0, TREATMENT_COSTS[i])],
                 wall_s=TREATMENT_WALLS[i], test_runs=2 + (i % 2), events=["escalation"])
    make_run(store, "c7", tmp_path=tmp_path, calls=[("builder", 9, 0, 0, 0, 9.0)])
    make_run(store, "t7", tmp_path=tmp_path, goal="Another goal", calls=[("builder", 1, 0, 0, 0, 0.0)])
    return [Pair(f"c{i}", f"t{i}") for i in range(1, 8)]


# -- pure statistics ------------------------------------------------------------------

def test_sign_and_wilcoxon_p_values_match_hand_computation():
    # all six positive: W+ = 21 is the most extreme of 2**6 sign patterns, both tails: 2/64
    assert sign_test_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)
    assert wilcoxon_p([1, 2, 3, 4, 5, 6]) == (pytest.approx(2 / 64), "exact")
    # one negative, the smallest: W+ = 20 (patterns with W- <= 1: {}, {1}) -> 4/64; sign: 2*(1+6)/64
    assert wilcoxon_p([-1, 2, 3, 4, 5, 6])[0] == pytest.approx(4 / 64)
    assert sign_test_p([-1, 2, 3, 4, 5, 6]) == pytest.approx(14 / 64)
    # zeros are dropped; nothing left means no evidence at all
    assert sign_test_p([0, 0, 0]) == 1.0 and wilcoxon_p([0, 0])[0] == 1.0


def test_wilcoxon_with_ties_equals_enumerating_every_sign_pattern():
    deltas = [1, 1, 2, -2, 3, 4]
    ranks = {1: 1.5, 2: 3.5, 3: 5, 4: 6}  # average ranks of |d|
    observed = sum(ranks[abs(d)] for d in deltas if d > 0)  # 17.5
    sums = [sum(ranks[abs(d)] for d, s in zip(deltas, signs) if s)
            for signs in itertools.product((0, 1), repeat=len(deltas))]
    lower = sum(s <= observed for s in sums) / 64
    upper = sum(s >= observed for s in sums) / 64
    assert wilcoxon_p(deltas) == (pytest.approx(2 * min(lower, upper)), "exact")
    # ranks 1.5, 1.5, 3..7; W- = 3; sign patterns with W- <= 3: {}, {1.5}, {1.5'}, {1.5, 1.5'}, {3}
    assert wilcoxon_p([-1, -1, 2, 3, 4, 5, 6])[0] == pytest.approx(2 * 5 / 128)


def test_wilcoxon_uses_the_normal_approximation_past_25_pairs():
    deltas = list(range(1, 31))  # all positive: W+ = 465
    z = (465 - 30 * 31 / 4) / math.sqrt(30 * 31 * 61 / 24)
    p, method = wilcoxon_p(deltas)
    assert method == "normal" and p == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_bootstrap_interval_is_seeded_and_exact_where_the_answer_is_known():
    # two deltas 0 and 2: resampled means are 0, 1 or 2, with 0 and 2 each a quarter of the time
    assert bootstrap_mean_ci([0, 2], seed=1) == (0, 2)
    deltas = [-3.0, 1.0, 2.0, -0.5, 4.0, 0.25, -1.0]
    first = bootstrap_mean_ci(deltas, seed=7)
    assert first == bootstrap_mean_ci(deltas, seed=7)
    assert first[0] < sum(deltas) / len(deltas) < first[1]
    assert bootstrap_mean_ci([5.0], seed=7) is None
    assert bootstrap_mean_ci([2, 2, 2], seed=7) == (2, 2)


def test_bootstrap_packs_metrics_without_changing_any_interval():
    """Several metrics resampled at once give what resampling each one directly gives."""
    columns = [[3, -1, 4, -1, 5, -9, 2, 6], [0.125, -0.5, 0.25, 0.0, -0.375, 1.5, 0.0, -0.25], [2] * 8]
    boot = paired_stats.Bootstrap(seed=4, resamples=2000)
    for column, ci in zip(columns, boot.mean_cis(columns)):
        means = sorted(sum(column[i] for i in draw) / 8 for draw in boot.draws(8))
        low, high = paired_stats._percentile(means, 0.025), paired_stats._percentile(means, 0.975)
        assert ci == (pytest.approx(low), pytest.approx(high))


def test_delta_bar_points_left_for_a_decrease_and_scales_to_the_largest():
    assert delta_bar(-10, 10, width=4) == "████│    "
    assert delta_bar(5, 10, width=4) == "    │██  "
    assert delta_bar(0, 10, width=4) == "    │    "
    assert delta_bar(0.001, 10, width=4) == "    │█   "  # any change is visible


# -- metrics from the store -----------------------------------------------------------

def test_run_metrics_are_sql_aggregates_of_the_planted_rows(store, tmp_path):
    make_run(store, "r1", tmp_path=tmp_path, states=("complete", "failed"), wall_s=75.0, test_runs=3,
             evidence_runs=("f2p", "old_tests", "f2p"), calls=[("builder", 100, 10, 5, 1, 0.5), ("builder", 200, 20, 0, 2, None),
                    ("doctor", 30, 3, 0, 0, 0.25)],
             events=["doctor_skipped", "doctor_skipped", "escalation", "rescued"])
    make_run(store, "empty", tmp_path=tmp_path, states=("queued", "queued"), wall_s=None)
    metrics = run_metrics(store, ["r1", "empty"])
    r1 = metrics["r1"]
    assert r1.tokens == {"input": 330, "output": 33, "cache_read": 5, "cache_write": 3, "total": 371}
    assert r1.tokens_by_role == {"builder": {"input": 300, "output": 30, "cache_read": 5, "cache_write": 3,
                                             "total": 338},
                                 "doctor": {"input": 30, "output": 3, "cache_read": 0, "cache_write": 0,
                                            "total": 33}}
    assert (r1.cost_usd, r1.unpriced_calls, r1.llm_calls) == (0.75, 1, 3)
    assert (r1.doctor_calls, r1.doctor_skipped, r1.escalations) == (1, 2, 1)
    assert (r1.phases_complete, r1.phases_total, r1.attempts, r1.test_runs, r1.wall_s) == (1, 2, 2, 3, 75.0)
    assert r1.evidence_runs == 3  # goal-evidence runs are counted apart from the gate's
    assert r1.phase_states == {"add-power": "complete", "add-mod": "failed"}
    empty = metrics["empty"]
    assert (empty.tokens["total"], empty.cost_usd, empty.attempts, empty.wall_s) == (0, 0.0, 0, None)
    facts = run_facts(store, ["r1", "empty", "nope"])
    assert set(facts) == {"r1", "empty"}
    assert (facts["r1"].state, facts["empty"].state) == ("failed", "queued")
    assert facts["r1"].models == {"builder": "claude-sonnet-5-5"}


# -- the report -----------------------------------------------------------------------

def test_report_statistics_match_hand_computation(store, tmp_path):
    report = compare(store, planted(store, tmp_path), seed=3)
    assert [p.included for p in report.pairs] == [True] * 6 + [False]

    tokens = report.metrics["tokens_total"]
    assert tokens.n == 6
    assert tokens.mean == pytest.approx(-1450 / 6)
    assert tokens.median == -250
    mean = -1450 / 6
    assert tokens.stdev == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in TOKEN_DELTAS) / 5))
    assert tokens.percent_change == pytest.approx(mean / 1000 * 100)
    assert tokens.sign_test_p == pytest.approx(2 * (1 + 6) / 64)  # 5 down, 1 up
    assert tokens.wilcoxon_p == pytest.approx(4 / 64)  # the only increase has rank 1: W+ = 1
    assert tokens.ci95[0] <= mean <= tokens.ci95[1]

    cost = report.metrics["cost_usd"]  # deltas -0.02 -0.01 0 -0.03 +0.02 -0.05
    assert cost.mean == pytest.approx(-0.015) and cost.median == pytest.approx(-0.015)
    assert cost.sign_test_p == pytest.approx(2 * (1 + 5) / 32)  # the zero is dropped: 4 down, 1 up
    # |d| ranks: .01 -> 1, .02 and .02 -> 2.5, .03 -> 4, .05 -> 5; W+ = 2.5; 4 of 32 patterns as low
    assert cost.wilcoxon_p == pytest.approx(8 / 32)

    assert report.metrics["wall_s"].mean == pytest.approx(sum(w - 100 for w in TREATMENT_WALLS) / 6)
    assert report.metrics["test_runs"].mean == pytest.approx(0.5)
    assert report.metrics["escalations"].mean == 0 and report.metrics["escalations"].ci95 == (0, 0)
    assert report.arms["control"].cost_per_completed_phase == pytest.approx(0.6 / 11)
    assert report.arms["treatment"].cost_per_completed_phase == pytest.approx(sum(TREATMENT_COSTS) / 11)
    assert [(f.pair, f.phase, f.complete_in) for f in report.flips] == [(1, "add-mod", "treatment"),
                                                                        (2, "add-mod", "control")]
    assert report.pairs[0].percent_change["tokens_total"] == pytest.approx(-10.0)
    assert any("tokens (all kinds): no significant difference" in line or "tokens (all kinds): the treatment "
               "is lower" in line for line in report.interpretation)
    assert compare(store, planted_pairs(), seed=3).metrics["tokens_total"].ci95 == tokens.ci95


def planted_pairs():
    return [Pair(f"c{i}", f"t{i}") for i in range(1, 8)]


def test_interval_containing_zero_reads_no_significant_difference(store, tmp_path):
    for i, delta in enumerate([-30, 20, -10, 40, -20, 10]):
        make_run(store, f"c{i}", tmp_path=tmp_path, calls=[("builder", 100, 0, 0, 0, 1.0)])
        make_run(store, f"t{i}", tmp_path=tmp_path, calls=[("builder", 100 + delta, 0, 0, 0, 1.0)])
    report = compare(store, [Pair(f"c{i}", f"t{i}") for i in range(6)])
    tokens = report.metrics["tokens_total"]
    assert tokens.ci95[0] < 0 < tokens.ci95[1] and not tokens.significant
    assert any(line.startswith("tokens (all kinds): no significant difference") for line in report.interpretation)
    assert any(line.startswith("Identical in every pair:") and "cost" in line for line in report.interpretation)


def test_every_validity_problem_is_reported_and_only_plan_mismatch_excludes(store, tmp_path):
    make_run(store, "c", tmp_path=tmp_path)
    make_run(store, "t-base", tmp_path=tmp_path, base="d" * 40)
    make_run(store, "t-model", tmp_path=tmp_path, builder_model="claude-opus-5-5")
    make_run(store, "t-plan-model", tmp_path=tmp_path, models={"doctor": "claude-opus-5-5"})
    make_run(store, "t-version", tmp_path=tmp_path, version="0.0.9")
    make_run(store, "t-running", tmp_path=tmp_path, states=("complete", "executing"))
    make_run(store, "t-plan", tmp_path=tmp_path, goal="Something else")
    pairs = [Pair("c", t) for t in ("t-base", "t-model", "t-plan-model", "t-version", "t-running", "t-plan")]
    report = compare(store, pairs)
    kinds = [[w.kind for w in p.warnings] for p in report.pairs]
    assert kinds[0] == ["base_commit"]
    assert kinds[1] == ["models", "reused_run"]
    assert "builder claude-sonnet-5-5 vs claude-opus-5-5" in report.pairs[1].warnings[0].message
    assert kinds[2][0] == "plan_mismatch" and "doctor - vs claude-opus-5-5" in report.pairs[2].warnings[1].message
    assert kinds[3] == ["autopack_version", "reused_run"]
    assert kinds[4] == ["unfinished", "reused_run"]
    assert "treatment run t-running is running" in report.pairs[4].warnings[0].message
    assert kinds[5] == ["plan_mismatch", "reused_run"]
    assert [p.included for p in report.pairs] == [True, True, False, True, True, False]
    assert report.pairs[5].warnings[0].message.startswith(
        "plans differ apart from id, flags and cassette (run.goal): excluded")
    assert "(run.models)" in report.pairs[2].warnings[0].message
    allowed = compare(store, pairs, allow_mismatch=True)
    assert all(p.included for p in allowed.pairs) and "included because of" in allowed.pairs[5].warnings[0].message
    assert "validity warnings" in allowed.interpretation[-1]


def old_comparable_hash(plan: dict) -> str:
    """The comparable hash autopack recorded before m004: the plan without run.id and run.flags only."""
    import hashlib

    run = {key: value for key, value in plan["run"].items() if key not in ("id", "flags")}
    canonical = json.dumps({**plan, "run": run}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def test_runs_recorded_before_the_cassette_left_the_hash_compare_once_migrated(tmp_path):
    """A database from before m004 holds hashes that include run.cassette; migrating recomputes them."""
    from autopack.errors import MigrationNeeded
    from autopack.store import migrate

    db = tmp_path / "autopack.db"
    with open_store(db) as store:
        make_run(store, "ctl", tmp_path=tmp_path, cassette="control.jsonl")
        make_run(store, "trt", tmp_path=tmp_path, cassette="treatment.jsonl")
        make_run(store, "other", tmp_path=tmp_path, cassette="control.jsonl", goal="Another goal")
    conn = sqlite3.connect(db)
    for run_id, plan in conn.execute("SELECT id, plan FROM runs").fetchall():
        conn.execute("UPDATE runs SET comparable_hash = ? WHERE id = ?", (old_comparable_hash(json.loads(plan)), run_id))
    conn.execute("DELETE FROM _migrations WHERE name = 'm004_comparable_hash_without_cassette'")
    conn.commit()
    conn.close()
    with pytest.raises(MigrationNeeded):
        open_store(db)
    assert migrate(db).applied == ("m004_comparable_hash_without_cassette",)
    with open_store(db) as store:
        report = compare(store, [Pair("ctl", "trt"), Pair("ctl", "other")])
    assert [p.included for p in report.pairs] == [True, False]
    assert report.pairs[0].warnings == [] and report.pairs[0].cassettes == {"control": "control.jsonl",
                                                                            "treatment": "treatment.jsonl"}
    assert "(run.goal)" in report.pairs[1].warnings[0].message


def test_unknown_runs_and_self_pairs_are_usage_errors(store, tmp_path):
    make_run(store, "c", tmp_path=tmp_path)
    with pytest.raises(UsageError, match="unknown run ids: x1, x2"):
        compare(store, [Pair("c", "x1"), Pair("x2", "c")])
    with pytest.raises(UsageError, match="both control and treatment"):
        compare(store, [Pair("c", "c")])
    with pytest.raises(UsageError, match="2 runs and --treatment 1"):
        abtest_pairs.pairs_from_arms(["a", "b"], ["c"])


def test_by_flag_pairs_same_plan_runs_differing_only_in_that_flag(store, tmp_path):
    hour = timedelta(hours=1)
    make_run(store, "off-1", tmp_path=tmp_path, flags={"hardening": False}, created=T0)
    make_run(store, "on-1", tmp_path=tmp_path, flags={"hardening": True}, created=T0 + hour)
    make_run(store, "absent", tmp_path=tmp_path, created=T0 + 2 * hour)
    make_run(store, "on-2", tmp_path=tmp_path, flags={"hardening": True}, created=T0 + 3 * hour)
    make_run(store, "on-3", tmp_path=tmp_path, flags={"hardening": "yes"}, created=T0 + 4 * hour)
    make_run(store, "other-flag", tmp_path=tmp_path, flags={"hardening": True, "fast": 1}, created=T0)
    make_run(store, "other-plan", tmp_path=tmp_path, goal="Other", flags={"hardening": False}, created=T0)
    pairs, unpaired = abtest_pairs.pairs_by_flag(run_facts(store).values(), "hardening")
    assert pairs == [Pair("off-1", "on-1"), Pair("absent", "on-2")]
    assert sorted(unpaired) == ["on-3", "other-flag", "other-plan"]
    assert not abtest_pairs.flag_is_on("off") and not abtest_pairs.flag_is_on(0) and abtest_pairs.flag_is_on("v2")


def test_json_keys_are_stable(store, tmp_path):
    data = compare(store, planted(store, tmp_path)).to_dict()
    assert set(data) == {"schema", "seed", "resamples", "allow_mismatch", "pairs", "metrics", "arms", "flips",
                         "notes", "interpretation"}
    assert data["schema"] == 1
    assert set(data["pairs"][0]) == {"index", "control", "treatment", "cassettes", "included", "warnings",
                                     "control_metrics", "treatment_metrics", "deltas", "percent_change"}
    assert data["pairs"][0]["cassettes"] == {"control": None, "treatment": None}
    assert set(data["pairs"][0]["control_metrics"]) == {
        "run_id", "tokens", "tokens_by_role", "cost_usd", "unpriced_calls", "llm_calls", "doctor_calls",
        "doctor_skipped", "phases_complete", "phases_total", "attempts", "escalations", "test_runs", "wall_s",
        "phase_states", "evidence_runs"}
    assert set(data["pairs"][2]["warnings"][0]) == {"kind", "message"}
    assert list(data["metrics"]) == [m.name for m in abtest.METRICS] == list(data["pairs"][0]["deltas"])
    assert set(data["metrics"]["cost_usd"]) == {
        "label", "unit", "n", "control_mean", "treatment_mean", "mean", "median", "stdev", "ci95",
        "percent_change", "sign_test_p", "wilcoxon_p", "wilcoxon_method", "significant"}
    assert set(data["arms"]) == {"control", "treatment"}
    assert set(data["arms"]["control"]) == {"runs", "cost_usd", "phases_complete", "cost_per_completed_phase"}
    assert set(data["flips"][0]) == {"pair", "control", "treatment", "phase", "complete_in"}


def test_markdown_report_matches_the_expected_file(store, tmp_path):
    markdown = to_markdown(compare(store, planted(store, tmp_path), seed=3))
    if os.environ.get("AUTOPACK_REGENERATE"):
        EXPECTED_MARKDOWN.write_text(markdown, encoding="utf-8")
    assert markdown == EXPECTED_MARKDOWN.read_text(encoding="utf-8")


# -- the command ----------------------------------------------------------------------

def autopack(cwd, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOPACK_")}
    return subprocess.run([sys.executable, "-m", "autopack", "ab-test", "--db", str(cwd / "autopack.db"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_cli_outputs_and_exit_codes(store, tmp_path):
    planted(store, tmp_path)
    done = autopack(tmp_path, "--control", "c1,c2", "--control", "c3", "--treatment", "t1", "--treatment", "t2",
                    "--treatment", "t3", "--json", "-", "--markdown", "report.md", "--seed", "3")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [p["treatment"] for p in data["pairs"]] == ["t1", "t2", "t3"]
    assert "pair 3 (c3 → t3): base commits differ" in done.stderr
    assert (tmp_path / "report.md").read_text().startswith("# A/B test: 3 pairs, 3 included")

    shown = autopack(tmp_path, *(f"--pair=c{i}:t{i}" for i in range(1, 8)))
    assert shown.returncode == 0, shown.stderr
    assert "A/B test: 7 pairs, 6 included" in shown.stdout and "plans differ" in shown.stdout

    unknown = autopack(tmp_path, "--pair", "c1:nope", "--pair", "gone:t1")
    assert unknown.returncode == 2 and "unknown run ids: nope, gone" in unknown.stderr
    excluded = autopack(tmp_path, "--pair", "c7:t7", "--json", "out.json")
    assert excluded.returncode == 2 and "--allow-mismatch" in excluded.stderr
    assert json.loads((tmp_path / "out.json").read_text())["pairs"][0]["included"] is False


def in_process(capsys, tmp_path, *args):
    """The same entry point in this process (for the quick cases): exit code and stderr."""
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["ab-test", "--db", str(tmp_path / "autopack.db"), *args])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    return exit_info.value.code, capsys.readouterr().err


def test_cli_usage_errors_and_by_flag(store, tmp_path, capsys):
    planted(store, tmp_path)
    code, err = in_process(capsys, tmp_path, "--control", "c1", "--control", "c2", "--treatment", "t1")
    assert code == 2 and "give the same number" in err
    code, err = in_process(capsys, tmp_path, "--pair", "c1:t1", "--by-flag", "hardening")
    assert code == 2 and "exactly one of" in err
    code, err = in_process(capsys, tmp_path, "--pair", "c1-t1")
    assert code == 2 and "expected CONTROL_RUN:TREATMENT_RUN" in err
    code, err = in_process(capsys, tmp_path, "--by-flag", "nothing-has-this")
    assert code == 2 and "differ only in flag 'nothing-has-this'" in err
    code, _ = in_process(capsys, tmp_path, "--by-flag", "hardening", "--json", str(tmp_path / "by-flag.json"))
    assert code in (0, None)
    pairs = [(p["control"], p["treatment"]) for p in json.loads((tmp_path / "by-flag.json").read_text())["pairs"]]
    assert pairs[:2] == [("c1", "t1"), ("c7", "t2")]  # c7 was created with c1, before t1; t7 is another plan


def test_two_runs_of_one_plan_from_two_cassettes_are_paired_with_their_cassettes_shown(tmp_path):
    """The offline A/B: one plan, control answers vs treatment answers, through the real CLI."""
    from drainkit import Workbench, builder_line

    wb = Workbench(tmp_path)
    for arm, output_tokens, flags in (("control", 20, "{}"), ("treatment", 12, "{ tuned = true }")):
        line = builder_line("a", 1, "out/a.txt", f"{arm}\n")
        line["response"]["body"]["usage"]["output_tokens"] = output_tokens
        (wb.plans / f"{arm}.jsonl").write_text(json.dumps(line) + "\n")
        (wb.plans / f"{arm}.toml").write_text(
            f'[run]\nid = "{arm}-run"\ngoal = "Write out/a.txt"\nrepo = "../repo"\ntest_command = "python check.py"\n'
            f'junit_xml = "report.xml"\ncassette = "{arm}.jsonl"\nbuilder = "single"\nflags = {flags}\n\n'
            '[[phases]]\nid = "a"\ngoal = "Write out/a.txt"\nscope = ["out/a.txt"]\ndeliverables = ["out/a.txt"]\n')
        done = wb.cli("run", str(wb.plans / f"{arm}.toml"))
        assert done.returncode == 0, done.stderr

    shown = wb.cli("ab-test", "--pair", "control-run:treatment-run", "--markdown", "report.md")
    assert shown.returncode == 0, shown.stderr
    assert "A/B test: 1 pair, 1 included" in shown.stdout
    assert "control.jsonl → treatment.jsonl" in shown.stdout and "plan_mismatch" not in shown.stdout
    markdown = (wb.root / "report.md").read_text()
    assert "| cassettes |" in markdown and "`control.jsonl → treatment.jsonl`" in markdown
    assert "plans differ" not in markdown

    by_flag = wb.cli("ab-test", "--by-flag", "tuned", "--json", "-")
    assert by_flag.returncode == 0, by_flag.stderr
    [pair] = json.loads(by_flag.stdout)["pairs"]
    assert (pair["control"], pair["treatment"], pair["included"]) == ("control-run", "treatment-run", True)
    assert pair["cassettes"] == {"control": "control.jsonl", "treatment": "treatment.jsonl"}
    assert [w["kind"] for w in pair["warnings"]] == []
    assert pair["deltas"]["tokens_output"] == -8
