"""The protocols the engine works through, and the values that cross them.

The runner knows a builder only as a ``Builder``: it hands it the task (``BuilderRequest``), a
``Toolbox`` bound to the attempt's worktree and an ``AttemptLog`` (cost caps, ledger and
transcript), and gets a ``BuildOutcome`` back; then it stages, tests and judges the change.
A builder that converses turn by turn reaches its model through a ``TurnModel``: Claude
(``llm.turns``) or a script (``llm.scripted``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    from autopack.edits import ApplyStats, EditOp
    from autopack.events import Event
    from autopack.llm.client import CallRecord

BUILDER_MODES = ("agent", "single")  # run.builder / the `builder` setting


class Observer(Protocol):
    """Receives progress events (``autopack.events``); the CLI renders and streams them, tests may record them."""

    def notify(self, event: Event) -> None: ...


class SilentObserver:
    def notify(self, event: Event) -> None:
        pass


@dataclass(frozen=True)
class BuilderRequest:
    """Everything the builder is told about one attempt of one phase."""

    run_goal: str
    phase_id: str
    phase_goal: str
    category: str
    complexity: str
    acceptance: tuple[str, ...]
    scope: tuple[str, ...] | None  # the write allow-list; None: any path
    scope_text: str | None
    deliverables: tuple[str, ...]
    files: dict[str, str]  # path -> content (scope + context), already capped
    omitted_files: tuple[str, ...]  # paths left out because of the cap
    attempt: int
    failure_digest: str | None = None  # previous attempt's failure, on a retry
    model: str | None = None  # overrides the builder's model (the runner's model ladder)
    context: tuple[str, ...] = ()  # the plan's read-only context entries (files or dir/)


@dataclass(frozen=True)
class Escalation:
    """A truncated response and the one retry it earned."""

    reason: str  # the stop_reason ("max_tokens"), or "near_limit" when ≥ 95 % of the budget was used
    utilisation: float  # output tokens / budget of the truncated response
    base: int  # the budget that was cut off
    new: int  # the escalated budget of the retry


@dataclass(frozen=True)
class ToolResult:
    """What a tool call returns to the model: text, and whether the call was refused or failed."""

    text: str
    is_error: bool = False


@dataclass(frozen=True)
class TranscriptEntry:
    """One model exchange of an attempt: what it added to the conversation, and the answer."""

    turn: int
    request: dict[str, Any]  # {"messages": [...]}; the first also has "system" and "tools" (names)
    response: dict[str, Any]  # {"content", "stop_reason", "usage"} or {"error", "kind"}
    max_tokens: int


@dataclass(frozen=True)
class BuildOutcome:
    """How an attempt's building ended: ``failure_kind`` None means judge the worktree as it is."""

    failure_kind: str | None
    message: str  # one line
    calls: tuple[CallRecord, ...] = ()  # every HTTP request, in order (already recorded through the log)
    escalations: tuple[Escalation, ...] = ()
    evidence: str = ""  # details of the failure (the reasons of rejected edits)
    edits: int = 0  # edit tool calls applied
    turns: int = 0
    model: str | None = None


class Toolbox(Protocol):
    """What a builder may do in the attempt's worktree (``engine.tools.AttemptTools``)."""

    @property
    def edits(self) -> int:
        """Edit calls applied so far."""

    def execute(self, name: str, arguments: Any) -> ToolResult:
        """Run one tool call (not ``finish``); a refused or failed call is an error result."""

    def apply(self, ops: Sequence[EditOp]) -> ApplyStats:
        """Apply a whole set of edits, all or nothing; raises ``EditError``."""


class AttemptLog(Protocol):
    """Where an attempt's money and words go: the cost caps, the ledger and the transcript."""

    def cost_refusal(self, model: str, request_chars: int, max_tokens: int,
                     unrecorded_usd: float = 0.0) -> str | None:
        """None when a call of this size may be made; else why not (the cost cap it would pass)."""

    def record(self, calls: Sequence[CallRecord], entry: TranscriptEntry | None) -> None:
        """Keep these ledger rows and this transcript entry (secrets redacted)."""


class Builder(Protocol):
    """Makes one attempt's change in the worktree, through the toolbox."""

    mode: str  # one of BUILDER_MODES

    def request_chars(self, request: BuilderRequest) -> int:
        """The size of the first call's request: checked against the cost caps before the attempt is recorded."""

    def attempt(self, request: BuilderRequest, toolbox: Toolbox, log: AttemptLog, max_tokens: int) -> BuildOutcome:
        """Build: call the model (every call within ``max_tokens``, escalated once when cut off), use the tools."""


@dataclass(frozen=True)
class TurnRequest:
    """One turn's Messages API call."""

    phase: str
    attempt: int
    turn: int
    model: str
    max_tokens: int
    predicted_tokens: int
    system: list[dict]
    messages: list[dict]
    tools: list[dict]


@dataclass(frozen=True)
class TurnReply:
    """The model's answer to one turn, or why there is none (``failure_kind``)."""

    content: tuple[dict, ...]  # the assistant message's blocks, as they are sent back
    stop_reason: str | None
    output_tokens: int
    calls: tuple[CallRecord, ...]
    response: dict[str, Any]  # for the transcript
    failure_kind: str | None = None  # api_error | cassette_exhausted | context_window
    message: str = ""


class TurnModel(Protocol):
    """A model that answers one turn at a time: Claude, or a script."""

    def reply(self, request: TurnRequest) -> TurnReply: ...
