"""`autopack land`: bring a run's branch into its base branch, push it, open a pull request."""

from __future__ import annotations

import shlex
import sys
from typing import Annotated, Optional

import typer

from autopack.cli import app
from autopack.cli.options import ID, DbOption, JsonOption, load
from autopack.errors import NoSuchRun, UsageError
from autopack.text import to_json


@app.command()
def land(
    run_id: Annotated[str, typer.Argument(parser=ID, metavar="RUN", help="The run to land.", show_default=False)],
    merge: Annotated[bool, typer.Option("--merge", help="Make a merge commit when the base has moved on.")] = False,
    rebase: Annotated[bool, typer.Option("--rebase", help="Rebase the run's commits onto the base and re-run the gate's suite first.")] = False,
    push: Annotated[Optional[str], typer.Option("--push", metavar="REMOTE", help="Push the run branch (what is landed) to REMOTE; never forced.")] = None,
    pr: Annotated[bool, typer.Option("--pr", help="Open a pull request (gh) instead of moving the base locally; needs --push.")] = False,
    draft: Annotated[bool, typer.Option("--draft", help="With --pr: a draft pull request.")] = False,
    partial: Annotated[bool, typer.Option("--partial", help="Land an incomplete run's leading complete phases.")] = False,
    as_json: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Bring RUN's branch into its base branch (the plan's run.base): fast-forward, else refuse naming
    what diverged; --merge or --rebase when the base moved on.

    A checkout with the base branch checked out is fast-forwarded only when it has no uncommitted
    changes. Exit 0 landed (or offered as a pull request), 1 refused (incomplete run, divergence,
    dirty checkout, conflicts, a failed re-run, a refused push), 2 bad usage, 4 git or gh failed,
    75 while an executor works on the run.
    """
    from autopack.land import LandRequest, land as land_run
    from autopack.store import open_store

    if merge and rebase:
        raise UsageError("--merge and --rebase: choose one")
    if draft and not pr:
        raise UsageError("--draft needs --pr")
    if pr and push is None:
        raise UsageError("--pr needs --push REMOTE: the pull request's head must be on the remote")
    settings = load(db)
    store = open_store(settings.db, create=False)
    if store is None:
        raise NoSuchRun(run_id, settings.db)
    method = "merge" if merge else "rebase" if rebase else "fast-forward"
    say = (lambda line: print(f"autopack: {line}", file=sys.stderr)) if as_json else print
    with store:
        landing = land_run(store, settings, LandRequest(run_id, method, partial, push, pr, draft), say)
    if as_json:
        print(to_json({"schema": 1, "run_id": landing.run_id, "method": landing.method,
                       "base_branch": landing.base_branch, "base_before": landing.base_before,
                       "landed_commit": landing.landed_commit, "phases": landing.phases, "partial": landing.partial,
                       "checkout": str(landing.checkout) if landing.checkout else None, "remote": landing.remote,
                       "pr_url": landing.pr_url, "pr_command": landing.pr_command,
                       "pr_body": str(landing.pr_body) if landing.pr_body else None,
                       "decision": landing.decision}, indent=2))
        return
    phases = f"{len(landing.phases)} phase(s): {', '.join(landing.phases)}"
    if landing.method == "up-to-date":
        print(f"nothing to land: {landing.base_branch} ({landing.base_before[:10]}) already has run "
              f"{landing.run_id}'s {phases}")
        return
    if landing.method == "pull-request":
        if landing.pr_url:
            print(f"pull request opened: {landing.pr_url} ({phases})")
        else:
            print(f"gh is not installed; the pull request's body is in {landing.pr_body}. Open it with:")
            print(shlex.join(landing.pr_command or []))
        return
    how = {"fast-forward": "fast-forwarded", "merge": "merged (a merge commit)", "rebase": "rebased and re-tested"}
    where = f"; checkout {landing.checkout} updated" if landing.checkout else ""
    print(f"landed run {landing.run_id} on {landing.base_branch}: {how[landing.method]}, "
          f"{landing.base_before[:10]} -> {landing.landed_commit[:10]}, {phases}{where}")
