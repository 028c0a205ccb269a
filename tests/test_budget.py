"""Builder budgets: the heuristic, history and persisted estimates, escalation and truncation rules."""

from __future__ import annotations

import pytest

from autopack.llm.budget import (STREAMING_THRESHOLD, Budget, escalated_budget, estimate_budget,
                                 is_truncated)


def estimate(**changes) -> Budget:
    fields = dict(category="feature", complexity="medium", deliverables=2, scope_files=3, scope_bytes=12000)
    fields.update(changes)
    return estimate_budget(**fields)


def test_heuristic_combines_complexity_category_deliverables_and_scope_size():
    budget = estimate()
    # 8192 × 1.25 + 2 × 1500 + 12000 / 3 = 17240, rounded up to a multiple of 512
    assert budget == Budget(17408, "heuristic", budget.detail)
    for part in ("medium 8192", "feature 1.25", "2 deliverable", "12000 bytes in 3 scope file", "17408"):
        assert part in budget.detail


@pytest.mark.parametrize("category, complexity, expected", [
    ("docs", "low", 4096),        # 3072 is under the floor
    ("tests", "low", 4096),
    ("config", "high", 12288),    # 16384 × 0.75
    ("refactor", "high", 24576),  # 16384 × 1.5
    ("bugfix", "medium", 8192),
])
def test_categories_and_complexities_scale_the_base(category, complexity, expected):
    assert estimate(category=category, complexity=complexity, deliverables=0, scope_bytes=0).max_tokens == expected


def test_a_bigger_scope_or_more_deliverables_never_lowers_the_budget():
    small = estimate(deliverables=1, scope_bytes=1000).max_tokens
    assert estimate(deliverables=3, scope_bytes=1000).max_tokens > small
    assert estimate(deliverables=1, scope_bytes=30000).max_tokens > small


def test_budgets_are_multiples_of_512_and_clamped_to_floor_and_cap():
    assert estimate(complexity="high", category="refactor", scope_bytes=10_000_000).max_tokens == 64000
    assert estimate(complexity="high", category="refactor", scope_bytes=10_000_000, cap=32000).max_tokens == 32000
    assert estimate(category="docs", complexity="low", deliverables=0, scope_bytes=0, floor=8192).max_tokens == 8192
    for scope_bytes in (1, 777, 5000, 20001):
        assert estimate(scope_bytes=scope_bytes).max_tokens % 512 == 0


def test_history_needs_three_samples_then_uses_the_median_with_headroom():
    assert estimate(history=[3000, 3000]).source == "heuristic"
    budget = estimate(history=[2000, 3000, 40000])  # the outlier does not move the median
    assert (budget.max_tokens, budget.source) == (4608, "history")  # 3000 × 1.5 = 4500 → 4608
    assert "3 completed feature/medium" in budget.detail
    assert estimate(history=[100, 200, 300]).max_tokens == 4096  # floor
    assert estimate(history=[60000] * 5).max_tokens == 64000  # cap


def test_a_persisted_escalated_budget_wins_over_history_and_heuristic():
    budget = estimate(history=[2000, 3000, 4000], persisted=34816)
    assert (budget.max_tokens, budget.source) == (34816, "persisted")
    assert estimate(persisted=90000).max_tokens == 64000


def test_unknown_category_or_complexity_is_refused():
    with pytest.raises(ValueError, match="unknown category 'chore'"):
        estimate(category="chore")
    with pytest.raises(ValueError, match="unknown complexity 'huge'"):
        estimate(complexity="huge")


def test_escalation_doubles_up_to_the_cap():
    assert escalated_budget(8192) == 16384
    assert escalated_budget(40000) == 64000
    assert escalated_budget(20000, cap=32000) == 32000
    assert escalated_budget(64000) == 64000  # nothing left to escalate to


@pytest.mark.parametrize("stop_reason, output, limit, expected", [
    ("max_tokens", 10, 4096, True),
    ("model_context_window_exceeded", 10, 4096, True),
    ("tool_use", 3892, 4096, True),   # 95.02 % of the budget: may have been cut
    ("tool_use", 3891, 4096, False),  # 94.99 %
    ("end_turn", 100, 4096, False),
    ("refusal", 0, 4096, False),
    (None, 0, 4096, False),
])
def test_truncation_rule(stop_reason, output, limit, expected):
    assert is_truncated(stop_reason, output, limit) is expected


def test_the_streaming_threshold_sits_between_the_usual_and_the_escalated_budgets():
    assert estimate().max_tokens <= STREAMING_THRESHOLD < escalated_budget(estimate().max_tokens)
