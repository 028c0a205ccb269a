"""`status --stats` counts truncation the way the builder judges it (llm.budget.is_truncated)."""

from __future__ import annotations

from pathlib import Path

from drainkit import PhaseScript, Workbench

from autopack.llm.budget import is_truncated
from autopack.llm.client import CallRecord, Usage
from autopack.store.stats import telemetry

CALLS = [  # (stop_reason, output_tokens, max_tokens)
    ("max_tokens", 4096, 4096),
    ("tool_use", 3900, 4096),  # >= 95 % of the budget: near the limit
    ("tool_use", 3800, 4096),
    ("tool_use", 100, 0),  # no budget recorded: not near any limit
    ("model_context_window_exceeded", 10, 4096),
]


def test_truncated_calls_in_stats_are_the_ones_the_builder_calls_truncated(tmp_path: Path) -> None:
    wb = Workbench(tmp_path)
    wb.queue("r", [PhaseScript("a")])
    calls = [CallRecord(role="builder", model="claude-sonnet-5-5", max_tokens=budget,
                        usage=Usage(input_tokens=10, output_tokens=output), stop_reason=stop, latency_ms=1,
                        request_id=None, cost_usd=0.0, status="ok") for stop, output, budget in CALLS]
    with wb.open_store() as store:
        store.record_calls("r", "a", None, "builder", calls)
        stats = telemetry(store, "r")
    expected = sum(is_truncated(stop, output, budget) for stop, output, budget in CALLS)
    assert (stats["builder_calls"], stats["truncated_calls"]) == (5, expected) == (5, 3)


def test_every_builder_figure_matches_a_count_over_the_raw_calls(tmp_path: Path) -> None:
    """Truncation, the estimation error per category and complexity, and calls and cache per builder mode,
    which one pass over the calls computes, agree with counting the calls one by one."""
    import json
    import sqlite3
    import sys
    from collections import defaultdict
    from contextlib import closing

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.store_builder import SCALES, build_store

    from autopack.store import open_reader

    db = build_store(tmp_path / "tiny.db", SCALES["tiny"]).path
    with closing(sqlite3.connect(db)) as conn:  # vary what the generated store makes uniform
        conn.execute("UPDATE llm_calls SET predicted_tokens = output_tokens + (id % 7) * 40 WHERE id % 3 != 0")
        conn.execute("UPDATE llm_calls SET predicted_tokens = NULL WHERE id % 11 = 0")
        conn.execute("UPDATE llm_calls SET status = 'error' WHERE id % 13 = 0")
        conn.execute("UPDATE llm_calls SET stop_reason = 'max_tokens' WHERE id % 7 = 2")
        conn.execute("UPDATE llm_calls SET attempt_id = NULL WHERE id % 17 = 0")
        conn.execute("UPDATE attempts SET builder = CASE id % 3 WHEN 0 THEN 'agent' WHEN 1 THEN 'single' END")
        conn.commit()
        attempts = {row[0]: row[1:] for row in conn.execute("SELECT id, phase_pk, builder FROM attempts")}
        specs = {pk: json.loads(spec) for pk, spec in conn.execute("SELECT pk, spec FROM phases")}
        calls = conn.execute("SELECT attempt_id, status, stop_reason, output_tokens, max_tokens, predicted_tokens, "
                             "input_tokens, cache_read_tokens, cache_write_tokens FROM llm_calls "
                             "WHERE role = 'builder'").fetchall()

    ok = [c for c in calls if c[1] == "ok"]
    errors: dict[tuple, list[float]] = defaultdict(list)
    modes: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for attempt_id, status, _, output, _, predicted, inp, cread, cwrite in calls:
        if attempt_id is None:
            continue
        phase_pk, builder = attempts[attempt_id]
        mode = modes[builder or "single"]
        for i, value in enumerate((1, inp, cread, cwrite)):
            mode[i] += value
        if status == "ok" and predicted is not None and predicted + output > 0 and (builder or "single") == "single":
            spec = specs[phase_pk]
            errors[(spec.get("category"), spec.get("complexity"))].append(abs(predicted - output) * 2 / (predicted + output))

    with open_reader(db) as reader:
        stats = telemetry(reader)
    assert stats["builder_calls"] == len(ok)
    assert stats["truncated_calls"] == sum(is_truncated(c[2], c[3], c[4]) for c in ok) > 0
    assert [(row["category"], row["complexity"], row["calls"], row["smape"]) for row in stats["estimation_smape"]] == [
        (category, complexity, len(values), round(sum(values) / len(values), 4))
        for (category, complexity), values in sorted(errors.items())]
    assert any(row["smape"] > 0 for row in stats["estimation_smape"])
    assert {mode: (figures["builder_calls"], figures["cache_hit_ratio"]) for mode, figures in stats["by_builder"].items()
            if figures["builder_calls"]} == {
        mode: (n, round(cread / (inp + cread + cwrite), 4)) for mode, (n, inp, cread, cwrite) in modes.items()}
