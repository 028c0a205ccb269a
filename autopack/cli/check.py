"""`autopack check`: can a run start here? One screen, each gap with its fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from autopack.cli import app
from autopack.cli.options import DbOption, JsonOption, SandboxOption, load
from autopack.errors import EXIT_ENVIRONMENT, EXIT_OK
from autopack.text import to_json

MARKS = {"ok": ("ok", "green"), "warning": ("warn", "yellow"), "problem": ("FAIL", "red")}


@app.command()
def check(
    plan: Annotated[Optional[Path], typer.Argument(help="Check for this plan (its repository, base, test command, "
                                                        "sandbox, models and cassette).", show_default=False)] = None,
    run_tests: Annotated[bool, typer.Option("--run-tests", help="Also run the suite once, in a temporary worktree "
                                                                "of the base, to see that it yields per-test results.")] = False,
    as_json: JsonOption = False,
    sandbox: SandboxOption = None,
    db: DbOption = None,
) -> None:
    """What this machine and repository support: git, the repository and base ref, the test command and
    its toolchain, the suite (--run-tests), the sandbox, the store, the API key (never shown) and the models.

    Records and changes nothing. Exit 0 when a run can start, 4 when something stops it.
    """
    from autopack.check import run_checks
    from autopack.plan import load_plan

    settings = load(db, sandbox=sandbox)
    spec = load_plan(plan, default_max_attempts=settings.max_attempts) if plan is not None else None
    checkup = run_checks(settings, Path.cwd(), spec, run_tests=run_tests)
    if as_json:
        print(to_json(checkup.to_dict(), indent=2))
    else:
        _print(checkup)
    raise typer.Exit(EXIT_OK if checkup.ready else EXIT_ENVIRONMENT)


def _print(checkup) -> None:
    from rich.table import Column, Table
    from rich.text import Text

    from autopack.render import console

    table = Table(Column("check", no_wrap=True), Column(""), Column("found", overflow="fold"),
                  Column("fix", overflow="fold"), box=None, pad_edge=False, show_header=True)
    for finding in checkup.findings:
        mark, style = MARKS[finding.status]
        table.add_row(finding.name, Text(mark, style=style), finding.detail, finding.fix or "")
    out = console()
    out.print(table)
    out.print("ready: a run can start here" if checkup.ready
              else "not ready: fix the FAIL lines above (exit 4)")
