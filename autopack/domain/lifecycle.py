"""Failure kinds (contract 4's ``last_failure.kind``) and what each one means to a drain and a pass.

Every kind autopack records is a ``FailureKind``; a member cannot be declared without its
drain rank, so no kind can rank by accident. Ranks, first drained first (what a new pass is
most likely to fix, and cheapest to try):

  0 transient: the API, the machine or the executor failed, not the work
    (api_error, timeout, interrupted, abandoned; cost_cap and any kind this version does
    not know, from a database written by another version)
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
