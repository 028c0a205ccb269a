"""The life cycle: phase, attempt and run states, the transitions allowed between them, and failure kinds
(contract 4's ``last_failure.kind``) with what each one means to a drain and a pass.

A phase is queued -> executing -> ci_running -> gate -> complete | failed (or skipped while a
dependency failed). Every change of a phase's or an attempt's state is one named transition,
which the store runs as ONE statement guarded by the states it may leave
(``store.transitions``): a transition from any other state is refused, never half-done.

Every kind autopack records is a ``FailureKind``; a member cannot be declared without its
drain rank, so no kind can rank by accident. Ranks, first drained first (what a new pass is
most likely to fix, and cheapest to try):

  0 transient: the API, the machine or the executor failed, not the work
    (api_error, timeout, interrupted, abandoned, push_rejected; cost_cap and any kind this
    version does not know, from a database written by another version)
  1 collection errors: the change broke the build; the digest names the error line
  2 missing deliverables, no-op, agent_limit: the builder did not deliver
  3 unusable answers: apply_error, malformed, truncated (a new pass starts from the
    escalated budget)
  4 rejected by the tests: regression, tests_removed, report_invalid, git_tampered, and the
    goal-evidence kinds no_goal_evidence, acceptance_failed, tests_weakened, tests_skipped
  5 needs a change to the plan or its cassette first: refusal, context_window,
    cassette_exhausted; then queued phases never attempted
"""

from __future__ import annotations

from enum import StrEnum


class PhaseState(StrEnum):
    """A phase's ``state`` column, and contract 4's ``phases[].state``."""

    QUEUED = "queued"
    EXECUTING = "executing"  # claimed: an executor holds its lease
    CI_RUNNING = "ci_running"
    GATE = "gate"
    COMPLETE = "complete"
    FAILED = "failed"
    SKIPPED = "skipped"  # a dependency failed or was skipped


ACTIVE_STATES = (PhaseState.EXECUTING, PhaseState.CI_RUNNING, PhaseState.GATE)  # an executor works on it
# A phase that leaves one of these for queued or executing starts a new pass (of up to max_attempts
# attempts): its pass's attempt count starts again and its parking is cleared.
PASS_OVER = (PhaseState.FAILED, PhaseState.SKIPPED, PhaseState.COMPLETE)


class AttemptState(StrEnum):
    """An attempt's ``state`` column."""

    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: recorded by the executor itself
    ABANDONED = "abandoned"  # its executor died; recorded by the next one


class RunState(StrEnum):
    """A run's state, derived from its phases' (never stored): contract 4's ``run.state``."""

    RUNNING = "running"
    QUEUED = "queued"
    COMPLETE = "complete"
    FAILED = "failed"


_Q, _E, _C, _G = PhaseState.QUEUED, PhaseState.EXECUTING, PhaseState.CI_RUNNING, PhaseState.GATE
_DONE, _FAILED, _SKIPPED = PhaseState.COMPLETE, PhaseState.FAILED, PhaseState.SKIPPED


class _Transition(StrEnum):
    """A named change of state: the states it may leave (``sources``) and the one it enters."""

    sources: tuple[StrEnum, ...]
    target: StrEnum

    def __new__(cls, value: str, sources: tuple[StrEnum, ...], target: StrEnum) -> _Transition:
        member = str.__new__(cls, value)
        member._value_ = value
        member.sources, member.target = sources, target
        return member


class PhaseTransition(_Transition):
    """A named change of a phase's state."""

    @property
    def starts_pass(self) -> bool:
        """Whether it may start a new pass: from a PASS_OVER state into queued or executing."""
        return self.target in (PhaseState.QUEUED, PhaseState.EXECUTING) and any(s in PASS_OVER for s in self.sources)

    CLAIM = "claim", (_Q,), _E
    # A drain's pass at a failed phase: failed -> queued -> executing in one statement.
    CLAIM_NEW_PASS = "claim_new_pass", (_Q, _FAILED), _E
    CLAIM_PHASE = "claim_phase", (_Q, _FAILED, _SKIPPED), _E  # `drain --phase`: exactly this phase
    CLAIM_FORCED = "claim_forced", (_Q, _FAILED, _SKIPPED, _DONE), _E  # `drain --phase --force`
    RUN_TESTS = "run_tests", (_E,), _C
    GATE = "gate", (_C,), _G
    ATTEMPT_FAILED = "attempt_failed", ACTIVE_STATES, _E  # the pass goes on with its next attempt
    COMPLETE = "complete", (_G,), _DONE
    RECONCILE = "reconcile", (_Q, *ACTIVE_STATES), _DONE  # recovery: git holds the commit the store missed
    FAIL = "fail", ACTIVE_STATES, _FAILED
    STOP = "stop", ACTIVE_STATES, _Q  # interrupted, or a cost cap ended the pass after a failed attempt
    RELEASE = "release", (_E,), _Q  # a cost cap stopped the pass before its first attempt
    RESCUE = "rescue", ACTIVE_STATES, _Q  # its executor died
    SKIP = "skip", (_Q,), _SKIPPED
    UNSKIP = "unskip", (_SKIPPED,), _Q
    REQUEUE = "requeue", (_FAILED,), _Q  # `run --retry-failed`, a changed plan


_RUNNING = (AttemptState.RUNNING,)


class AttemptTransition(_Transition):
    """A named change of an attempt's state."""

    SUCCEED = "succeed", _RUNNING, AttemptState.COMPLETE
    FAIL = "fail", _RUNNING, AttemptState.FAILED
    INTERRUPT = "interrupt", _RUNNING, AttemptState.INTERRUPTED
    ABANDON = "abandon", _RUNNING, AttemptState.ABANDONED
    # Recovery: its commit is in git. A rescue may have abandoned it meanwhile, a signal after the commit
    # interrupted it, and a version that ended an attempt in three transactions may have recorded it
    # complete without its phase.
    RECONCILE = "reconcile", (AttemptState.RUNNING, AttemptState.ABANDONED, AttemptState.INTERRUPTED,
                              AttemptState.COMPLETE), AttemptState.COMPLETE


FINISH = {AttemptState.COMPLETE: AttemptTransition.SUCCEED, AttemptState.FAILED: AttemptTransition.FAIL,
          AttemptState.INTERRUPTED: AttemptTransition.INTERRUPT}  # how an executor ends its own attempt

TRANSIENT, COLLECTION, UNDELIVERED, UNUSABLE_ANSWER, REJECTED_BY_TESTS, NEEDS_PLAN_CHANGE = range(6)
RANK_LABELS = ("transient failure", "collection error", "missing deliverables / no-op", "unusable answer",
               "rejected by the tests", "needs a plan or cassette change")


class FailureKind(StrEnum):
    """Why an attempt failed; ``rank`` orders drains, ``ends_pass`` stops the pass's other attempts,
    and a kind that is not ``builders_fault`` stays out of the next attempt's prompt."""

    rank: int
    ends_pass: bool
    builders_fault: bool

    def __new__(cls, value: str, rank: int, ends_pass: bool = False, builders_fault: bool = True) -> FailureKind:
        member = str.__new__(cls, value)
        member._value_ = value
        member.rank, member.ends_pass, member.builders_fault = rank, ends_pass, builders_fault
        return member

    API_ERROR = "api_error", TRANSIENT, True
    TIMEOUT = "timeout", TRANSIENT
    INTERRUPTED = "interrupted", TRANSIENT, False, False
    ABANDONED = "abandoned", TRANSIENT, False, False
    COST_CAP = "cost_cap", TRANSIENT, False, False  # no longer recorded; older databases hold it
    # The run branch's remote moved since the run was taken: the run is compared with it again first.
    PUSH_REJECTED = "push_rejected", TRANSIENT, True, False
    COLLECTION_ERROR = "collection_error", COLLECTION
    DELIVERABLES_MISSING = "deliverables_missing", UNDELIVERED
    NO_OP = "no_op", UNDELIVERED
    AGENT_LIMIT = "agent_limit", UNDELIVERED  # an agent attempt ended by a limit before any edit
    APPLY_ERROR = "apply_error", UNUSABLE_ANSWER
    MALFORMED = "malformed", UNUSABLE_ANSWER
    TRUNCATED = "truncated", UNUSABLE_ANSWER
    REGRESSION = "regression", REJECTED_BY_TESTS
    TESTS_REMOVED = "tests_removed", REJECTED_BY_TESTS
    REPORT_INVALID = "report_invalid", REJECTED_BY_TESTS
    GIT_TAMPERED = "git_tampered", REJECTED_BY_TESTS
    NO_GOAL_EVIDENCE = "no_goal_evidence", REJECTED_BY_TESTS  # contract 5: no test fails before, passes after
    ACCEPTANCE_FAILED = "acceptance_failed", REJECTED_BY_TESTS
    TESTS_WEAKENED = "tests_weakened", REJECTED_BY_TESTS  # a changed test file's base version fails on new code
    TESTS_SKIPPED = "tests_skipped", REJECTED_BY_TESTS  # a baseline-passing test now skipped
    REFUSAL = "refusal", NEEDS_PLAN_CHANGE
    CONTEXT_WINDOW = "context_window", NEEDS_PLAN_CHANGE, True
    CASSETTE_EXHAUSTED = "cassette_exhausted", NEEDS_PLAN_CHANGE, True


def drain_rank(kind: str | None) -> int:
    """The drain rank of a recorded kind; one this version does not know (or none) is transient."""
    try:
        return FailureKind(kind).rank
    except ValueError:
        return TRANSIENT
