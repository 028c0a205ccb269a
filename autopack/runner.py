"""The phase state machine: one attempt, one phase, one run.

queued -> executing -> ci_running -> gate -> complete | failed (DESIGN.md). The runner
is given its collaborators (store, workspace, builder, observer) and holds the run's
lock while it works, so it is the only executor of this run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopack.adapters.git.scratch import ScratchTree
from autopack.advice import advise
from autopack.caps import CostCap, CostCapReached, check_caps
from autopack.confirm import record_confirmed
from autopack.domain.lifecycle import AttemptState, FailureKind, PhaseState
from autopack.engine.attempt import attempt_ports
from autopack.engine.branch_sync import PushRejected
from autopack.engine.evidence_runs import gather_evidence
from autopack.engine.reads import collect_files
from autopack.engine.suite_runs import baseline_report, confirm, run_suite
from autopack.errors import Interrupted, writing
from autopack.events import (AttemptFailed, AttemptStarted, CostCapHit, Escalated, PhaseFinished, RunFinished,
                             RunStarted, Step)
from autopack.failures import Failure, digest
from autopack.finalizer import NO_OP_REASON, decide, missing_deliverables
from autopack.ports import Builder, BuilderRequest, Observer, SilentObserver
from autopack.redact import Redactor
from autopack.testrun import TestReport, run_tests
from autopack.text import capped_diff
from autopack.toolchains import TestCommand, baseline_key, resolve_test_command
from autopack.workspace import GitTampered

if TYPE_CHECKING:
    from autopack.config import Settings
    from autopack.llm.doctor import Doctor
    from autopack.plan import PlanSpec
    from autopack.sandbox import Sandbox
    from autopack.store.models import Run
    from autopack.store.runs import Store
    from autopack.workspace import Workspace

# Stops that say nothing about the builder's work: the next attempt's prompt does not mention them.
NOT_THE_BUILDERS_FAULT = tuple(kind for kind in FailureKind if not kind.builders_fault)
# A builder or environment failure that another attempt in this pass cannot fix.
ENDS_PASS = tuple(kind for kind in FailureKind if kind.ends_pass)


@dataclass
class RunContext:
    """Everything one run's execution needs, passed in rather than looked up."""

    store: Store
    run: Run
    plan: PlanSpec
    workspace: Workspace
    builder: Builder
    settings: Settings
    executor_id: str
    artifacts: Path
    observer: Observer = field(default_factory=SilentObserver)
    builder_model: str = ""
    escalation_model: str = ""  # the model ladder's top rung: the last attempt of a pass
    doctor: Doctor | None = None  # None: go without diagnoses
    cost_caps: tuple[CostCap, ...] = ()
    current: tuple[str, int] | None = None  # (phase id, attempt number) in progress: the ids of its events
    sandbox: Sandbox | None = None  # every test command of the run runs in it (None: unconfined)
    branch: Any = None  # engine.branch_sync.RunBranch: the run branch's remote (None: none)

    @cached_property
    def test(self) -> TestCommand:
        """The test command: the plan's, or detected from the project's toolchain."""
        return resolve_test_command(self.workspace.project_root, self.plan.run.test_command, self.plan.run.junit_xml)

    @property
    def test_command(self) -> str:
        return self.test.command

    @cached_property
    def baseline_key(self) -> str:
        """The test command as baselines are cached by: with this machine's fingerprint."""
        return baseline_key(self.test.command)

    @property
    def test_timeout_s(self) -> float:
        return float(self.plan.run.limits.get("phase_timeout_s") or self.settings.phase_timeout_s)

    def run_tests(self, cwd: Path, *, log_path: Path, junit_path: Path, select: tuple[str, ...] = ()) -> TestReport:
        """The run's test command in ``cwd`` (its worktree, or a scratch one) with the run's timeout,
        output cap, environment allow-list and sandbox: every suite of the run starts here."""
        return run_tests(
            self.test_command, cwd, timeout_s=self.test_timeout_s, log_path=log_path, junit_path=junit_path,
            junit_xml=self.test.junit_xml, select=select, converter=self.test.converter,
            ecosystem=self.test.ecosystem, output_cap_bytes=self.settings.max_output_bytes,
            env_allow=self.settings.env_allow, sandbox=self.sandbox,
        )


@dataclass(frozen=True)
class AttemptOutcome:
    complete: bool
    failure: Failure | None = None
    digest: str | None = None
    decision: dict | None = None
    attempt: Any = None
    output_tail: str = ""
    failing: tuple = ()


def execute_run(ctx: RunContext) -> dict[str, int]:
    """Claim and execute the run's phases until none is ready; returns phase counts by state."""
    run_id = ctx.run.id
    ctx.observer.notify(RunStarted(run_id=run_id, phases=tuple(p.phase_id for p in ctx.store.phases(run_id))))
    ctx.store.skip_blocked(run_id)
    while ctx.branch is None or not ctx.branch.stale:  # stale: a push was refused, take the run afresh first
        phase = ctx.store.claim_next(run_id, ctx.executor_id, ctx.settings.lease_s)
        if phase is None:
            break
        execute_phase(ctx, phase)
        ctx.store.skip_blocked(run_id)
    ScratchTree(ctx.workspace).remove()  # the goal-evidence worktree, if an attempt needed one
    counts: dict[str, int] = {}
    for phase in ctx.store.phases(run_id):
        counts[phase.state] = counts.get(phase.state, 0) + 1
    ctx.observer.notify(RunFinished(run_id=run_id, counts=counts))
    return counts


def execute_phase(ctx: RunContext, phase: Any) -> str:
    """One pass over a claimed phase: up to max_attempts attempts. Returns the final state."""
    spec = ctx.plan.phase(phase.phase_id)
    previous = _previous_digest(phase)
    attempts_left = max(phase.max_attempts - phase.pass_attempts, 1)
    outcome: AttemptOutcome | None = None
    try:
        for n in range(attempts_left):
            last = n == attempts_left - 1
            model = _model_for(ctx, phase, last)
            outcome = run_attempt(ctx, phase, spec, previous, model)
            if outcome.complete:
                return PhaseState.COMPLETE
            if outcome.failure.kind in ENDS_PASS:
                break
            previous = outcome.digest
            if not last:
                previous = advise(ctx, phase, spec, outcome.attempt, outcome.failure, outcome.digest,
                                  outcome.output_tail, outcome.failing)
    except CostCapReached as exc:
        _release(ctx, phase, outcome, exc)
        raise
    failure = outcome.failure
    ctx.store.fail_phase(phase.pk, state=PhaseState.FAILED, kind=failure.kind, message=failure.message,
                         fingerprint=failure.fingerprint, decision=outcome.decision, fence=ctx.executor_id)
    ctx.observer.notify(PhaseFinished(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=outcome.attempt.number,
                                      state=PhaseState.FAILED, kind=failure.kind, message=failure.message))
    return PhaseState.FAILED


def _model_for(ctx: RunContext, phase: Any, last: bool) -> str:
    """The model ladder: the builder model, the escalation model for a pass's last attempt
    (when the pass has more than one) or after `escalation_after_failures` failures in the pass."""
    after = ctx.settings.escalation_after_failures
    failures_so_far = ctx.store.phase(ctx.run.id, phase.phase_id).pass_attempts
    escalate = (last and phase.max_attempts > 1) or (after > 0 and failures_so_far >= after)
    return ctx.escalation_model if escalate and ctx.escalation_model else ctx.builder_model


def _previous_digest(phase: Any) -> str | None:
    """A new pass over a failed phase starts from what its last failure taught."""
    if not phase.failure_kind or phase.failure_kind in NOT_THE_BUILDERS_FAULT:
        return None
    return digest(Failure(phase.failure_kind, phase.failure_message or ""), phase.decision)


def run_attempt(ctx: RunContext, phase: Any, spec: Any, previous_digest: str | None,
                model: str | None = None) -> AttemptOutcome:
    """One attempt: baseline, builder, apply, tests, finalize, then commit or reset."""
    store, ws = ctx.store, ctx.workspace
    model = model or ctx.builder_model
    # The request and its cost are known before anything is recorded, so a cost cap leaves
    # the phase untouched: no attempt, no baseline run, no call.
    ws.reset_clean()
    ws.seal()
    files, omitted = collect_files(ws.project_root, spec.scope, spec.context,
                                   max_bytes=ctx.settings.context_max_bytes)
    request = BuilderRequest(
        run_goal=ctx.plan.run.goal, phase_id=spec.id, phase_goal=spec.goal, category=spec.category,
        complexity=spec.complexity, acceptance=spec.acceptance, scope=spec.scope,
        scope_text=spec.scope_text, deliverables=spec.deliverables, files=files, omitted_files=omitted,
        attempt=store.phase(ctx.run.id, phase.phase_id).attempts + 1, failure_digest=previous_digest, model=model,
        context=spec.context,
    )
    budget = _budget(ctx, phase, spec, files)
    check_caps(ctx.cost_caps, model, ctx.builder.request_chars(request), budget.max_tokens,
               ctx.settings.prices or None)
    attempt = store.start_attempt(phase.pk, ctx.executor_id, model, ctx.builder.mode)
    if previous_digest:  # what this attempt was told of the last failure, for `autopack show`
        store.add_event(ctx.run.id, "failure_digest", {"text": Redactor.from_environ()(previous_digest)},
                        phase.phase_id, attempt.id)
    started = time.monotonic()
    timings = {"builder_ms": 0, "tests_ms": 0}
    notify = ctx.observer.notify
    notify(AttemptStarted(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=attempt.number,
                          max_attempts=phase.max_attempts, model=model))
    try:
        _step(ctx, phase, attempt, "baseline")
        baseline = baseline_report(ctx, attempt.id, timings)

        _step(ctx, phase, attempt, "builder")
        t0, tests_before = time.monotonic(), timings["tests_ms"]
        store.update_attempt(attempt.id, budget=budget.max_tokens, budget_source=budget.source)
        tools, log = attempt_ports(ctx, spec, attempt.id,
                                   lambda select: run_suite(ctx, attempt.id, "agent", None, timings, select)[0])
        result = ctx.builder.attempt(request, tools, log, budget.max_tokens)
        timings["builder_ms"] = int((time.monotonic() - t0) * 1000) - (timings["tests_ms"] - tests_before)
        for escalation in result.escalations:
            _record_escalation(ctx, phase, attempt, escalation)
        if result.failure_kind:
            return _fail(ctx, phase, attempt, started, timings,
                         Failure(result.failure_kind, result.message, result.evidence))

        _step(ctx, phase, attempt, "apply")
        tree_sha = ws.stage_all()
        files_changed = len(ws.staged_files())
        store.update_attempt(attempt.id, apply_stats={**tools.apply_stats(), "files_changed": files_changed},
                             tree_sha=tree_sha, **_stored_patch(ws.staged_patch() if files_changed else ""))
        if files_changed == 0 and not spec.allow_noop:  # known now: no test run can change the verdict
            return _fail(ctx, phase, attempt, started, timings, Failure("no_op", NO_OP_REASON))

        _step(ctx, phase, attempt, "tests", state=PhaseState.CI_RUNNING)
        report, test_run_id = run_suite(ctx, attempt.id, "attempt", tree_sha, timings)
        reruns = confirm(ctx, attempt.id, baseline, report, timings)

        _step(ctx, phase, attempt, "finalize", state=PhaseState.GATE)
        decision = decide(baseline, report, rerun=reruns.in_suite, rerun_alone=reruns.alone,
                          files_changed=files_changed,
                          deliverables_missing=missing_deliverables(ws.project_root, spec.deliverables),
                          allow_noop=spec.allow_noop)
        evidence = None
        if decision.verdict == "complete":
            _step(ctx, phase, attempt, "evidence")
            evidence = gather_evidence(
                ws, spec, ctx.test_command, baseline, report, decision.delta, tree_sha,
                lambda kind, tree, root, select: run_suite(ctx, attempt.id, kind, tree, timings, select, cwd=root))
            decision = decision.with_evidence(evidence)
        decision_dict = decision.to_dict()
        if decision.verdict != "complete":
            failing = [o for o in report.outcomes if o.test_id in set(decision.delta.new_failures)
                       | set(decision.delta.collection_errors)]
            failure = Failure(decision.failure_kind or "regression", "; ".join(decision.reasons),
                              evidence.details() if evidence is not None else "")
            return _fail(ctx, phase, attempt, started, timings, failure, decision_dict,
                         digest(failure, decision_dict, failing, report.output_tail),
                         output_tail=report.output_tail, failing=tuple(failing))

        _step(ctx, phase, attempt, "commit")
        store.update_attempt(attempt.id, decision=decision_dict)  # before the commit: recovery reads it
        parent = ws.head()
        commit = ws.commit_staged(
            f"autopack: {ctx.run.id} / {phase.phase_id} (attempt {attempt.number})\n\n{spec.goal}",
            {"Autopack-Run": ctx.run.id, "Autopack-Phase": phase.phase_id,
             "Autopack-Attempt": str(attempt.number)},
            staged_tree=tree_sha,
        )
        if ctx.branch is not None:  # pushed before it is recorded: a dead machine's unpushed commit is redone
            try:
                ctx.branch.publish(commit, parent)
            except PushRejected as exc:
                return _fail(ctx, phase, attempt, started, timings, Failure("push_rejected", str(exc)), decision_dict)
        with store.atomic():  # the end of the attempt is one commit: recovery finds it all done, or only the git commit
            baseline_id = record_confirmed(store, ctx.run.id, attempt.id, tree_sha, report, test_run_id, reruns)[1]
            store.save_baseline(tree_sha, ctx.baseline_key, baseline_id)
            store.finish_attempt(attempt.id, AttemptState.COMPLETE, commit=commit, **_times(started, timings))
            store.complete_phase(phase.pk, commit, decision_dict, fence=ctx.executor_id)
        notify(PhaseFinished(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=attempt.number, state="complete",
                             commit=commit, reasons=tuple(decision.reasons)))
        return AttemptOutcome(True, decision=decision_dict)
    except GitTampered as exc:
        return _fail(ctx, phase, attempt, started, timings, Failure("git_tampered", str(exc)))
    except KeyboardInterrupt:
        _interrupted(ctx, phase, attempt, started, timings, Failure("interrupted", "interrupted by the user or a signal"))
        raise Interrupted("interrupted: the attempt was recorded as interrupted and the worktree reset") from None


def _release(ctx: RunContext, phase: Any, outcome: AttemptOutcome | None, exc: CostCapReached) -> None:
    """A cost cap stopped the pass before a call: the phase goes back to queued, with this pass's
    last failure if it had one, else exactly as it was claimed; a later run or drain carries on."""
    from autopack.store.budgets import release_claim

    if outcome is not None and outcome.failure is not None:
        failure = outcome.failure
        ctx.store.fail_phase(phase.pk, state=PhaseState.QUEUED, kind=failure.kind, message=failure.message,
                             fingerprint=failure.fingerprint, decision=outcome.decision, fence=ctx.executor_id)
    else:
        release_claim(ctx.store, phase.pk)
    ctx.store.add_event(ctx.run.id, "cost_cap", {"message": str(exc)}, phase.phase_id)
    ctx.observer.notify(CostCapHit(run_id=ctx.run.id, phase_id=phase.phase_id, message=str(exc)))


def _budget(ctx: RunContext, phase: Any, spec: Any, files: dict[str, str]) -> Any:
    """This attempt's max_tokens: a persisted escalated budget, history, or the heuristic."""
    from autopack.llm.budget import estimate_budget
    from autopack.store.budgets import escalated_budget, output_history

    scope_files = {p: c for p, c in files.items() if spec.scope is None or any(
        p == s or (s.endswith("/") and p.startswith(s)) for s in spec.scope)}
    return estimate_budget(
        category=spec.category, complexity=spec.complexity, deliverables=len(spec.deliverables),
        scope_files=len(scope_files), scope_bytes=sum(len(c) for c in scope_files.values()),
        history=output_history(ctx.store, spec.category, spec.complexity, ctx.builder.mode),
        persisted=escalated_budget(ctx.store, phase.pk), cap=ctx.settings.builder_max_tokens_cap,
    )


def _record_escalation(ctx: RunContext, phase: Any, attempt: Any, escalation: Any) -> None:
    """Persist the escalated budget on the phase (later attempts and drains start from it)."""
    from autopack.store.budgets import set_escalated_budget

    set_escalated_budget(ctx.store, phase.pk, escalation.new)
    ctx.store.add_event(ctx.run.id, "escalation", {
        "reason": escalation.reason, "utilisation": round(escalation.utilisation, 4),
        "base": escalation.base, "new": escalation.new}, phase.phase_id, attempt.id)
    ctx.observer.notify(Escalated(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=attempt.number,
                                  base=escalation.base, new=escalation.new))


def _step(ctx: RunContext, phase: Any, attempt: Any, step: str, state: str | None = None) -> None:
    ctx.store.set_step(phase.pk, attempt.id, step, state, fence=ctx.executor_id)
    ctx.store.update_executor(ctx.executor_id, run_id=ctx.run.id, phase_id=phase.phase_id, step=step)
    ctx.current = (phase.phase_id, attempt.number)
    ctx.observer.notify(Step(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=attempt.number, step=step))


def _times(started: float, timings: dict[str, int]) -> dict[str, int]:
    return {**timings, "wall_ms": int((time.monotonic() - started) * 1000)}


def _fail(ctx: RunContext, phase: Any, attempt: Any, started: float, timings: dict[str, int],
          failure: Failure, decision: dict | None = None, text: str | None = None,
          output_tail: str = "", failing: tuple = ()) -> AttemptOutcome:
    """Save the attempt's change as a patch, reset the worktree, record the failure."""
    patch_path = _save_patch(ctx, phase.phase_id, attempt)
    ctx.workspace.reset_clean()
    with ctx.store.atomic():
        ctx.store.finish_attempt(attempt.id, AttemptState.FAILED, failure_kind=failure.kind, failure_message=failure.message,
                                 failure_fingerprint=failure.fingerprint, decision=decision,
                                 patch_path=str(patch_path) if patch_path else None, **_times(started, timings))
        ctx.store.set_step(phase.pk, None, "failed", state=PhaseState.EXECUTING, fence=ctx.executor_id)
    ctx.observer.notify(AttemptFailed(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=attempt.number,
                                      kind=failure.kind, message=failure.message))
    return AttemptOutcome(False, failure, text or digest(failure, decision), decision, attempt, output_tail, failing)


def _save_patch(ctx: RunContext, phase_id: str, attempt: Any) -> Path | None:
    """Keep what a failed or interrupted attempt changed: capped in the store, whole in a local file."""
    ctx.workspace.stage_all()
    patch = ctx.workspace.staged_patch()
    if not patch.strip():
        return None
    ctx.store.update_attempt(attempt.id, **_stored_patch(patch))
    path = ctx.artifacts / "patches" / f"{phase_id}-attempt-{attempt.number}.patch"
    with writing(path, "the attempt's patch"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(patch.encode("utf-8", "surrogateescape"))
    return path


def _stored_patch(patch: str) -> dict[str, Any]:
    """The attempt's diff as the store keeps it (other machines' `show` reads it): cut at a line."""
    if not patch.strip():
        return {}
    data = patch.encode("utf-8", "surrogateescape")
    return {"patch": capped_diff(data)[0], "patch_bytes": len(data)}


def _interrupted(ctx: RunContext, phase: Any, attempt: Any, started: float, timings: dict[str, int],
                 failure: Failure) -> None:
    """Ctrl-C / SIGTERM: keep the record, leave the phase queued and the worktree clean."""
    _save_patch(ctx, phase.phase_id, attempt)
    ctx.workspace.reset_clean()
    with ctx.store.atomic():
        ctx.store.finish_attempt(attempt.id, AttemptState.INTERRUPTED, failure_kind=failure.kind,
                                 failure_message=failure.message, **_times(started, timings))
        ctx.store.fail_phase(phase.pk, state=PhaseState.QUEUED, kind=failure.kind, message=failure.message,
                             fingerprint=failure.fingerprint, decision=None, fence=ctx.executor_id)
    ctx.observer.notify(AttemptFailed(run_id=ctx.run.id, phase_id=phase.phase_id, attempt=attempt.number,
                                      kind=failure.kind, message=failure.message))
