"""`autopack run`: execute a plan (or resume a recorded run) and report what happened."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from autopack.cli import app
from autopack.cli.options import COST_USD, ID, DbOption, SandboxOption, load, number_option
from autopack.cli.stream import EventsOption, open_events, refuse_events
from autopack.domain.lifecycle import RunState
from autopack.errors import EXIT_FAILED, EXIT_OK, UsageError


@app.command()
def run(
    plan: Annotated[Optional[Path], typer.Argument(help="The plan file (TOML).", show_default=False)] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", parser=ID, help="Resume a recorded run.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the phases in execution order; touch nothing.")] = False,
    queue_only: Annotated[bool, typer.Option("--queue-only", help="Record the run with every phase queued; execute nothing.")] = False,
    cassette: Annotated[Optional[Path], typer.Option("--cassette", help="Replay LLM responses from this cassette (offline).")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Give failed phases a new pass (and unskip their dependents).")] = False,
    max_cost: Annotated[Optional[float], number_option("--max-cost", bounds=COST_USD, help="Stop before a call would take the run's total cost (from the ledger) past USD.")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="Write every live LLM exchange to this cassette (needs ANTHROPIC_API_KEY).")] = None,
    events: EventsOption = None,
    sandbox: SandboxOption = None,
    db: DbOption = None,
) -> None:
    """Carry out PLAN: each phase written by Claude, applied in a worktree, tested and judged.

    Exit 0 when the run is complete, 1 when a phase failed, 2 for an invalid plan,
    4 for an environment problem, 75 when another process is executing this run.
    """
    from autopack import launch, progress, render
    from autopack.plan import load_plan
    from autopack.sandbox import sandbox_for

    settings = load(db, sandbox=sandbox)
    if plan is None and run_id is None:
        raise UsageError("give a plan file (autopack run PLAN) or a recorded run (autopack run --run-id ID)")
    spec = load_plan(plan, default_max_attempts=settings.max_attempts) if plan is not None else None
    if spec is not None and run_id is not None and run_id != spec.run.id:
        raise UsageError(f"--run-id {run_id} does not match run.id '{spec.run.id}' in {plan}")
    if dry_run:
        if spec is None:
            raise UsageError("--dry-run needs the plan file")
        render.print_plan(spec)
        return
    if queue_only and (cassette or record):
        raise UsageError("--queue-only executes nothing, so --cassette and --record would be ignored; give "
                         "them to the command that executes the run (a drain replays the plan's run.cassette)")
    if queue_only:
        refuse_events(events, "--queue-only executes nothing; give --events to the drain that executes the run")
    if spec is not None and not queue_only:  # a machine that cannot build the sandbox: exit 4, nothing recorded
        sandbox_for(settings, spec.run.sandbox, settings.state_dir)
    stream = open_events(events)  # before anything is recorded: a path that cannot be written changes nothing
    for warning in spec.warnings if spec else ():
        print(f"autopack: warning: {warning}", file=sys.stderr)

    def connect(plan: object) -> object:
        """The model clients (a cassette, or the API key) only when this command executes phases."""
        return None if queue_only else launch.connect(settings, plan, cassette, record)

    from autopack.store import open_store

    store = open_store(settings.db, create=False)
    if spec is not None:
        clients = connect(spec)
        recorded, notice = launch.recorded_run(store, settings, spec) if store is not None else (None, None)
        if notice:
            print(f"autopack: {notice}", file=sys.stderr)
        if recorded is None:
            target = launch.check_new_run(settings, spec)  # before the database is created
            store = store or open_store(settings.db)
            recorded = launch.record_run(store, spec, target, settings)
    else:
        spec, recorded = launch.resume_target(store, settings, run_id)
        if not queue_only:
            sandbox_for(settings, spec.run.sandbox, settings.state_dir)
        clients = connect(spec)
    for warning in launch.model_warnings(settings, spec):
        print(f"autopack: warning: {warning}", file=sys.stderr)
    with store:
        if queue_only:
            print(f"run {spec.run.id}: {len(spec.phases)} phases recorded as queued in {settings.db}")
            return
        observer = progress.run_observer(stream)
        with observer:
            result = launch.execute(store, settings, spec, recorded, clients, observer,
                                    retry_failed=retry_failed, max_cost_usd=max_cost)
        from autopack.store.queries import run_status

        status = run_status(store, result.run_id)
    render.print_run_summary(status, stderr=stream is sys.stdout)
    raise typer.Exit(EXIT_OK if result.state == RunState.COMPLETE else EXIT_FAILED)
