"""What an executor tells its observer, as typed events; and the JSON Lines stream of them.

The engine (runner, launch, drain, advice) calls ``observer.notify(event)`` with one of the
dataclasses below. The live and plain views (``autopack.render``) show them; ``--events FILE``
writes each as one JSON object per line (``EventWriter``). Every record has ``schema``,
``event``, ``time``, ``run_id``, ``phase_id`` and ``attempt`` (null where the event is not
about one), then the event's own fields (README, "The event stream").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import IO, TYPE_CHECKING, Any, ClassVar, Sequence

from autopack.domain.lifecycle import PhaseState
from autopack.text import to_json

if TYPE_CHECKING:
    from autopack.llm.client import CallRecord

SCHEMA = 1  # the version of the stream's records; bumped only when a field changes meaning or goes
IDS = ("run_id", "phase_id", "attempt")


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened to a run; ``name`` is its ``event`` in the stream."""

    name: ClassVar[str] = ""
    run_id: str | None = None
    phase_id: str | None = None
    attempt: int | None = None  # the phase's attempt number (as `status` counts them)

    def fields(self) -> dict[str, Any]:
        """The event's own fields (its ids left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in IDS}

    def record(self, time: str) -> dict[str, Any]:
        """The stream's object for this event, at ``time`` (ISO 8601, UTC)."""
        return {"schema": SCHEMA, "event": self.name, "time": time,
                **{key: getattr(self, key) for key in IDS}, **self.fields()}

    def line(self) -> str | None:
        """One line for a log, or None for events only the live view shows."""
        return None

    def where(self) -> str:
        """The phase as a drain's log names it: run/phase (the run alone when no phase)."""
        return "/".join(part for part in (self.run_id, self.phase_id) if part)


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    name: ClassVar[str] = "run_started"
    phases: tuple[str, ...] = ()

    def line(self) -> str:
        return f"run {self.run_id}: {len(self.phases)} phases"


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    name: ClassVar[str] = "run_finished"
    counts: dict[str, int]  # phases by state

    def line(self) -> str:
        return f"run {self.run_id} finished: " + ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))


@dataclass(frozen=True, kw_only=True)
class RunBusy(Event):
    name: ClassVar[str] = "run_busy"

    def line(self) -> str:
        return f"run {self.run_id}: skipped, another executor holds its lock"


@dataclass(frozen=True, kw_only=True)
class RunUnavailable(Event):
    name: ClassVar[str] = "run_unavailable"
    message: str

    def line(self) -> str:
        return f"run {self.run_id}: skipped: {self.message}"


@dataclass(frozen=True, kw_only=True)
class Requeued(Event):
    name: ClassVar[str] = "requeued"
    phase_ids: tuple[str, ...]

    def line(self) -> str:
        return f"requeued for a new pass: {', '.join(self.phase_ids)}"


@dataclass(frozen=True, kw_only=True)
class Recovered(Event):
    name: ClassVar[str] = "recovered"
    what: str

    def line(self) -> str:
        return f"{self.where()}: recovered: {self.what}"


@dataclass(frozen=True, kw_only=True)
class Parked(Event):
    name: ClassVar[str] = "parked"
    reason: str

    def line(self) -> str:
        return f"{self.where()}: parked: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class CostCapHit(Event):
    name: ClassVar[str] = "cost_cap"
    message: str

    def line(self) -> str:
        return f"{self.where()}: stopped: {self.message}"


@dataclass(frozen=True, kw_only=True)
class AttemptStarted(Event):
    name: ClassVar[str] = "attempt_started"
    max_attempts: int  # per pass
    model: str | None = None

    def line(self) -> str:
        return f"{self.phase_id}: attempt {self.attempt} (up to {self.max_attempts} per pass)"


@dataclass(frozen=True, kw_only=True)
class Step(Event):
    name: ClassVar[str] = "step"
    step: str  # baseline | builder | apply | tests | finalize | commit (and later steps)


@dataclass(frozen=True, kw_only=True)
class LlmCalls(Event):
    """One exchange's HTTP requests (an SDK retry is a request of its own), summed."""

    name: ClassVar[str] = "llm_call"
    role: str = "builder"  # builder | doctor
    model: str | None = None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0  # unpriced calls count 0
    errors: int = 0

    @classmethod
    def of(cls, calls: Sequence[CallRecord], **ids: Any) -> LlmCalls:
        return cls(role=calls[0].role if calls else "builder", model=calls[-1].model if calls else None,
                   requests=len(calls), input_tokens=sum(c.usage.input_tokens for c in calls),
                   output_tokens=sum(c.usage.output_tokens for c in calls),
                   cache_read_tokens=sum(c.usage.cache_read_tokens for c in calls),
                   cache_write_tokens=sum(c.usage.cache_write_tokens for c in calls),
                   cost_usd=sum(c.cost_usd or 0.0 for c in calls),
                   errors=sum(c.status != "ok" for c in calls), **ids)


@dataclass(frozen=True, kw_only=True)
class TestsRan(Event):
    __test__: ClassVar[bool] = False  # not a pytest class
    name: ClassVar[str] = "tests"
    kind: str  # baseline | attempt | agent | rerun kinds (as the store's test runs)
    counts: dict[str, int]
    exit_code: int | None


@dataclass(frozen=True, kw_only=True)
class Escalated(Event):
    name: ClassVar[str] = "escalation"
    base: int
    new: int

    def line(self) -> str:
        return f"{self.phase_id}: answer cut off; escalating the budget {self.base} -> {self.new} tokens"


@dataclass(frozen=True, kw_only=True)
class Advised(Event):
    name: ClassVar[str] = "advice"
    source: str  # "doctor" or "pattern <name>"

    def line(self) -> str:
        return f"{self.phase_id}: next attempt gets a diagnosis ({self.source})"


@dataclass(frozen=True, kw_only=True)
class AttemptFailed(Event):
    name: ClassVar[str] = "attempt_failed"
    kind: str
    message: str

    def line(self) -> str:
        return f"{self.phase_id}: attempt {self.attempt} failed: {self.kind}: {self.message}"


@dataclass(frozen=True, kw_only=True)
class PhaseFinished(Event):
    name: ClassVar[str] = "phase_finished"
    state: str  # complete | failed
    commit: str | None = None
    reasons: tuple[str, ...] = ()
    kind: str | None = None  # a failed phase's failure kind
    message: str = ""

    def line(self) -> str:
        if self.state == PhaseState.COMPLETE:
            return f"{self.phase_id}: complete at {(self.commit or '')[:10]}: {'; '.join(self.reasons)}"
        return f"{self.phase_id}: failed: {self.kind}: {self.message}"


EVENTS: tuple[type[Event], ...] = (
    RunStarted, RunFinished, RunBusy, RunUnavailable, Requeued, Recovered, Parked, CostCapHit, AttemptStarted,
    Step, LlmCalls, TestsRan, Escalated, Advised, AttemptFailed, PhaseFinished)


class EventWriter:
    """Writes each event as one JSON line to ``stream``, flushed, then passes it on to ``then``."""

    def __init__(self, stream: IO[str], then: Any = None):
        self.stream, self.then = stream, then

    def notify(self, event: Event) -> None:
        from autopack.store.models import utcnow

        stamp = utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.stream.write(to_json(event.record(stamp)) + "\n")
        self.stream.flush()
        if self.then is not None:
            self.then.notify(event)

    def __enter__(self) -> EventWriter:
        if self.then is not None:
            self.then.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.then is not None:
            self.then.__exit__(*exc)
