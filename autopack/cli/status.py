"""`autopack status`: the runs in the store, or one run phase by phase; telemetry with --stats."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

import typer

from autopack.bounds import Bounds
from autopack.cli import app
from autopack.cli.options import ID, MINUTES, DbOption, JsonOption, load, number_option
from autopack.errors import NoSuchRun, UsageError
from autopack.text import to_json


@app.command()
def status(
    run_id: Annotated[Optional[str], typer.Argument(parser=ID, metavar="RUN", help="Show this run phase by phase.", show_default=False)] = None,
    as_json: JsonOption = False,
    stats: Annotated[bool, typer.Option("--stats", help="Telemetry: truncation, escalations, estimation error, doctor, failure kinds, cache, cost per phase.")] = False,
    stats_run: Annotated[Optional[str], typer.Option("--run-id", parser=ID, help="With --stats: only this run.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh the view every 2 s until Ctrl-C.")] = False,
    waiting_after: Annotated[float, number_option("--waiting-after", bounds=MINUTES, help="Minutes after which a queued phase with no live executor is listed as waiting.")] = 60.0,
    limit: Annotated[int, number_option("--limit", bounds=Bounds(0, 1_000_000), help="List the newest N runs (0: every run).")] = 20,
    transcript: Annotated[Optional[str], typer.Option("--transcript", metavar="PHASE[:N]", help="With RUN: the transcript of the phase's attempt N (default: its last), every exchange with the model.")] = None,
    db: DbOption = None,
) -> None:
    """List runs (state, phases by state, cost, executors at work), or one run's phases, verdicts and failures."""
    from autopack import render

    settings = load(db)
    if transcript is not None:
        shown = _transcript(settings, run_id, transcript)
        print(to_json(shown, indent=2)) if as_json else render.print_transcript(shown)
        return
    if stats:
        report = _stats(settings, stats_run or run_id)
        print(to_json(report, indent=2)) if as_json else render.print_stats(report)
        return
    if watch and not as_json:
        from rich.live import Live

        with Live(render.status_view(_snapshot(settings, run_id, waiting_after, limit)), refresh_per_second=1,
                  console=render.console()) as live:
            while True:
                time.sleep(2)
                live.update(render.status_view(_snapshot(settings, run_id, waiting_after, limit)))
    snapshot = _snapshot(settings, run_id, waiting_after, limit)
    if as_json:
        print(to_json(snapshot, indent=2))
    elif run_id is None:
        render.print_runs(snapshot["runs"], snapshot)
    else:
        render.print_run_status(snapshot)


def _snapshot(settings: Any, run_id: str | None, waiting_after_min: float, limit: int) -> dict[str, Any]:
    from autopack.store import STATUS_SCHEMA, open_reader

    reader = open_reader(settings.db)
    if reader is None:
        if run_id is not None:
            raise NoSuchRun(run_id, settings.db)
        return {"schema": STATUS_SCHEMA, "runs": [], "total_runs": 0, "executors": [], "stale_executors": [],
                "waiting_phases": []}
    from autopack.store.activity import activity
    from autopack.store.queries import count_runs, list_runs, run_status

    if run_id is not None:
        with reader:
            result = run_status(reader, run_id)
        if result is None:
            raise NoSuchRun(run_id, settings.db)
        return result
    with reader:
        now = datetime.now(timezone.utc)
        return {"schema": STATUS_SCHEMA, "runs": list_runs(reader, limit or None), "total_runs": count_runs(reader),
                **activity(reader, now, settings.lease_s, waiting_after_min * 60)}


def _transcript(settings: Any, run_id: str | None, which: str) -> dict[str, Any]:
    from autopack.store import open_reader
    from autopack.store.transcripts import attempt_transcript

    phase_id, _, number = which.partition(":")
    if run_id is None or not phase_id or (number and not number.isdigit()):
        raise UsageError(f"--transcript {which}: give a run and PHASE or PHASE:N (an attempt number), e.g. "
                         "`autopack status RUN --transcript add-power:2`")
    reader = open_reader(settings.db)
    if reader is None:
        raise NoSuchRun(run_id, settings.db)
    with reader:
        shown = attempt_transcript(reader, run_id, phase_id, int(number) if number else None)
    if shown is None:
        what = f"attempt {number} of phase '{phase_id}'" if number else f"attempt of phase '{phase_id}'"
        raise UsageError(f"--transcript {which}: run '{run_id}' has no {what}; `autopack status {run_id}` "
                         "lists its phases and attempts")
    return shown


def _stats(settings: Any, run_id: str | None) -> dict[str, Any]:
    from autopack.store import open_reader
    from autopack.store.queries import run_exists
    from autopack.store.stats import telemetry

    reader = open_reader(settings.db)
    if reader is None:
        if run_id:
            raise NoSuchRun(run_id, settings.db)
        return {"schema": 1, "run_id": None, "builder_calls": 0}
    with reader:
        if run_id and not run_exists(reader, run_id):
            raise NoSuchRun(run_id, settings.db)
        return telemetry(reader, run_id)
