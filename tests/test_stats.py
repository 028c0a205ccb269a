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
