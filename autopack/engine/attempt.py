"""What an attempt's builder is given: a toolbox on the worktree and a log, bound to the run.

The log checks the run's cost caps and writes each exchange's ledger rows and transcript entry
(secrets redacted) to the store as it happens, so a killed attempt's calls still count against
the caps; the observer hears of each exchange's calls (``llm_call``) then too. The toolbox's
``run_tests`` is the gate's sandboxed suite, recorded as a test run of kind ``agent``; what the
tests leave in the worktree is discarded after each run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from autopack.caps import CostCapReached, check_caps
from autopack.engine.tools import AttemptTools, ToolLimits, tools_for
from autopack.events import LlmCalls
from autopack.ports import TranscriptEntry
from autopack.redact import Redactor
from autopack.testcommand import is_pytest

if TYPE_CHECKING:
    from autopack.llm.client import CallRecord
    from autopack.runner import RunContext


class StoreAttemptLog:
    """An ``AttemptLog`` over the run's store and cost caps."""

    def __init__(self, ctx: RunContext, phase_id: str, attempt_id: int, redact: Redactor):
        self.ctx, self.phase_id, self.attempt_id, self.redact = ctx, phase_id, attempt_id, redact

    def cost_refusal(self, model: str, request_chars: int, max_tokens: int, unrecorded_usd: float = 0.0) -> str | None:
        try:
            check_caps(self.ctx.cost_caps, model, request_chars, max_tokens, self.ctx.settings.prices or None,
                       unrecorded_usd)
        except CostCapReached as exc:
            return str(exc)
        return None

    def record(self, calls: Sequence[CallRecord], entry: TranscriptEntry | None) -> None:
        if entry is not None:
            entry = TranscriptEntry(entry.turn, self.redact.value(entry.request), self.redact.value(entry.response),
                                    entry.max_tokens)
        self.ctx.store.record_calls(self.ctx.run.id, self.phase_id, self.attempt_id, "builder", calls, entry)
        self.ctx.observer.notify(LlmCalls.of(calls, run_id=self.ctx.run.id, phase_id=self.phase_id,
                                             attempt=(self.ctx.current or (None, None))[1]))


def attempt_ports(ctx: RunContext, spec: Any, attempt_id: int,
                  run_suite: Callable[[tuple[str, ...]], Any]) -> tuple[AttemptTools, StoreAttemptLog]:
    """The toolbox and the log of one attempt; ``run_suite(select)`` runs the gate's suite as kind ``agent``."""
    ws = ctx.workspace
    redact = Redactor.from_environ()

    def agent_suite(select: tuple[str, ...]) -> Any:
        ws.stage_all()  # what the builder did is kept in the index ...
        try:
            return run_suite(select)
        finally:
            ws.discard_unstaged()  # ... and what the tests did is not

    tools = tools_for(ws.project_root, ws.project_files, spec.scope,
                      limits=ToolLimits.from_settings(ctx.settings, ctx.plan.run.limits), run_tests=agent_suite,
                      selectable=is_pytest(ctx.test_command), state_dir=ctx.settings.state_dir, redact=redact)
    return tools, StoreAttemptLog(ctx, spec.id, attempt_id, redact)
