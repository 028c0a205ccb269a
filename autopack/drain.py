"""Drains: execute drainable phases across runs, safely under cron overlap, exactly in CI.

Drainable: queued phases whose dependencies are complete, and failed phases that are
not parked (each gets a new pass of up to max_attempts attempts, at most one pass per
drain). A failed phase whose last N failures share a fingerprint, or that used up its
attempts in all, is parked (park_after_identical_failures, park_after_attempts). A run
whose lock is held by another process is skipped, never waited for; a run is never
skipped because one of its phases is queued. ``drain --run-id`` holds its run's lock for
the whole drain, so a claim left by a dead executor of that run is rescued at once.

Priority (first drained first), by the failure kind's rank (autopack.domain.lifecycle):
  0 transient failures: api_error, timeout, interrupted, abandoned, push_rejected, and kinds
    this version does not know (from a database another version wrote)
  1 collection errors
  2 missing deliverables, no-op, an agent attempt that hit a limit without an edit (agent_limit)
  3 unusable answers: apply_error, malformed, truncated
  4 rejected by the tests: regression, tests_removed, report_invalid, git_tampered
  5 needs a plan or cassette change first: refusal, context_window, cassette_exhausted;
    then queued phases never attempted
A queued phase carrying a failure (interrupted, or requeued) ranks by that failure.
Ties: oldest failure first, then run creation order, then plan order.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any, Callable

from autopack.caps import CostCap, CostCapReached
from autopack.domain.lifecycle import NEEDS_PLAN_CHANGE, RANK_LABELS, PhaseState, PhaseTransition, drain_rank
from autopack.errors import AutopackError, Busy, UsageError
from autopack.events import Parked, Recovered, RunBusy, RunUnavailable



@dataclass(slots=True)  # not frozen, like the DrainablePhase it holds: one per drainable phase
class Candidate:
    phase: Any  # store.drains.DrainablePhase
    rank: int
    reason: str

    @property
    def key(self) -> str:
        return f"{self.phase.run_id}/{self.phase.phase_id}"


def prioritise(phases: list[Any]) -> list[Candidate]:
    """Order drainable phases by the documented priority, each with the reason for its place."""
    failed, far_future = PhaseState.FAILED.value, 1e18
    keyed = []
    for p in phases:
        is_failed = p.state == failed
        if is_failed or p.failure_kind:
            kind = p.failure_kind or "unknown"
            rank = drain_rank(p.failure_kind)
            how = "failed with" if is_failed else "queued again after"
            reason = f"{RANK_LABELS[rank]}: {how} {kind}"
            if p.parked_reason:
                reason += f" (parked: {p.parked_reason})"
        else:
            rank, reason = NEEDS_PLAN_CHANGE, "queued, not attempted in this pass yet"
        key = (rank, not is_failed, p.failed_at.timestamp() if p.failed_at else far_future,
               p.run_created_at.timestamp(), p.run_id, p.position)
        keyed.append((key, Candidate(p, rank, reason)))
    keyed.sort(key=itemgetter(0))
    return [candidate for _, candidate in keyed]


@dataclass(frozen=True)
class DrainOptions:
    run_id: str | None = None
    batch_size: int = 10
    max_consecutive_zero_yield: int | None = None
    max_minutes: float | None = None
    max_cost_usd: float | None = None
    include_parked: bool = False


@dataclass(frozen=True)
class PhaseResult:
    run_id: str
    phase_id: str
    state: str
    attempts: int
    kind: str | None
    message: str
    reasons: tuple[str, ...]
    duration_s: float
    parked: str | None = None


@dataclass
class DrainReport:
    results: list[PhaseResult] = field(default_factory=list)
    stop_reason: str = ""
    busy_runs: list[str] = field(default_factory=list)
    unavailable_runs: dict[str, str] = field(default_factory=dict)
    cost_usd: float = 0.0
    elapsed_s: float = 0.0

    @property
    def completed(self) -> int:
        return sum(r.state == PhaseState.COMPLETE for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.state != PhaseState.COMPLETE for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1, "processed": len(self.results), "completed": self.completed, "failed": self.failed,
            "stop_reason": self.stop_reason, "busy_runs": self.busy_runs,
            "unavailable_runs": self.unavailable_runs, "cost_usd": round(self.cost_usd, 6),
            "elapsed_s": round(self.elapsed_s, 3),
            "phases": [{"run_id": r.run_id, "phase_id": r.phase_id, "state": r.state, "attempts": r.attempts,
                        "failure_kind": r.kind, "message": r.message, "reasons": list(r.reasons),
                        "duration_s": round(r.duration_s, 3), "parked": r.parked} for r in self.results],
        }


def park_rule(settings: Any) -> Any:
    from autopack.store.drainable import ParkRule

    return ParkRule(settings.park_after_identical_failures, settings.park_after_attempts)


def plan_candidates(db: Any, settings: Any, options: DrainOptions) -> list[Candidate]:
    """The drainable phases in the order a drain takes them; reads only (``db``: a store.sql.Readable)."""
    from autopack.store.drainable import drainable_phases

    return prioritise(drainable_phases(db, options.run_id, options.include_parked, park_rule(settings)))


class Drainer:
    """One drain: a batch loop over candidates, under each run's lock in turn.

    A run's lock is kept while the next candidate comes from the same run (its phases
    in a row cost one lock and one recovery), and released as soon as another run's turns up.
    """

    def __init__(self, store: Any, settings: Any, options: DrainOptions, observer: Any,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.settings, self.options, self.observer = store, settings, options, observer
        self.clock = clock
        self.report = DrainReport()
        self._builders: dict[str, tuple[Any, Any]] = {}  # run id -> (plan, launch.ModelClients)
        self._current: tuple[str, Any, ExitStack] | None = None  # the run whose lock is held, its context

    def drain(self) -> DrainReport:
        from autopack.launch import executor
        from autopack.store.drains import park_stuck

        started = self.clock()
        self.rescue_stale()
        self._park(park_stuck(self.store, park_rule(self.settings)))
        skip: set[str] = set()
        passed: set[int] = set()  # phases given their pass in this drain
        zero_yield = 0
        with executor(self.store, self.settings) as executor_id, ExitStack() as cleanup:
            cleanup.callback(self._release)
            if self.options.run_id:  # held to the end; a dead executor's claim is recovered now
                self._context(self.options.run_id, executor_id)
            while True:
                self.report.elapsed_s = self.clock() - started
                self.report.cost_usd = self._cost(executor_id)
                stop = self._stop_reason(zero_yield)
                if stop:
                    self.report.stop_reason = stop
                    break
                candidates = [c for c in plan_candidates(self.store, self.settings, self.options)
                              if c.phase.run_id not in skip and c.phase.phase_pk not in passed]
                if not candidates:
                    self.report.stop_reason = "nothing left to drain"
                    break
                candidate = candidates[0]
                try:
                    result = self._drain_candidate(candidate, executor_id, skip)
                except CostCapReached as exc:
                    self.report.stop_reason = str(exc)
                    break
                if result is None:
                    continue
                passed.add(candidate.phase.phase_pk)
                self.report.results.append(result)
                zero_yield = 0 if result.state == PhaseState.COMPLETE else zero_yield + 1
        self.report.elapsed_s = self.clock() - started
        return self.report

    def _stop_reason(self, zero_yield: int) -> str | None:
        o = self.options
        if len(self.report.results) >= o.batch_size:
            return f"batch size {o.batch_size} reached"
        if o.max_consecutive_zero_yield and zero_yield >= o.max_consecutive_zero_yield:
            return f"{zero_yield} consecutive phases without a completion"
        if o.max_minutes is not None and self.report.elapsed_s >= o.max_minutes * 60:
            return f"time budget of {o.max_minutes:g} min used"
        if o.max_cost_usd is not None and self.report.cost_usd >= o.max_cost_usd:
            return f"cost cap reached: spent ${self.report.cost_usd:.4f} of ${o.max_cost_usd:.4f}"
        return None

    def _cost(self, executor_id: str) -> float:
        from autopack.store.drains import executor_cost

        return executor_cost(self.store, executor_id)

    def _park(self, parked: list[tuple[str, str, str]]) -> None:
        for run_id, phase_id, reason in parked:
            self.observer.notify(Parked(run_id=run_id, phase_id=phase_id, reason=reason))

    def _context(self, run_id: str, executor_id: str) -> Any:
        """The run's context under its lock, kept while consecutive phases come from this run."""
        from autopack.launch import run_lock

        if self._current and self._current[0] == run_id:
            branch = self._current[1].branch
            if branch is None or not branch.stale:
                return self._current[1]  # else a push was refused: take the run afresh
        self._release()
        with ExitStack() as stack:
            stack.enter_context(run_lock(self.settings, run_id))
            ctx = self._open(run_id, executor_id)
            self._current = (run_id, ctx, stack.pop_all())
        return ctx

    def _release(self) -> None:
        if self._current:
            self._current[2].close()
            self._current = None

    def _drain_candidate(self, candidate: Candidate, executor_id: str, skip: set[str]) -> PhaseResult | None:
        run_id = candidate.phase.run_id
        try:
            ctx = self._context(run_id, executor_id)
        except Busy:
            if self.options.run_id:
                raise
            skip.add(run_id)
            self.report.busy_runs.append(run_id)
            self.observer.notify(RunBusy(run_id=run_id))
            return None
        except AutopackError as exc:
            if self.options.run_id:
                raise
            skip.add(run_id)
            self.report.unavailable_runs[run_id] = str(exc)
            self.observer.notify(RunUnavailable(run_id=run_id, message=str(exc)))
            return None
        return self._execute(ctx, candidate, executor_id)

    def _open(self, run_id: str, executor_id: str) -> Any:
        """A RunContext for a run whose lock this drain holds (worktree ensured, dead claims recovered)."""
        from autopack.launch import connect, open_run, resume_target

        if run_id not in self._builders:
            plan, run = resume_target(self.store, self.settings, run_id)
            self._builders[run_id] = (plan, connect(self.settings, plan, None))
        plan, clients = self._builders[run_id]
        caps = ()
        if self.options.max_cost_usd is not None:
            caps = (CostCap("--max-cost", self.options.max_cost_usd, lambda: self._cost(executor_id)),)
        return open_run(self.store, self.settings, plan, self.store.get_run(run_id), clients,
                        self.observer, executor_id, caps)

    def _execute(self, ctx: Any, candidate: Candidate, executor_id: str) -> PhaseResult | None:
        """Give the candidate its pass, unless another drain changed it since it was planned."""
        from autopack.store.drainable import drainable_phases

        fresh = {p.phase_pk: p for p in drainable_phases(self.store, ctx.run.id, self.options.include_parked,
                                                         park_rule(self.settings))}
        now = fresh.get(candidate.phase.phase_pk)
        if now is None or (now.state, now.failed_at) != (candidate.phase.state, candidate.phase.failed_at):
            return None  # drained by someone else meanwhile: plan again
        return execute_claimed(ctx, now.phase_pk, executor_id, self.settings, self.observer,
                               PhaseTransition.CLAIM_NEW_PASS)

    def rescue_stale(self, now: datetime | None = None) -> None:
        """Rescue claims whose lease expired with a silent executor, for runs nobody holds."""
        from autopack.launch import run_lock
        from autopack.store.drains import stale_claims
        stale = stale_claims(self.store, now or self.store.now(), self.settings.lease_s)
        for run_id in sorted({run_id for run_id, _, _ in stale}):
            lock = run_lock(self.settings, run_id)
            try:
                lock.acquire()
            except Busy:
                continue
            try:
                for phase_id in self.store.rescue_run(run_id):
                    self.observer.notify(Recovered(run_id=run_id, phase_id=phase_id,
                                                   what="expired lease of a dead executor; phase requeued"))
            finally:
                lock.release()


def execute_claimed(ctx: Any, phase_pk: int, executor_id: str, settings: Any, observer: Any,
                    transition: PhaseTransition) -> PhaseResult | None:
    """Claim a phase through ``transition`` (from failed: a new pass, in the same statement) and give it
    one pass; None when someone else claimed it first."""
    from autopack.runner import execute_phase
    from autopack.store.drains import park_stuck

    store = ctx.store
    phase = next(p for p in store.phases(ctx.run.id) if p.pk == phase_pk)
    claimed = store.claim(ctx.run.id, phase.phase_id, executor_id, settings.lease_s, transition)
    if claimed is None:
        return None
    started = time.monotonic()
    state = execute_phase(ctx, claimed)
    store.skip_blocked(ctx.run.id)
    parked = None
    if state == PhaseState.FAILED:
        stuck = park_stuck(store, park_rule(settings), [claimed.pk])
        if stuck:
            parked = stuck[0][2]
            observer.notify(Parked(run_id=ctx.run.id, phase_id=claimed.phase_id, reason=parked))
    final = store.phase(ctx.run.id, claimed.phase_id)
    reasons = tuple((final.decision or {}).get("reasons", ()))
    return PhaseResult(ctx.run.id, final.phase_id, final.state, final.attempts, final.failure_kind,
                       final.failure_message or "", reasons, time.monotonic() - started, parked)


def drain_one(store: Any, settings: Any, run_id: str, phase_id: str, *, force: bool, observer: Any) -> PhaseResult:
    """One pass at exactly this phase: a failed phase is requeued; a complete one only with force."""
    from autopack.launch import connect, executor, open_run, resume_target, run_lock
    from autopack.sandbox import sandbox_for
    from autopack.store.drains import unmet_dependencies

    def refuse_complete(phase: Any) -> None:
        if phase.state == PhaseState.COMPLETE and not force:
            raise UsageError(f"phase '{phase_id}' of run '{run_id}' is already complete (commit "
                             f"{(phase.commit or '')[:10]}); use --force to run it again")

    plan, run = resume_target(store, settings, run_id)
    phase = store.phase(run_id, phase_id)
    if phase is None:
        known = ", ".join(p.phase_id for p in store.phases(run_id))
        raise UsageError(f"run '{run_id}' has no phase '{phase_id}' (phases: {known})")
    refuse_complete(phase)
    sandbox_for(settings, plan.run.sandbox, settings.state_dir)  # a sandbox this machine cannot build: before the claim
    clients = connect(settings, plan, None)
    with run_lock(settings, run_id), executor(store, settings, run_id) as executor_id:
        ctx = open_run(store, settings, plan, run, clients, observer, executor_id)
        phase = store.phase(run_id, phase_id)
        refuse_complete(phase)
        unmet = unmet_dependencies(store, phase.pk)
        if unmet:
            raise UsageError(f"phase '{phase_id}' depends on {', '.join(unmet)}, not complete yet; "
                             f"drain those first")
        transition = PhaseTransition.CLAIM_FORCED if force else PhaseTransition.CLAIM_PHASE
        result = execute_claimed(ctx, phase.pk, executor_id, settings, observer, transition)
    if result is None:
        raise Busy(f"phase '{phase_id}' of run '{run_id}' was claimed by another executor; try again later")
    return result
