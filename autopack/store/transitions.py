"""Every change of a phase's or an attempt's state, each ONE statement guarded by the states it may leave.

A transition of one phase (or attempt) is ``UPDATE ... SET state = <target>, ... WHERE pk = ?
AND state IN (<sources>) RETURNING ...``, with the tables of ``domain.lifecycle``: from any
other state nothing is written, and ``TransitionRefused`` rolls back the transaction it ran
in. A claim returns None instead (another executor was first, which is no error). A
transition of a set of phases (skip, unskip, requeue, rescue) picks its rows by the same guard.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import and_, case, exists, update
from sqlalchemy.orm import aliased
from sqlmodel import select

from autopack.domain.lifecycle import (
    ACTIVE_STATES,
    FINISH,
    PASS_OVER,
    AttemptState,
    AttemptTransition,
    FailureKind,
    PhaseState,
    PhaseTransition,
)
from autopack.errors import TransitionRefused
from autopack.store.db import Transactions
from autopack.store.models import Attempt, Event, Executor, Phase, PhaseDependency, utcnow

# set_step's state -> the transition that enters it; fail_phase's state -> the one that ends the pass
STEP_TRANSITIONS = {PhaseState.CI_RUNNING: PhaseTransition.RUN_TESTS, PhaseState.GATE: PhaseTransition.GATE,
                    PhaseState.EXECUTING: PhaseTransition.ATTEMPT_FAILED}
PASS_ENDS = {PhaseState.FAILED: PhaseTransition.FAIL, PhaseState.QUEUED: PhaseTransition.STOP}
BLOCKING = (PhaseState.FAILED, PhaseState.SKIPPED)  # a dependency in these states blocks its dependents
RESCUED = "the executor stopped mid-attempt"


def move_phase(session: Any, transition: PhaseTransition, phase_pk: int, *, fence: str | None = None,
               **values: Any) -> Phase:
    """One phase through ``transition``, setting ``values`` in the same statement; else TransitionRefused.

    ``fence``: the executor whose claim this write continues; the phase must still be claimed by it
    (an executor whose lease lapsed, and whose phase was rescued and claimed again, writes nothing)."""
    where = Phase.pk == phase_pk
    if fence is not None:
        where = and_(where, Phase.claimed_by == fence)
    moved = move_phases(session, transition, where, **values)
    if not moved:
        row = session.get(Phase, phase_pk, populate_existing=True)
        if fence is not None and row is not None and row.claimed_by != fence and row.state in transition.sources:
            raise _fenced(row, fence)
        raise _refused(row, "phase", transition)
    return moved[0]


def _fenced(row: Phase, executor_id: str) -> TransitionRefused:
    now = f"executor {row.claimed_by}'s" if row.claimed_by else "no executor's"
    return TransitionRefused(f"phase '{row.phase_id}' of run '{row.run_id}' is {now} claim now, not this executor's "
                             f"({executor_id}): its lease lapsed and the phase was taken back; this attempt's "
                             "result is not recorded")


def move_phases(session: Any, transition: PhaseTransition, where: Any, **values: Any) -> list[Phase]:
    """The phases matching ``where`` that may take ``transition``, through it in one statement (plan order).

    One leaving a PASS_OVER state starts a new pass in the same statement (``PhaseTransition.starts_pass``)."""
    values.setdefault("updated_at", utcnow())
    if transition.starts_pass:
        new_pass = Phase.state.in_(PASS_OVER)
        values.update(pass_attempts=case((new_pass, 0), else_=Phase.pass_attempts),
                      parked_reason=case((new_pass, None), else_=Phase.parked_reason))
    stmt = (update(Phase).where(where, Phase.state.in_(transition.sources))
            .values(state=transition.target, **values).returning(Phase)
            .execution_options(populate_existing=True))
    return sorted(session.execute(stmt).scalars(), key=lambda phase: phase.position)


def move_attempt(session: Any, transition: AttemptTransition, attempt_id: int, **values: Any) -> None:
    """One attempt through ``transition``, like ``move_phase``."""
    stmt = (update(Attempt).where(Attempt.id == attempt_id, Attempt.state.in_(transition.sources))
            .values(state=transition.target, **values).returning(Attempt.id))
    if session.execute(stmt).first() is None:
        raise _refused(session.get(Attempt, attempt_id, populate_existing=True), "attempt", transition)


def _refused(row: Any, what: str, transition: Any) -> TransitionRefused:
    if row is None:
        return TransitionRefused(f"{what} {transition}: no such {what} in the database; run the command again")
    name = (f"phase '{row.phase_id}' of run '{row.run_id}'" if what == "phase"
            else f"attempt {row.number} of run '{row.run_id}'")
    return TransitionRefused(f"{name} is {row.state}, and '{transition}' leaves only "
                             f"{' or '.join(transition.sources)}: another command changed it first; "
                             "run this one again")


def unskip(session: Any, run_id: str, now: datetime) -> list[str]:
    """Skipped phases none of whose dependencies failed or was skipped go back to queued, for a new pass."""
    dep = aliased(Phase)
    ready = ~exists().where(PhaseDependency.phase_pk == Phase.pk, PhaseDependency.depends_on_pk == dep.pk,
                            dep.state.in_(BLOCKING))
    moved = move_phases(session, PhaseTransition.UNSKIP, and_(Phase.run_id == run_id, ready), updated_at=now)
    return [phase.phase_id for phase in moved]


class Lifecycle:
    """The store's state changes (a part of ``store.runs.Store``), each in one transaction that
    composes with an enclosing ``Store.atomic()`` block."""

    transactions: Transactions
    clock: Callable[[Any], datetime]  # Store.clock: the database's on PostgreSQL

    # -- claims -----------------------------------------------------------------------

    def claim_next(self, run_id: str, executor_id: str, lease_s: float) -> Phase | None:
        """Claim the first queued phase (plan order) whose dependencies are complete."""
        dep = aliased(Phase)
        blocked = (exists().where(PhaseDependency.phase_pk == Phase.pk, PhaseDependency.depends_on_pk == dep.pk,
                                  dep.state != PhaseState.COMPLETE))
        candidate = (select(Phase.pk).where(Phase.run_id == run_id, Phase.state == PhaseState.QUEUED, ~blocked)
                     .order_by(Phase.position).limit(1)
                     .with_for_update(skip_locked=True)  # PostgreSQL: claimers pass each other; SQLite drops it
                     .scalar_subquery())
        return self._claim(PhaseTransition.CLAIM, Phase.pk == candidate, executor_id, lease_s)

    def claim(self, run_id: str, phase_id: str, executor_id: str, lease_s: float,
              transition: PhaseTransition = PhaseTransition.CLAIM) -> Phase | None:
        """Claim one named phase if ``transition`` may leave its state (by default: if it is queued).

        A claim from failed, skipped or complete starts a new pass (``PhaseTransition.starts_pass``)."""
        return self._claim(transition, and_(Phase.run_id == run_id, Phase.phase_id == phase_id),
                           executor_id, lease_s)

    def _claim(self, transition: PhaseTransition, where: Any, executor_id: str, lease_s: float) -> Phase | None:
        with self.transactions.atomic() as session:
            now = self.clock(session)
            claimed = move_phases(session, transition, where, claimed_by=executor_id, updated_at=now,
                                  lease_expires_at=now + timedelta(seconds=lease_s))
            return claimed[0] if claimed else None

    def rescue_run(self, run_id: str) -> list[str]:
        """Put every phase of a run left mid-attempt back to queued; their attempts become abandoned.

        Only called by the holder of the run's lock, so any claim found is a dead executor's:
        that executor is recorded as stopped, so `status` no longer shows it at work.
        """
        now = utcnow()
        with self.transactions.atomic() as session:
            stale = session.execute(select(Phase.pk, Phase.phase_id, Phase.state, Phase.claimed_by)
                                    .where(Phase.run_id == run_id, Phase.state.in_(ACTIVE_STATES))
                                    .order_by(Phase.position)).all()
            if not stale:
                return []
            dead = {row.claimed_by for row in stale if row.claimed_by}
            if dead:
                session.execute(update(Executor).where(Executor.id.in_(dead), Executor.stopped_at.is_(None))
                                .values(stopped_at=now, phase_id=None, step=None))
            pks = [row.pk for row in stale]
            abandon = AttemptTransition.ABANDON
            session.execute(update(Attempt).where(Attempt.phase_pk.in_(pks), Attempt.state.in_(abandon.sources))
                            .values(state=abandon.target, failure_kind=FailureKind.ABANDONED, finished_at=now,
                                    failure_message=f"{RESCUED} (killed or crashed)"))
            move_phases(session, PhaseTransition.RESCUE, Phase.pk.in_(pks), claimed_by=None, lease_expires_at=None,
                        failure_kind=FailureKind.ABANDONED, failure_message=RESCUED, updated_at=now)
            session.add_all(Event(run_id=run_id, phase_id=row.phase_id, kind="rescued",
                                  data={"claimed_by": row.claimed_by, "state": row.state}) for row in stale)
            return [row.phase_id for row in stale]

    # -- an attempt's steps and its end ------------------------------------------------

    def set_step(self, phase_pk: int, attempt_id: int | None, step: str, state: str | None = None, *,
                 fence: str | None = None) -> None:
        """Record the attempt's step; ``state``: the phase enters it (ci_running, gate, or executing again).

        ``fence`` here and in ``complete_phase``/``fail_phase``: the executor whose claim the write
        continues (``move_phase``)."""
        with self.transactions.atomic() as session:
            if state is not None:
                move_phase(session, STEP_TRANSITIONS[PhaseState(state)], phase_pk, fence=fence)
            if attempt_id is not None:
                session.execute(update(Attempt).where(Attempt.id == attempt_id).values(step=step))

    def finish_attempt(self, attempt_id: int, state: str, **fields: Any) -> None:
        """Close a running attempt: ``state`` is complete, failed or interrupted."""
        if fields.get("failure_kind") is not None:
            fields["failure_kind"] = FailureKind(fields["failure_kind"])
        with self.transactions.atomic() as session:
            move_attempt(session, FINISH[AttemptState(state)], attempt_id, finished_at=utcnow(), **fields)

    def complete_phase(self, phase_pk: int, commit: str, decision: dict, *, fence: str | None = None) -> list[str]:
        """Mark a phase complete; its skipped dependents whose dependencies are all fine go back to queued."""
        with self.transactions.atomic() as session:
            return self._complete(session, PhaseTransition.COMPLETE, phase_pk, commit, decision, fence)

    def reconcile_commit(self, phase_pk: int, attempt_id: int, commit: str, decision: dict) -> list[str]:
        """Record the commit a killed executor made but never recorded: the attempt and its phase complete,
        and a ``reconciled_commit`` event, in one transaction."""
        with self.transactions.atomic() as session:
            move_attempt(session, AttemptTransition.RECONCILE, attempt_id, commit=commit, finished_at=utcnow(),
                         failure_kind=None, failure_message=None)
            unskipped = self._complete(session, PhaseTransition.RECONCILE, phase_pk, commit, decision)
            phase = session.get(Phase, phase_pk)
            session.add(Event(run_id=phase.run_id, kind="reconciled_commit", data={"commit": commit},
                              phase_id=phase.phase_id, attempt_id=attempt_id))
            return unskipped

    @staticmethod
    def _complete(session: Any, transition: PhaseTransition, phase_pk: int, commit: str, decision: dict,
                  fence: str | None = None) -> list[str]:
        now = utcnow()
        phase = move_phase(session, transition, phase_pk, fence=fence, commit=commit, decision=decision, failure_kind=None,
                           failure_fingerprint=None, failure_message=None, claimed_by=None, lease_expires_at=None,
                           parked_reason=None, updated_at=now)
        return unskip(session, phase.run_id, now)

    def fail_phase(self, phase_pk: int, *, state: str, kind: str, message: str,
                   fingerprint: str | None, decision: dict | None, fence: str | None = None) -> None:
        """End a phase's pass: ``state`` is failed, or queued when the attempt was interrupted.

        ``kind`` (like an attempt's ``failure_kind``) must be a FailureKind: each has a drain rank."""
        kind = FailureKind(kind)
        with self.transactions.atomic() as session:
            move_phase(session, PASS_ENDS[PhaseState(state)], phase_pk, fence=fence, failure_kind=kind,
                       failure_message=message,
                       failure_fingerprint=fingerprint, decision=decision, claimed_by=None, lease_expires_at=None)

    # -- passes -----------------------------------------------------------------------

    def skip_blocked(self, run_id: str) -> list[str]:
        """Queued phases whose dependency failed or was skipped become skipped (transitively)."""
        skipped: list[str] = []
        with self.transactions.atomic() as session:
            while True:
                dep = aliased(Phase)
                blocked = exists().where(PhaseDependency.phase_pk == Phase.pk, PhaseDependency.depends_on_pk == dep.pk,
                                         dep.state.in_(BLOCKING))
                moved = move_phases(session, PhaseTransition.SKIP, and_(Phase.run_id == run_id, blocked))
                if not moved:
                    return skipped
                skipped += [phase.phase_id for phase in moved]

    def requeue_failed(self, run_id: str, phase_ids: Iterable[str] | None = None) -> list[str]:
        """Start a new pass for failed phases (all, or the named ones); their dependents unskip."""
        now = utcnow()
        where = Phase.run_id == run_id
        if phase_ids is not None:
            where = and_(where, Phase.phase_id.in_(list(phase_ids)))
        with self.transactions.atomic() as session:
            failed = move_phases(session, PhaseTransition.REQUEUE, where, updated_at=now)
            return [p.phase_id for p in failed] + unskip(session, run_id, now)
