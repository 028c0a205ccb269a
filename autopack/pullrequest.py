"""`land --pr`: a pull request for the run's (pushed) branch, with a body written from the run.

With the GitHub CLI ``gh`` on PATH it runs ``gh pr create``; without it, it writes the body
file and prints the exact command. The body lists each phase with its state, attempts, verdict
and the decision's reasons, its goal evidence where the decision has an ``evidence`` key, and
the run's tokens and cost. Model-written and test-named text is quoted so that markdown in it
(a heading, a table row, an @mention, an HTML tag) cannot change the page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from autopack.errors import EnvironmentProblem

if TYPE_CHECKING:
    from autopack.land import Landing

GH_TIMEOUT_S = 120


def _code(text: Any) -> str:
    """``text`` on one line as an inline code span: markdown and HTML inside it stay literal."""
    flat = " ".join(str(text).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    return f"{fence} {flat} {fence}"


def pr_body(status: dict[str, Any], landing: Landing) -> str:
    """The pull request's markdown, from `status --json` of the run and what is landed."""
    run = status["run"]
    tokens = run["tokens"]
    lines = [f"Carried out by autopack, run {_code(run['id'])}: {_code(run['goal'])}", ""]
    if landing.partial:
        lines += [f"**Partial**: only the leading complete phases ({', '.join(map(_code, landing.phases))}).", ""]
    lines += ["| phase | state | attempts | verdict |", "|---|---|---|---|"]
    for phase in status["phases"]:
        verdict = (phase["decision"] or {}).get("verdict") or "-"
        lines.append(f"| {_code(phase['id'])} | {phase['state']} | {phase['attempts']} | {verdict} |")
    for phase in status["phases"]:
        decision = phase["decision"] or {}
        lines += ["", f"### {_code(phase['id'])}"]
        lines += [f"- {_code(reason)}" for reason in decision.get("reasons", [])]
        if phase["state"] != "complete" and phase["last_failure"]:
            failure = phase["last_failure"]
            lines.append(f"- last failure: {_code(failure['kind'] + ': ' + failure['message'])}")
        if "evidence" in decision:
            lines += ["", "Evidence:", "", "```json", json.dumps(decision["evidence"], indent=2)
                      .replace("```", "`\u200b``"), "```"]
    if landing.decision is not None:
        lines += ["", f"Rebased onto `{landing.base_branch}` and re-tested: "
                      f"{_code('; '.join(landing.decision.get('reasons', [])))}"]
    lines += ["", f"Tokens: {tokens['input']:,} in, {tokens['output']:,} out, {tokens['cache_read']:,} cache read, "
                  f"{tokens['cache_write']:,} cache write. Cost: ${run['cost_usd']:.4f}"
              + (f" (+{run['unpriced_calls']} unpriced calls)" if run.get("unpriced_calls") else "") + "."]
    return "\n".join(lines) + "\n"


def open_pull_request(store: Any, settings: Any, run: Any, landing: Landing, draft: bool) -> None:
    """Write the body file, then open the pull request with gh (its URL kept on ``landing``) or, without gh,
    keep the command to run on ``landing``."""
    from autopack.errors import writing
    from autopack.store.queries import run_status

    body = settings.state_dir / "runs" / run.id / "pr-body.md"
    with writing(body, "the pull request's body"):
        body.parent.mkdir(parents=True, exist_ok=True)
        body.write_text(pr_body(run_status(store, run.id), landing), encoding="utf-8")
    command = ["gh", "pr", "create", "--base", landing.base_branch, "--head", run.branch,
               "--title", f"autopack: {' '.join(run.goal.split())}", "--body-file", str(body)]
    if draft:
        command.append("--draft")
    landing.pr_body = body
    gh = shutil.which("gh")
    if gh is None:
        landing.pr_command = command
        return
    try:
        done = subprocess.run([gh, *command[1:]], cwd=run.repo_root, capture_output=True, text=True,
                              timeout=GH_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EnvironmentProblem(f"gh pr create did not finish: {error}; the body is in {body}") from None
    if done.returncode != 0:
        why = next((line for line in done.stderr.splitlines() if line.strip()), f"exit {done.returncode}")
        raise EnvironmentProblem(f"gh pr create failed: {why} (the body is in {body}; `gh auth status` checks "
                                 "the login)")
    landing.pr_url = next((line.strip() for line in reversed(done.stdout.splitlines()) if line.strip()), None)
