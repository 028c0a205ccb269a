"""Progress while a run or a drain works: the live view on a terminal, timestamped lines in logs and
pipes, nothing with --quiet; behind the JSON Lines writer with ``--events``.

Consumes the typed events of ``autopack.events``; only this module, ``autopack.render`` and
``autopack.cli`` import rich.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from typing import Any

from rich.live import Live
from rich.text import Text

from autopack.domain.lifecycle import PhaseState
from autopack.events import AttemptFailed, Event, EventWriter, LlmCalls, PhaseFinished, Step
from autopack.render import console


class PlainObserver:
    """Timestamped lines, for logs (cron, CI) and pipes."""

    def __init__(self, stream: Any = None):
        self.stream = stream or sys.stdout

    def notify(self, event: Event) -> None:
        line = event.line()
        if line:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{stamp} {line}", file=self.stream, flush=True)


class LiveObserver:
    """On a terminal: a live line (phase, step, attempt, elapsed, tokens, cost) above the log."""

    def __init__(self, stderr: bool = False) -> None:
        self.console = console(stderr)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)
        self.started = time.monotonic()
        self.phase = self.step = "-"
        self.attempt = 0
        self.tokens = [0, 0]
        self.cost = 0.0

    def __enter__(self) -> "LiveObserver":
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def notify(self, event: Event) -> None:
        if isinstance(event, Step):
            self.phase, self.step, self.attempt = event.phase_id or "-", event.step, event.attempt or 0
        elif isinstance(event, LlmCalls):
            self.tokens[0] += event.input_tokens
            self.tokens[1] += event.output_tokens
            self.cost += event.cost_usd
        line = event.line()
        if line:
            failed = isinstance(event, AttemptFailed) or (isinstance(event, PhaseFinished) and event.state != PhaseState.COMPLETE)
            style = "red" if failed else "green" if isinstance(event, PhaseFinished) else ""
            self.console.print(Text(line, style=style))
        self.live.update(self._status())

    def _status(self) -> Text:
        elapsed = int(time.monotonic() - self.started)
        return Text(f"{self.phase}  {self.step}  attempt {self.attempt}  {elapsed // 60}:{elapsed % 60:02d}  "
                    f"tokens {self.tokens[0]:,}/{self.tokens[1]:,}  ${self.cost:.4f}", style="cyan")


class _Quiet:
    def notify(self, event: Event) -> None:
        pass

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _PlainContext(PlainObserver):
    def __enter__(self) -> "_PlainContext":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class DrainLiveObserver(LiveObserver):
    """On a terminal: phases done, completed, failed, elapsed and cost, above a line per phase."""

    def __init__(self, stderr: bool = False) -> None:
        super().__init__(stderr)
        self.completed = self.failed = 0

    def notify(self, event: Event) -> None:
        if isinstance(event, PhaseFinished):
            if event.state == PhaseState.COMPLETE:
                self.completed += 1
            else:
                self.failed += 1
        super().notify(event)

    def _status(self) -> Text:
        line = super()._status()
        line.append(f"   phases done {self.completed + self.failed}: {self.completed} complete, {self.failed} failed")
        return line


def _observer(live: type[LiveObserver], quiet: bool, events: Any) -> Any:
    """The progress view, behind the JSON Lines writer when ``events`` (a stream) is given.

    With the stream on stdout (``--events -``) the view goes to stderr, so stdout is JSON only."""
    to_stderr = events is sys.stdout
    view: Any = _Quiet()
    if not quiet:
        if (sys.stderr if to_stderr else sys.stdout).isatty():
            view = live(stderr=to_stderr)
        else:
            view = _PlainContext(sys.stderr if to_stderr else None)
    return EventWriter(events, view) if events is not None else view


def run_observer(events: Any = None) -> Any:
    """`autopack run`'s progress: the live view on a terminal, timestamped lines otherwise."""
    return _observer(LiveObserver, False, events)


def drain_observer(quiet: bool, events: Any = None) -> Any:
    """The drain's progress: live on a terminal, timestamped lines in logs, nothing with --quiet."""
    return _observer(DrainLiveObserver, quiet, events)
