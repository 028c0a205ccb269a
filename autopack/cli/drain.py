"""`autopack drain`, `autopack drain-one` and `autopack pick-next`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from autopack.bounds import Bounds
from autopack.cli import app
from autopack.cli.options import (COST_USD, COUNT, ID, MINUTES, DbOption, JsonOption, SandboxOption, load,
                                  number_option)
from autopack.cli.stream import EventsOption, open_events, refuse_events
from autopack.domain.lifecycle import PhaseState, RunState
from autopack.errors import EXIT_FAILED, EXIT_OK, NoSuchRun, UsageError
from autopack.text import shown, to_json

if TYPE_CHECKING:
    from autopack.drain import DrainOptions

# The rows `drain --dry-run` prints at least (more with a larger --batch-size); --json prints all.
DRY_RUN_ROWS = 50
WORKERS = Bounds(1, 64)


@app.command()
def drain(
    run_id: Annotated[Optional[str], typer.Option("--run-id", parser=ID, help="Drain only this run; exit 0 only if it ends complete.")] = None,
    batch_size: Annotated[int, number_option("--batch-size", bounds=COUNT, help="Stop after this many phases.")] = 10,
    max_consecutive_zero_yield: Annotated[Optional[int], number_option("--max-consecutive-zero-yield", bounds=COUNT, help="Stop after K phases in a row without a completion.")] = None,
    max_minutes: Annotated[Optional[float], number_option("--max-minutes", bounds=MINUTES, help="Stop claiming work after this many minutes.")] = None,
    max_cost: Annotated[Optional[float], number_option("--max-cost", bounds=COST_USD, help="Stop claiming work once this drain has spent USD.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the ordered candidates with the reason for each position; change nothing.")] = False,
    include_parked: Annotated[bool, typer.Option("--include-parked", help="Also drain parked phases.")] = False,
    workers: Annotated[int, number_option("--workers", bounds=WORKERS, help="Drain up to N runs at once, each in its own process.")] = 1,
    as_json: JsonOption = False,
    junit_xml: Annotated[Optional[Path], typer.Option("--junit-xml", help="Write each drained phase as a JUnit testcase.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    events: EventsOption = None,
    sandbox: SandboxOption = None,
    db: DbOption = None,
) -> None:
    """Execute drainable phases (queued, or failed and not parked) across runs, most urgent first.

    Safe to start from cron while another drain runs: locked runs are skipped, claims are
    atomic. Exit 0 when everything drained completed (or there was nothing to do), 1 when a
    phase failed, a run could not be entered (named, with why) or run --run-id is not
    complete, 75 when --run-id's run is locked.
    """
    from autopack import progress
    from autopack.drain import DrainOptions, Drainer
    from autopack.store import open_reader, open_store
    from autopack.sandbox import sandbox_for
    from autopack.store.queries import run_exists

    settings = load(db, sandbox=sandbox)
    _check_events(events, as_json, dry_run=dry_run, workers=workers if not run_id else 1)
    if not dry_run:  # before anything is claimed; a run whose plan tightens it is checked when entered
        sandbox_for(settings, None, settings.state_dir)
    options = DrainOptions(run_id=run_id, batch_size=batch_size, max_consecutive_zero_yield=max_consecutive_zero_yield,
                           max_minutes=max_minutes, max_cost_usd=max_cost, include_parked=include_parked)
    store = open_reader(settings.db) if dry_run else open_store(settings.db, create=False)  # a dry run only reads
    if store is None:
        if run_id:
            raise NoSuchRun(run_id, settings.db)
        _finish({"schema": 1, "processed": 0, "completed": 0, "failed": 0, "stop_reason": "no database yet",
                 "phases": []}, as_json, junit_xml, quiet)
        return
    with store:
        if run_id and not run_exists(store, run_id):
            raise NoSuchRun(run_id, settings.db)
        if dry_run:
            _print_candidates(store, settings, options, as_json, shown=max(batch_size, DRY_RUN_ROWS))
            return
        if workers > 1 and not run_id:  # one run is executed by one process at a time anyway
            summary = _drain_in_workers(workers, options, settings.db, sandbox)
        else:
            observer = progress.drain_observer(quiet or as_json, open_events(events))
            with observer:
                report = Drainer(store, settings, options, observer).drain()
            summary = report.to_dict()
        if run_id:
            from autopack.store.queries import run_status

            summary["run"] = {"id": run_id, "state": run_status(store, run_id)["run"]["state"]}
    code = _finish(summary, as_json, junit_xml, quiet, stderr=events == "-")
    raise typer.Exit(code)


def _check_events(events: str | None, as_json: bool, *, dry_run: bool = False, workers: int = 1) -> None:
    if events == "-" and as_json:
        refuse_events(events, "stdout carries the --json summary; write the events to a file")
    if dry_run:
        refuse_events(events, "--dry-run executes nothing")
    if workers > 1:
        refuse_events(events, "--workers runs other processes; drain in one process (or per run with --run-id)")


def _print_candidates(db: object, settings: object, options: "DrainOptions", as_json: bool, shown: int) -> None:
    """`drain --dry-run`: the ordered candidates, each with the reason for its place."""
    from autopack import render
    from autopack.drain import plan_candidates

    candidates = plan_candidates(db, settings, options)
    if as_json:
        print(to_json({"schema": 1, "candidates": [
            {"position": n, "run_id": c.phase.run_id, "phase_id": c.phase.phase_id, "state": c.phase.state,
             "rank": c.rank, "reason": c.reason} for n, c in enumerate(candidates, 1)]}, indent=2))
    else:
        render.print_candidates(candidates, shown=shown)


def _finish(summary: dict, as_json: bool, junit_xml: Path | None, quiet: bool, stderr: bool = False) -> int:
    from autopack import render

    if junit_xml:
        try:
            render.write_drain_junit(summary, junit_xml)
        except OSError as error:
            raise UsageError(f"--junit-xml {shown(str(junit_xml), quote=False)}: cannot write the report: "
                             f"{error.strerror or error}") from None
    if as_json:
        print(to_json(summary, indent=2))
    else:
        render.print_drain_summary(summary, stderr)
    if summary.get("stop_reason", "").startswith("cost cap"):
        return EXIT_FAILED
    if "run" in summary:
        return EXIT_OK if summary["run"]["state"] == RunState.COMPLETE else EXIT_FAILED
    # A run it could not enter is work left undone; a busy one is another executor's (cron overlap).
    return EXIT_FAILED if summary["failed"] or summary.get("unavailable_runs") else EXIT_OK


def _drain_in_workers(workers: int, options: "DrainOptions", db: Any, sandbox: str | None) -> dict:
    """N `autopack drain` processes over the same store; their JSON summaries merged.

    The batch size and the cost cap are shared out between the workers. A PostgreSQL URL reaches
    them in AUTOPACK_DB, whole: ``str()`` hides its password, and a command line is visible to ``ps``.
    """
    import os
    import subprocess

    share = None if options.max_cost_usd is None else options.max_cost_usd / workers
    env = {**os.environ, "AUTOPACK_DB": str(db) if isinstance(db, Path) else db.url}
    args = ["--batch-size", str(max(1, -(-options.batch_size // workers))), "--json", "--quiet"]
    for flag, value in (("--max-consecutive-zero-yield", options.max_consecutive_zero_yield),
                        ("--max-minutes", options.max_minutes), ("--max-cost", share)):
        if value is not None:
            args += [flag, str(value)]
    if options.include_parked:
        args.append("--include-parked")
    if sandbox:
        args += ["--sandbox", sandbox]
    procs = [subprocess.Popen([sys.executable, "-m", "autopack", "drain", *args], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(workers)]
    merged: dict = {"schema": 1, "processed": 0, "completed": 0, "failed": 0, "phases": [], "busy_runs": [],
                    "unavailable_runs": {}, "stop_reason": "", "workers": workers, "cost_usd": 0.0}
    reasons = set()
    for proc in procs:
        out, _ = proc.communicate()
        try:
            part = json.loads(out)
        except ValueError:
            raise UsageError(f"a drain worker exited {proc.returncode} without a summary") from None
        for key in ("processed", "completed", "failed", "cost_usd"):
            merged[key] += part.get(key, 0)
        merged["phases"] += part.get("phases", [])
        merged["busy_runs"] = sorted(set(merged["busy_runs"]) | set(part.get("busy_runs", [])))
        merged["unavailable_runs"].update(part.get("unavailable_runs", {}))
        reasons.add(part.get("stop_reason", ""))
    merged["stop_reason"] = "; ".join(sorted(r for r in reasons if r))
    return merged


@app.command("drain-one")
def drain_one(
    run_id: Annotated[str, typer.Option("--run-id", parser=ID, help="The run.")],
    phase_id: Annotated[str, typer.Option("--phase-id", parser=ID, help="The phase to give one pass.")],
    force: Annotated[bool, typer.Option("--force", help="Run a complete phase again.")] = False,
    as_json: JsonOption = False,
    events: EventsOption = None,
    sandbox: SandboxOption = None,
    db: DbOption = None,
) -> None:
    """One pass at exactly one phase (a failed phase is requeued). Exit 0 iff it ends complete."""
    from autopack import drain as drains
    from autopack import progress, render
    from autopack.store import open_store

    settings = load(db, sandbox=sandbox)
    _check_events(events, as_json)
    store = open_store(settings.db, create=False)
    if store is None:
        raise NoSuchRun(run_id, settings.db)
    with store:
        observer = progress.drain_observer(as_json, open_events(events))
        with observer:
            result = drains.drain_one(store, settings, run_id, phase_id, force=force, observer=observer)
    summary = drains.DrainReport(results=[result], stop_reason="one phase").to_dict()
    if as_json:
        print(to_json(summary, indent=2))
    else:
        render.print_drain_summary(summary, stderr=events == "-")
    raise typer.Exit(EXIT_OK if result.state == PhaseState.COMPLETE else EXIT_FAILED)


@app.command("pick-next")
def pick_next(
    output_format: Annotated[str, typer.Option("--format", help="text: run_id<TAB>run_type; json: the choice and its score.")] = "text",
    explain: Annotated[bool, typer.Option("--explain", help="Show each score component for the top 5 runs.")] = False,
    db: DbOption = None,
) -> None:
    """The run to drain next (deterministic). Nothing to drain: empty output, exit 0."""
    from autopack import render
    from autopack.drain import park_rule
    from autopack.picker import EXPLAINED_RUNS, WEIGHTS, score_runs
    from autopack.store import open_reader

    if output_format not in ("text", "json"):
        raise UsageError(f"--format: '{output_format}' is not text or json")
    settings = load(db)
    reader = open_reader(settings.db)
    scores = []
    if reader is not None:
        with reader:
            scores = score_runs(reader, park_rule(settings), limit=EXPLAINED_RUNS)
    best = scores[0] if scores else None
    if output_format == "json":
        payload = {"schema": 1, "run_id": best.run_id if best else None, "run_type": best.run_type if best else None,
                   "score": round(best.score, 3) if best else None}
        if explain:
            payload["top"] = [s.to_dict() for s in scores]
            payload["weights"] = WEIGHTS
        print(to_json(payload, indent=2))
        return
    if best:
        print(f"{best.run_id}\t{best.run_type}")
    if explain and scores:
        render.print_pick_explanation(scores, WEIGHTS)
    elif explain:  # stdout stays empty, as a script reads it
        print("nothing to drain", file=sys.stderr)
