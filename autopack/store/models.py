"""Tables of the state store.

Every timestamp is stored in UTC and read back timezone-aware. JSON columns hold
values that are read whole (plan specs, decisions, apply stats), never queried into.
"""

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, DateTime, Index, TypeDecorator, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from autopack.store.sql import CorruptValue


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _Checked(TypeDecorator):
    """A column type whose stored values are checked when read: one the column cannot hold raises
    store.sql.CorruptValue (the database is damaged), which the store reports in one line.
    (SQLAlchemy wants ``cache_ok`` on each subclass.)"""

    def result_processor(self, dialect, coltype):
        process = super().result_processor(dialect, coltype)

        def checked(value):
            try:
                return process(value) if process else value
            except (TypeError, ValueError):
                raise CorruptValue(value) from None

        return checked


class UTCDateTime(_Checked):
    """A datetime column that always round-trips as timezone-aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class JSONObject(_Checked):
    """A JSON column holding an object (or null)."""

    impl = JSON
    cache_ok = True

    def process_result_value(self, value: Any, dialect) -> Optional[dict]:
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"not a JSON object: {value!r}")
        return value


def _when(nullable: bool = False, index: bool = False) -> Any:
    kwargs = {"default_factory": utcnow} if not nullable else {"default": None}
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index), **kwargs)


def _json(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSONObject(), nullable=nullable))


class Run(SQLModel, table=True):
    """One execution of a plan: its spec as recorded, where it works, and who made it."""

    __tablename__ = "runs"

    id: str = Field(primary_key=True)
    goal: str
    plan_path: str
    plan_hash: str = Field(index=True)
    comparable_hash: str
    plan: dict = _json(nullable=False)
    flags: dict = _json(nullable=False)
    repo_root: str
    subdir: str = ""
    base_commit: str
    branch: str
    worktree: str
    autopack_version: str
    builder: Optional[str] = None  # agent | single, as recorded; None: recorded before builder modes (single)
    created_at: datetime = _when(index=True)  # last updated: its phases' (derived, never stored)


class Phase(SQLModel, table=True):
    """A phase of a run: its spec, state, current claim and the outcome of its last attempt."""

    __tablename__ = "phases"
    __table_args__ = (
        UniqueConstraint("run_id", "phase_id"),
        Index("ix_phases_state_run", "state", "run_id"),
    )

    pk: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    phase_id: str
    position: int
    spec: dict = _json(nullable=False)
    state: str = "queued"
    attempts: int = 0
    pass_attempts: int = 0
    max_attempts: int = 3
    commit: Optional[str] = None
    decision: Optional[dict] = _json()
    failure_kind: Optional[str] = None
    failure_fingerprint: Optional[str] = None
    failure_message: Optional[str] = None
    claimed_by: Optional[str] = None
    lease_expires_at: Optional[datetime] = _when(nullable=True)
    parked_reason: Optional[str] = None
    escalated_budget: Optional[int] = None
    updated_at: datetime = _when()


class PhaseDependency(SQLModel, table=True):
    """`depends_on` edges, so claims can check dependencies in SQL."""

    __tablename__ = "phase_dependencies"

    phase_pk: int = Field(foreign_key="phases.pk", primary_key=True)
    depends_on_pk: int = Field(foreign_key="phases.pk", primary_key=True, index=True)


class Attempt(SQLModel, table=True):
    """One try at a phase: what the builder did, what the tests said, what was decided."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("phase_pk", "number"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    phase_pk: int = Field(foreign_key="phases.pk", index=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    number: int
    executor_id: Optional[str] = Field(default=None, index=True)  # a drain's cost cap sums by executor
    state: str = "running"
    step: str = "starting"
    model: Optional[str] = None
    builder: Optional[str] = None  # agent | single; None: made before builder modes (single)
    failure_kind: Optional[str] = None
    failure_fingerprint: Optional[str] = None
    failure_message: Optional[str] = None
    apply_stats: Optional[dict] = _json()
    decision: Optional[dict] = _json()
    tree_sha: Optional[str] = None
    commit: Optional[str] = None
    patch_path: Optional[str] = None  # the saved patch of a failed attempt: a local cache of ``patch``
    patch: Optional[str] = None  # the attempt's diff, capped (text.DIFF_MAX_BYTES): what other machines show
    patch_bytes: Optional[int] = None  # the whole diff's size; more than ``patch`` holds: it was cut
    budget: Optional[int] = None
    budget_source: Optional[str] = None
    builder_ms: int = 0
    tests_ms: int = 0
    wall_ms: int = 0  # its test runs: counted from test_runs (never stored)
    started_at: datetime = _when()
    finished_at: Optional[datetime] = _when(nullable=True)


class SuiteRun(SQLModel, table=True):
    """One execution of the project's test command (baseline, attempt or re-run)."""

    __tablename__ = "test_runs"

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    attempt_id: Optional[int] = Field(default=None, foreign_key="attempts.id", index=True)
    kind: str
    tree_sha: Optional[str] = None
    command: str
    exit_code: Optional[int] = None
    timed_out: bool = False
    duration_s: float = 0.0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    total: int = 0
    junit_error: Optional[str] = None
    output_tail: str = ""
    output_bytes: int = 0
    output_truncated: bool = False
    log_path: Optional[str] = None
    created_at: datetime = _when()


class SuiteRunFiles(SQLModel, table=True):
    """A test run's log and JUnit XML, zlib-compressed and capped (autopack.test_logs), so
    `autopack logs` shows them on every machine that shares the store, not only where they ran."""

    __tablename__ = "test_run_files"

    test_run_id: int = Field(foreign_key="test_runs.id", primary_key=True)
    log: Optional[bytes] = None  # the log file's first bytes, compressed
    log_bytes: int = 0  # the whole log file's size; more than ``log`` holds: the stored copy was cut
    junit: Optional[bytes] = None  # the JUnit XML, compressed; None: none was written, or it was too big
    junit_bytes: int = 0


class SuiteOutcome(SQLModel, table=True):
    """The outcome of one test in one test run."""

    __tablename__ = "test_outcomes"

    id: Optional[int] = Field(default=None, primary_key=True)
    test_run_id: int = Field(foreign_key="test_runs.id", index=True)
    test_id: str
    outcome: str
    file: Optional[str] = None
    message: str = ""
    duration_s: float = 0.0
    collection_error: bool = False


class Baseline(SQLModel, table=True):
    """Cache: the test run that holds the outcomes for a (tree, test command) pair."""

    __tablename__ = "baselines"

    tree_sha: str = Field(primary_key=True)
    command_hash: str = Field(primary_key=True)
    test_run_id: int = Field(foreign_key="test_runs.id")
    created_at: datetime = _when()


class LlmCall(SQLModel, table=True):
    """The ledger: one row per API request, with its tokens and cost."""

    __tablename__ = "llm_calls"
    # Covering: usage totals per run (status, ab-test) are read from the index alone.
    __table_args__ = (Index("ix_llm_calls_run_role_usage", "run_id", "role", "input_tokens", "output_tokens",
                            "cache_read_tokens", "cache_write_tokens", "cost_usd"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id")
    phase_id: Optional[str] = None
    attempt_id: Optional[int] = Field(default=None, foreign_key="attempts.id", index=True)
    role: str
    model: str
    max_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    stop_reason: Optional[str] = None
    latency_ms: int = 0
    request_id: Optional[str] = None
    cost_usd: Optional[float] = None
    predicted_tokens: Optional[int] = None
    http_status: Optional[int] = None
    status: str = "ok"
    error: Optional[str] = None
    created_at: datetime = _when()


class TranscriptTurn(SQLModel, table=True):
    """One model exchange of an attempt: the messages it added and the answer, secrets redacted."""

    __tablename__ = "transcript_turns"

    id: Optional[int] = Field(default=None, primary_key=True)
    attempt_id: int = Field(foreign_key="attempts.id", index=True)
    turn: int
    max_tokens: int = 0
    request: dict = _json(nullable=False)
    response: dict = _json(nullable=False)
    created_at: datetime = _when()


class Executor(SQLModel, table=True):
    """A live or finished autopack process, with its heartbeat and what it is doing."""

    __tablename__ = "executors"
    __table_args__ = (  # the live ones, which status asks for, are few among many stopped
        Index("ix_executors_live", "run_id", "started_at", sqlite_where=text("stopped_at IS NULL"),
              postgresql_where=text("stopped_at IS NULL")),
    )

    id: str = Field(primary_key=True)
    pid: int
    host: str
    command: str
    run_id: Optional[str] = None
    phase_id: Optional[str] = None
    step: Optional[str] = None
    started_at: datetime = _when()
    heartbeat_at: datetime = _when(index=True)
    stopped_at: Optional[datetime] = _when(nullable=True)


class Event(SQLModel, table=True):
    """Things worth keeping that are not state: rescues, interruptions, warnings."""

    __tablename__ = "events"

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    phase_id: Optional[str] = None
    attempt_id: Optional[int] = None
    kind: str
    data: Optional[dict] = _json()
    created_at: datetime = _when()


class Landing(SQLModel, table=True):
    """A run's branch brought into its base by `autopack land` (or offered as a pull request)."""

    __tablename__ = "landings"

    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    method: str  # fast-forward | merge | rebase | pull-request
    base_branch: str
    base_before: str  # the base's commit before the landing
    landed_commit: str  # the base's new head (a pull request: the head pushed)
    partial: bool = False  # only the run's leading complete phases
    remote: Optional[str] = None  # where the run branch was pushed
    pr_url: Optional[str] = None
    details: Optional[dict] = _json()  # {"phases": [...], "decision": the re-run's verdict (rebase), ...}
    created_at: datetime = _when()


class AppliedMigration(SQLModel, table=True):
    """The `_migrations` table: which named migrations this database has had."""

    __tablename__ = "_migrations"

    name: str = Field(primary_key=True)
    applied_at: datetime = _when()
