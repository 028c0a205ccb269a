"""`autopack plan`: draft a validated plan from a goal and the repository."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from autopack.cli import app
from autopack.cli.options import COST_USD, ID, DbOption, load, number_option
from autopack.bounds import Bounds
from autopack.errors import UsageError

PHASES = Bounds(1, 100)  # --max-phases


@app.command()
def plan(
    goal: Annotated[str, typer.Argument(help="What the plan should achieve.", show_default=False)],
    repo: Annotated[Path, typer.Option("--repo", help="The project (a git repository, or a directory in one).")] = Path("."),
    output: Annotated[str, typer.Option("-o", "--output", help="The plan file to write; - prints it instead.")] = "plan.toml",
    run_id: Annotated[Optional[str], typer.Option("--id", parser=ID, help="The run's id (default: the planner's choice).")] = None,
    max_phases: Annotated[int, number_option("--max-phases", bounds=PHASES, help="The most phases the plan may have.")] = 10,
    queue: Annotated[bool, typer.Option("--queue", help="After writing, show the plan and record its run as queued (for `autopack drain`).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Queue without asking (with --queue).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")] = False,
    cassette: Annotated[Optional[Path], typer.Option("--cassette", help="Replay the planner's answers from this cassette (offline); the plan names it as run.cassette.")] = None,
    record: Annotated[Optional[Path], typer.Option("--record", help="Write every live exchange to this cassette (needs ANTHROPIC_API_KEY).")] = None,
    max_cost: Annotated[Optional[float], number_option("--max-cost", bounds=COST_USD, help="Stop before a turn would take planning's cost past USD.")] = None,
    db: DbOption = None,
) -> None:
    """Draft a plan for GOAL: Claude reads the project (it changes and runs nothing) and submits
    phases, which autopack validates as `run` does and writes as TOML.

    Exit 0 when the plan is written (and queued, with --queue), 1 when the planner gave no
    valid plan (nothing is written), 2 for bad input, 4 without ANTHROPIC_API_KEY or a cassette.
    """
    from autopack import render
    from autopack.drafting import draft_plan, queue_plan
    from autopack.llm.client import deprecation_warning

    settings = load(db)
    if yes and not queue:
        raise UsageError("--yes answers --queue's question: give --queue too, or drop --yes")
    if queue and not yes and not sys.stdin.isatty():
        raise UsageError("--queue asks for confirmation on a terminal, and stdin is not one; add --yes to queue "
                         "without asking")
    if warning := deprecation_warning(settings.planner_model):
        print(f"autopack: warning: {warning}", file=sys.stderr)
    drafted = draft_plan(settings, goal, repo=repo, output=output, run_id=run_id, max_phases=max_phases, queue=queue,
                         force=force, cassette=cassette, record=record, max_cost_usd=max_cost)
    for warning in drafted.warnings:
        print(f"autopack: warning: {warning}", file=sys.stderr)
    cost = f"${drafted.cost_usd:.4f}" if drafted.cost_usd is not None else "cost unknown"
    summary = (f"run {drafted.spec.run.id}: {len(drafted.spec.phases)} phases drafted by {drafted.model} in "
               f"{drafted.turns} turns ({cost})")
    if drafted.path is None:
        sys.stdout.write(drafted.text)
        print(summary, file=sys.stderr)
        return
    print(f"{summary}; wrote {drafted.path}", file=sys.stderr)
    if not queue:
        print(f"next: autopack run {drafted.path} --dry-run, then autopack run {drafted.path}", file=sys.stderr)
        return
    render.print_plan(drafted.spec)
    if not yes and not typer.confirm(f"Queue run {drafted.spec.run.id} in {settings.db}?", default=False):
        print(f"not queued; the plan is in {drafted.path}", file=sys.stderr)
        return
    run = queue_plan(settings, drafted)
    print(f"run {run.id}: {len(drafted.spec.phases)} phases recorded as queued in {settings.db}; "
          "`autopack drain` executes them")
