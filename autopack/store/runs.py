"""Writes to the state store: runs, attempts, test runs, baselines, ledger, executors.

Every method is one transaction (composing with ``Store.atomic()``); the state changes of
phases and attempts, each one guarded statement, are in ``store.transitions``.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from sqlalchemy import update
from sqlmodel import select

from autopack import __version__
from autopack.errors import UsageError
from autopack.domain.lifecycle import ACTIVE_STATES
from autopack.store.db import Transactions, make_engine, read_session, translate_errors
from autopack.store.models import (
    Attempt,
    Baseline,
    Event,
    Executor,
    LlmCall,
    Phase,
    PhaseDependency,
    Run,
    SuiteOutcome,
    SuiteRun,
    SuiteRunFiles,
    TranscriptTurn,
    utcnow,
)
from autopack.store.location import PostgresUrl, StoreLocation
from autopack.store.sql import translate_sqlite_errors
from autopack.store.transitions import Lifecycle

if TYPE_CHECKING:
    from autopack.test_logs import StoredFiles


def command_hash(command: str) -> str:
    return hashlib.sha256(command.encode()).hexdigest()[:32]


class Store(Lifecycle):
    """The state store of one database: a SQLite file or a PostgreSQL URL (``store.location``).

    Each write method is one transaction; inside an ``atomic()`` block it is a savepoint of the
    block's transaction, so the block commits as one. ``transactions`` is for the store's own modules.
    """

    def __init__(self, location: StoreLocation):
        self.path = location
        self.postgres = isinstance(location, PostgresUrl)
        if self.postgres:
            from autopack.store.pg_engine import make_pg_engine

            self.engine = make_pg_engine(location)
        else:
            self.engine = make_engine(location)
        self.transactions = Transactions(self.engine)

    def clock(self, session: Any) -> datetime:
        """Now, by the clock leases and heartbeats are kept on: the database server's on PostgreSQL
        (executors on several hosts), this host's on SQLite."""
        if self.postgres:
            from autopack.store.pg_engine import database_now

            return database_now(session)
        return utcnow()

    def now(self) -> datetime:
        """``clock()`` outside a transaction: to compare with stored leases and heartbeats."""
        with read_session(self.engine) as session:
            return self.clock(session)

    def serialize(self, session: Any, name: str) -> None:
        """On PostgreSQL, hold a transaction lock on ``name``: a read-then-insert of rows that may be
        absent cannot lock them (SQLite's ``BEGIN IMMEDIATE`` already serializes every writer)."""
        if self.postgres:
            from autopack.store.pg_engine import xact_lock

            xact_lock(session, name)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """The writes in the block commit together or not at all; blocks nest (an inner one is a savepoint)."""
        with self.transactions.atomic():
            yield

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A pooled connection in one read transaction, for the read models (store.sql): sqlite3's, or on
        PostgreSQL psycopg's lent as a ``store.pg.ReadConnection``."""
        if self.postgres:
            with translate_errors(self.engine), self.engine.connect() as conn, conn.begin():
                yield self.lent(conn)
            return
        with translate_errors(self.engine), translate_sqlite_errors(self.path), self.engine.connect() as conn, \
                conn.begin():
            yield self.lent(conn)

    def lent(self, conn: Any) -> Any:
        """An SQLAlchemy connection's driver connection as the read models take it (store.sql), in that
        connection's transaction: sqlite3's, or psycopg's as a ``store.pg.ReadConnection``."""
        raw = conn.connection.driver_connection
        if self.postgres:
            from autopack.store.pg import ReadConnection

            return ReadConnection(raw)
        return raw

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------

    def create_run(self, *, plan: Any, repo_root: Path, subdir: str, base_commit: str,
                   branch: str, worktree: Path, builder: str | None = None) -> Run:
        """Record a run and its phases, all queued, in one transaction; ``builder`` is its builder mode."""
        with self.transactions.atomic() as session:
            self.serialize(session, f"run {plan.run.id}")
            if session.get(Run, plan.run.id) is not None:
                raise UsageError(f"run '{plan.run.id}' already exists")
            run = Run(
                id=plan.run.id, goal=plan.run.goal, plan_path=str(plan.path.resolve()),
                plan_hash=plan.content_hash(), comparable_hash=plan.comparable_hash(),
                plan=plan.to_dict(), flags=dict(plan.run.flags), repo_root=str(repo_root),
                subdir=subdir, base_commit=base_commit, branch=branch, worktree=str(worktree),
                autopack_version=__version__, builder=builder,
            )
            session.add(run)
            session.flush()
            by_id: dict[str, Phase] = {}
            for spec in plan.phases:
                phase = Phase(run_id=run.id, phase_id=spec.id, position=spec.position,
                              spec=spec.to_dict(), max_attempts=spec.max_attempts)
                session.add(phase)
                by_id[spec.id] = phase
            session.flush()
            for spec in plan.phases:
                for dep in spec.depends_on:
                    session.add(PhaseDependency(phase_pk=by_id[spec.id].pk, depends_on_pk=by_id[dep].pk))
            return run

    def get_run(self, run_id: str) -> Run | None:
        with read_session(self.engine) as session:
            return session.get(Run, run_id)

    def phases(self, run_id: str) -> list[Phase]:
        with read_session(self.engine) as session:
            return list(session.exec(select(Phase).where(Phase.run_id == run_id).order_by(Phase.position)))

    def phase(self, run_id: str, phase_id: str) -> Phase | None:
        with read_session(self.engine) as session:
            return session.exec(
                select(Phase).where(Phase.run_id == run_id, Phase.phase_id == phase_id)
            ).first()

    def attempts(self, phase_pk: int) -> list[Attempt]:
        with read_session(self.engine) as session:
            return list(session.exec(select(Attempt).where(Attempt.phase_pk == phase_pk).order_by(Attempt.number)))

    # -- attempts -------------------------------------------------------------------

    def start_attempt(self, phase_pk: int, executor_id: str, model: str | None, builder: str | None = None) -> Attempt:
        with self.transactions.atomic() as session:
            phase = session.get(Phase, phase_pk, populate_existing=True, with_for_update=True)  # numbers in order
            phase.attempts += 1
            phase.pass_attempts += 1
            phase.updated_at = utcnow()
            attempt = Attempt(phase_pk=phase_pk, run_id=phase.run_id, number=phase.attempts,
                              executor_id=executor_id, model=model, builder=builder)
            session.add(phase)
            session.add(attempt)
            session.flush()
            return attempt

    def update_attempt(self, attempt_id: int, **fields: Any) -> None:
        with self.transactions.atomic() as session:
            session.execute(update(Attempt).where(Attempt.id == attempt_id).values(**fields))

    # -- test runs and baselines ------------------------------------------------------

    def record_test_run(self, run_id: str, attempt_id: int | None, kind: str, tree_sha: str | None,
                        report: Any, log_path: Path | None, files: StoredFiles | None = None) -> int:
        """The test run, its outcomes and the stored copies of its log and JUnit XML, in one transaction."""
        counts = report.counts()
        with self.transactions.atomic() as session:
            row = SuiteRun(
                run_id=run_id, attempt_id=attempt_id, kind=kind, tree_sha=tree_sha,
                command=report.command, exit_code=report.exit_code, timed_out=report.timed_out,
                duration_s=report.duration_s, passed=counts["passed"], failed=counts["failed"],
                errors=counts["error"], skipped=counts["skipped"], total=counts["total"],
                junit_error=report.junit_error, output_tail=report.output_tail,
                output_bytes=report.output_bytes, output_truncated=report.output_truncated,
                log_path=str(log_path) if log_path else None,
            )
            session.add(row)
            session.flush()
            session.add_all(
                SuiteOutcome(test_run_id=row.id, test_id=o.test_id, outcome=o.outcome, file=o.file,
                             message=o.message, duration_s=o.duration_s, collection_error=o.collection_error)
                for o in report.outcomes
            )
            if files is not None:
                session.add(SuiteRunFiles(test_run_id=row.id, log=files.log, log_bytes=files.log_bytes,
                                          junit=files.junit, junit_bytes=files.junit_bytes))
            return row.id

    def test_report(self, test_run_id: int) -> Any:
        """Rebuild the TestReport of a recorded test run."""
        from autopack.testrun import TestOutcome, TestReport

        with read_session(self.engine) as session:
            row = session.get(SuiteRun, test_run_id)
            outcomes = session.exec(select(SuiteOutcome).where(SuiteOutcome.test_run_id == test_run_id)
                                    .order_by(SuiteOutcome.id))
            return TestReport(
                command=row.command, exit_code=row.exit_code, timed_out=row.timed_out,
                duration_s=row.duration_s,
                outcomes=tuple(TestOutcome(test_id=o.test_id, outcome=o.outcome, file=o.file,
                                           message=o.message, duration_s=o.duration_s,
                                           collection_error=o.collection_error) for o in outcomes),
                output_tail=row.output_tail, output_bytes=row.output_bytes,
                output_truncated=row.output_truncated, junit_error=row.junit_error,
            )

    def baseline_for(self, tree_sha: str, command: str) -> int | None:
        with read_session(self.engine) as session:
            row = session.get(Baseline, (tree_sha, command_hash(command)))
            return row.test_run_id if row else None

    def save_baseline(self, tree_sha: str, command: str, test_run_id: int) -> None:
        with self.transactions.atomic() as session:
            self.serialize(session, f"baseline {tree_sha} {command_hash(command)}")
            if session.get(Baseline, (tree_sha, command_hash(command))) is None:
                session.add(Baseline(tree_sha=tree_sha, command_hash=command_hash(command),
                                     test_run_id=test_run_id))

    # -- ledger, executors, events ----------------------------------------------------

    def record_calls(self, run_id: str, phase_id: str | None, attempt_id: int | None,
                     role: str, calls: Sequence[Any], transcript: Any = None) -> None:
        """Ledger rows and, in the same transaction, an attempt's transcript entry (``ports.TranscriptEntry``)."""
        with self.transactions.atomic() as session:
            if transcript is not None and attempt_id is not None:
                session.add(TranscriptTurn(attempt_id=attempt_id, turn=transcript.turn,
                                           max_tokens=transcript.max_tokens, request=transcript.request,
                                           response=transcript.response))
            session.add_all(
                LlmCall(run_id=run_id, phase_id=phase_id, attempt_id=attempt_id, role=role,
                        model=c.model, max_tokens=c.max_tokens, input_tokens=c.usage.input_tokens,
                        output_tokens=c.usage.output_tokens, cache_read_tokens=c.usage.cache_read_tokens,
                        cache_write_tokens=c.usage.cache_write_tokens, stop_reason=c.stop_reason,
                        latency_ms=c.latency_ms, request_id=c.request_id, cost_usd=c.cost_usd,
                        status=c.status, error=c.error, http_status=getattr(c, "http_status", None),
                        predicted_tokens=getattr(c, "predicted_tokens", None))
                for c in calls
            )

    def register_executor(self, pid: int, host: str, command: str, run_id: str | None) -> str:
        import uuid

        executor_id = uuid.uuid4().hex[:16]
        with self.transactions.atomic() as session:
            now = self.clock(session)
            session.add(Executor(id=executor_id, pid=pid, host=host, command=command, run_id=run_id,
                                 started_at=now, heartbeat_at=now))
        return executor_id

    def retire_executors(self, dead: Callable[[Executor, datetime], bool]) -> list[str]:
        """Record as stopped the running executors that ``dead(executor, now)`` says are gone:
        a killed executor never stops itself, and `status` would show it at work for ever."""
        with self.transactions.atomic() as session:
            now = self.clock(session)
            running = session.exec(select(Executor).where(Executor.stopped_at.is_(None))).all()
            retired = [e.id for e in running if dead(e, now)]
            if retired:
                session.execute(update(Executor).where(Executor.id.in_(retired), Executor.stopped_at.is_(None))
                                .values(stopped_at=now, phase_id=None, step=None))
        return retired

    def extend_leases(self, executor_id: str, lease_s: float) -> None:
        with self.transactions.atomic() as session:
            now = self.clock(session)
            session.execute(
                update(Phase).where(Phase.claimed_by == executor_id, Phase.state.in_(ACTIVE_STATES))
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
            )
            session.execute(update(Executor).where(Executor.id == executor_id).values(heartbeat_at=now))

    def update_executor(self, executor_id: str, **fields: Any) -> None:
        with self.transactions.atomic() as session:
            session.execute(update(Executor).where(Executor.id == executor_id)
                            .values(heartbeat_at=self.clock(session), **fields))

    def stop_executor(self, executor_id: str) -> None:
        with self.transactions.atomic() as session:
            now = self.clock(session)
            session.execute(update(Executor).where(Executor.id == executor_id)
                            .values(stopped_at=now, heartbeat_at=now, phase_id=None, step=None))

    def add_event(self, run_id: str, kind: str, data: dict | None = None,
                  phase_id: str | None = None, attempt_id: int | None = None) -> None:
        with self.transactions.atomic() as session:
            session.add(Event(run_id=run_id, kind=kind, data=data, phase_id=phase_id, attempt_id=attempt_id))

    def run_cost(self, run_id: str) -> float:
        """What the run's priced LLM calls cost so far (the read model the drain's ordering uses)."""
        from autopack.store.drainable import run_costs

        return run_costs(self, [run_id]).get(run_id, 0.0)
