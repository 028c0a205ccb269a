"""Cost caps, checked before every LLM call with that call's estimate.

A cap is never overshot by more than one call: the check uses what the ledger says was
spent (so caps hold across restarts) plus the estimate of the call about to be made
(prompt size / 4 input tokens, the full max_tokens budget as output). Calls to a model
with no price cannot be estimated and count as $0 against a cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from autopack.errors import AutopackError


class CostCapReached(AutopackError):
    """A cost cap stopped the work; untouched phases stay queued (exit 1)."""


@dataclass(frozen=True)
class CostCap:
    label: str  # where the cap comes from: "run.limits.max_cost_usd", "--max-cost"
    limit_usd: float
    spent: Callable[[], float]

    def check(self, estimate_usd: float | None, unrecorded_usd: float = 0.0) -> None:
        """Raise CostCapReached if the ledger's spend, plus ``unrecorded_usd`` (calls of this attempt
        not in the ledger yet), plus the estimate would pass the limit."""
        spent = self.spent() + unrecorded_usd
        estimate = estimate_usd or 0.0
        if spent + estimate > self.limit_usd:
            raise CostCapReached(
                f"cost cap reached ({self.label} = ${self.limit_usd:.4f}): spent ${spent:.4f}, the next call "
                f"is estimated at ${estimate:.4f}; untouched phases stay queued"
            )


def estimate_call_usd(model: str, prompt_chars: int, max_tokens: int, prices: Mapping | None = None) -> float | None:
    from autopack.llm.client import Usage, cost_usd

    return cost_usd(model, Usage(input_tokens=prompt_chars // 4, output_tokens=max_tokens), prices)


def check_caps(caps: Sequence[CostCap], model: str, prompt_chars: int, max_tokens: int,
               prices: Mapping | None = None, unrecorded_usd: float = 0.0) -> None:
    """Raise CostCapReached when the call about to be made (plus ``unrecorded_usd``, spent by calls the
    ledger does not hold yet) could take spending past any of ``caps``."""
    estimate = estimate_call_usd(model, prompt_chars, max_tokens, prices)
    for cap in caps:
        cap.check(estimate, unrecorded_usd)
