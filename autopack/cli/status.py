"""`autopack status`: the runs in the store, or one run phase by phase."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from autopack.cli import app
from autopack.cli.options import DbOption, JsonOption, load
from autopack.errors import UsageError


@app.command()
def status(
    run_id: Annotated[Optional[str], typer.Argument(help="Show this run phase by phase.", show_default=False)] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """List runs (state, phases by state, cost), or show one run's phases, verdicts and failures."""
    from autopack import render
    from autopack.store import open_store
    from autopack.store.queries import STATUS_SCHEMA, list_runs, run_status

    settings = load(db)
    store = open_store(settings.db, create=False)
    if run_id is None:
        runs = []
        if store is not None:
            with store:
                runs = list_runs(store)
        if as_json:
            print(json.dumps({"schema": STATUS_SCHEMA, "runs": runs}, indent=2))
        else:
            render.print_runs(runs)
        return
    result = None
    if store is not None:
        with store:
            result = run_status(store, run_id)
    if result is None:
        raise UsageError(f"no run '{run_id}' in {settings.db}; `autopack status` lists the runs")
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        render.print_run_status(result)
