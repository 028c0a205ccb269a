"""Terminal output: rich tables for plans, runs, phases, stats and drains (progress is ``autopack.progress``).

Only this module, ``autopack.progress`` and ``autopack.cli`` import rich.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from autopack.domain.lifecycle import PhaseState, RunState
from autopack.errors import AutopackError

STATE_STYLE = {PhaseState.COMPLETE: "green", PhaseState.FAILED: "red", PhaseState.SKIPPED: "yellow",
               PhaseState.QUEUED: "dim", PhaseState.EXECUTING: "cyan", PhaseState.CI_RUNNING: "cyan",
               PhaseState.GATE: "cyan", RunState.RUNNING: "cyan"}


def console(stderr: bool = False) -> Console:
    # markup=False: goals, test ids and failure messages are user text; "[/x]" in one must print as is.
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False,
                   soft_wrap=not sys.stdout.isatty())


def _id_column(header: str, ids: list[str]) -> Column:
    """A column wide enough that ids (which scripts grep for) are never cut, even at 80 columns."""
    return Column(header, min_width=max([len(header), *map(len, ids)]))


def _path_column(header: str) -> Column:
    """Paths wrap onto the next line instead of being cut with an ellipsis."""
    return Column(header, overflow="fold", min_width=len(header))


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def _cost(entry: dict[str, Any]) -> str:
    text = f"${entry.get('cost_usd', 0.0):.4f}"
    unpriced = entry.get("unpriced_calls", 0)
    return f"{text} (+{unpriced} unpriced)" if unpriced else text


def print_plan(plan: Any) -> None:
    """`run --dry-run`: phases in execution order with scope, deliverables and dependencies."""
    from autopack.toolchains import resolve_test_command

    out = console()
    out.print(f"run {plan.run.id}: {plan.run.goal}")
    out.print(f"repository {plan.run.repo}  base {plan.run.base or 'HEAD'}")
    try:
        test = resolve_test_command(plan.run.repo, plan.run.test_command, plan.run.junit_xml)
        out.print(f"tests: `{test.command}` ({test.ecosystem}: {test.reason})")
    except AutopackError as exc:
        out.print(f"tests: cannot be determined: {exc}")
    table = Table("#", _id_column("phase", [phase.id for phase in plan.phases]), "category",
                  _path_column("scope"), _path_column("deliverables"), "depends on", "attempts")
    for n, phase in enumerate(plan.execution_order(), 1):
        scope = "\n".join(phase.scope) if phase.scope is not None else f"(free text) {phase.scope_text}"
        table.add_row(str(n), Text.assemble(phase.id, "\n", (phase.goal, "dim")),
                      f"{phase.category}\n{phase.complexity}", scope, "\n".join(phase.deliverables) or "-",
                      ", ".join(phase.depends_on) or "-", str(phase.max_attempts))
    out.print(table)
    for warning in plan.warnings:
        console(stderr=True).print(f"warning: {warning}")


def print_runs(runs: list[dict[str, Any]], activity: dict[str, Any] | None = None) -> None:
    console().print(status_view({"runs": runs, **(activity or {})}))


def status_view(snapshot: dict[str, Any]) -> Any:
    """The list view (runs, executors at work, stale executors, waiting phases), or one run's view."""
    from rich.console import Group

    if "run" in snapshot:
        return Group(*_run_status_parts(snapshot))
    runs = snapshot.get("runs", [])
    if not runs:
        return Text("no runs yet: `autopack run PLAN` starts one")
    table = Table("run", "state", "phases", "tokens in/out", "cost", "updated")
    for run in runs:
        phases = " ".join(f"{n} {state}" for state, n in run["phases"].items())
        tokens = f"{run['tokens']['input']:,}/{run['tokens']['output']:,}"
        table.add_row(run["id"], _state(run["state"]), phases, tokens, _cost(run), _ago(run["updated_at"]))
    parts: list[Any] = [table]
    hidden = snapshot.get("total_runs", len(runs)) - len(runs)
    if hidden > 0:
        parts.append(Text(f"{hidden:,} older run(s) not shown: `--limit 0` lists every run", style="dim"))
    if snapshot.get("executors"):
        executors = Table("executor pid", "host", "run", "phase", "step", "heartbeat", title="at work")
        for e in snapshot["executors"]:
            executors.add_row(str(e["pid"]), e["host"], e["run"] or "-", e["phase"] or "-", e["step"] or "-",
                              f"{e['heartbeat_age_s']:.0f}s ago")
        parts.append(executors)
    for e in snapshot.get("stale_executors", []):
        parts.append(Text(f"stale: executor pid {e['pid']} on {e['host']} (run {e['run'] or '-'}) has not "
                          f"sent a heartbeat for {e['heartbeat_age_s']:.0f}s; the next drain or run rescues its work",
                          style="yellow"))
    waiting = snapshot.get("waiting_phases", [])
    if waiting:
        parts.append(Text(f"{len(waiting)} phase(s) queued with no executor at work, the oldest for "
                          f"{waiting[0]['queued_for_s'] // 60} min ({waiting[0]['run']}/{waiting[0]['phase']}): "
                          "`autopack drain` executes them", style="yellow"))
    return Group(*parts)


def print_stats(report: dict[str, Any]) -> None:
    """`status --stats`: telemetry over the store (or one run)."""
    out = console()
    scope = f"run {report['run_id']}" if report.get("run_id") else "all runs"
    if not report.get("builder_calls"):
        out.print(f"no builder calls recorded yet ({scope})")
        return
    doctor = report["doctor"]
    lines = [
        f"telemetry for {scope}",
        f"builder calls: {report['builder_calls']}, truncated: {report['truncated_calls']} "
        f"(rate {report['truncation_rate']:.1%})",
        f"escalations: {report['escalations']}, completed after escalation: {report['completed_after_escalation']}",
        f"doctor: {doctor['calls']} calls, {doctor['skipped']} skipped "
        f"({', '.join(f'{k}: {v}' for k, v in doctor['skipped_by_reason'].items()) or '-'}), "
        f"~{doctor['tokens_avoided']:,} tokens avoided",
        f"cache hit ratio: {report['cache_hit_ratio']:.1%}" if report["cache_hit_ratio"] is not None else "cache: -",
        f"cost: ${report['cost_usd']:.4f}" + (f" (+{report['unpriced_calls']} unpriced calls)" if report["unpriced_calls"] else "")
        + (f", ${report['cost_per_completed_phase']:.4f} per completed phase" if report["cost_per_completed_phase"] else ""),
    ]
    evidence = report.get("goal_evidence")
    if evidence:
        runs, failures = evidence["runs"], evidence["failures"]
        lines.append("goal evidence: " + ", ".join(f"{n} {kind} runs" for kind, n in runs.items())
                     + "; failed " + (", ".join(f"{kind}: {n}" for kind, n in failures.items()) or "none"))
    for mode, figures in report.get("by_builder", {}).items():
        ratio = figures.get("cache_hit_ratio")
        lines.append(f"builder {mode}: {figures['attempts']} attempts, {figures['builder_calls']} calls, cache hit "
                     f"ratio {'-' if ratio is None else f'{ratio:.1%}'}")
    for line in lines:
        out.print(line)
    if report["estimation_smape"]:
        table = Table("category", "complexity", "calls", "estimation error (SMAPE)", title="token budget estimates")
        for row in report["estimation_smape"]:
            table.add_row(row["category"], row["complexity"], str(row["calls"]), f"{row['smape']:.1%}")
        out.print(table)
    if report["failure_kinds"]:
        table = Table("failure kind", "attempts", title="failures")
        for kind, n in report["failure_kinds"].items():
            table.add_row(kind, str(n))
        out.print(table)


def print_transcript(transcript: dict[str, Any]) -> None:
    """`status RUN --transcript PHASE[:N]`: one attempt's exchanges, as the model saw them."""
    out = console()
    outcome = transcript["state"] + (f" ({transcript['failure_kind']}: {transcript['failure_message']})"
                                     if transcript["failure_kind"] else "")
    out.print(f"run {transcript['run']}, phase {transcript['phase']}, attempt {transcript['attempt']}: "
              f"{transcript['builder']} builder, {transcript['model'] or '-'}, {outcome}")
    for exchange in transcript["exchanges"]:
        request, response = exchange["request"], exchange["response"]
        out.print(Text(f"--- turn {exchange['turn']} (max_tokens {exchange['max_tokens']})", style="bold"))
        for message in request.get("messages", []):
            content = message["content"] if isinstance(message["content"], list) else [
                {"type": "text", "text": message["content"]}]
            for block in content:
                if block.get("type") == "tool_result":
                    flag = " [error]" if block.get("is_error") else ""
                    out.print(Text(f"<< {block.get('tool_use_id')}{flag}:", style="cyan"))
                    out.print(str(block.get("content", "")))
                elif block.get("type") == "text":
                    out.print(Text("<< task:", style="cyan"))
                    out.print(block.get("text", ""))
        if "error" in response:
            out.print(Text(f">> {response.get('kind') or 'error'}: {response['error']}", style="red"))
            continue
        for block in response.get("content", []):
            if block.get("type") == "text":
                out.print(Text(f">> {block.get('text', '')}", style="green"))
            elif block.get("type") == "tool_use":
                out.print(Text(f">> {block.get('id')} {block.get('name')} {json.dumps(block.get('input'))}",
                               style="green"))
        usage = response.get("usage", {})
        out.print(Text(f"   stop {response.get('stop_reason')}, {usage.get('input_tokens', 0)} in, "
                       f"{usage.get('output_tokens', 0)} out, {usage.get('cache_read_input_tokens', 0)} cache read",
                       style="dim"))


def print_run_status(status: dict[str, Any]) -> None:
    console().print(status_view(status))


def _run_status_parts(status: dict[str, Any]) -> list[Any]:
    run = status["run"]
    tokens = run["tokens"]
    parts: list[Any] = [
        Text.assemble(f"run {run['id']}  ", _state(run["state"]), f"  branch {run['branch']}"),
        Text(f"goal: {run['goal']}"),
        Text(f"tokens: {tokens['input']:,} in, {tokens['output']:,} out, {tokens['cache_read']:,} cache read, "
             f"{tokens['cache_write']:,} cache write   cost: {_cost(run)}"),
    ]
    for executor in run["executors"]:
        parts.append(Text(f"executor pid {executor['pid']} on {executor['host']}: {executor['phase'] or '-'} "
                          f"{executor['step'] or ''} (heartbeat {_ago(executor['heartbeat_at'])})"))
    parts.append(phase_table(status["phases"]))
    return parts


def phase_table(phases: list[dict[str, Any]]) -> Table:
    table = Table(_id_column("phase", [phase["id"] for phase in phases]), "state", "attempts", "commit",
                  "verdict / why")
    for phase in phases:
        why = ""
        if phase["decision"]:
            why = "; ".join(reason for reason in phase["decision"].get("reasons", [])
                            if not reason.startswith("goal evidence: "))

        if phase["state"] != PhaseState.COMPLETE and phase["last_failure"]:
            failure = phase["last_failure"]
            why = f"{failure['kind']}: {failure['message']}"
        elif phase["state"] == PhaseState.SKIPPED:
            why = f"a dependency did not complete ({', '.join(phase['depends_on'])})"
        if phase.get("parked"):
            why += f" [parked: {phase['parked']}; drains leave it alone without --include-parked]"
        if ((phase["decision"] or {}).get("evidence") or {}).get("summary"):  # contract 5: one line per phase
            why += f"\ngoal evidence: {phase['decision']['evidence']['summary']}"
        table.add_row(phase["id"], _state(phase["state"]), f"{phase['attempts']}",
                      (phase["commit"] or "-")[:10], why)
    return table


def _ago(iso: str | None) -> str:
    if not iso:
        return "-"
    seconds = (datetime.now(timezone.utc) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def print_run_summary(status: dict[str, Any], stderr: bool = False) -> None:
    """The end of `autopack run`: every phase, and for each failed one why."""
    out = console(stderr)
    run = status["run"]
    out.print(phase_table(status["phases"]))
    out.print(Text.assemble(f"run {run['id']}: ", _state(run["state"]),
                            f"  branch {run['branch']}  cost {_cost(run)}"))
    if run["state"] != RunState.COMPLETE:
        out.print(f"inspect: autopack status {run['id']}   retry failed phases: "
                  f"autopack run --run-id {run['id']} --retry-failed")


def print_candidates(candidates: list[Any], shown: int) -> None:
    """`drain --dry-run`: the first ``shown`` phases in the order a drain would take them, and why."""
    out = console()
    if not candidates:
        out.print("nothing to drain")
        return
    table = Table("#", "run", "phase", "state", "why here")
    for n, c in enumerate(candidates[:shown], 1):
        table.add_row(str(n), c.phase.run_id, c.phase.phase_id, _state(c.phase.state), f"[{c.rank}] {c.reason}")
    out.print(table)
    if len(candidates) > shown:
        out.print(f"{len(candidates) - shown:,} more drainable phase(s) after these; `--json` lists them all")


def print_test_runs(run_id: str, test_runs: list[dict[str, Any]]) -> None:
    """`autopack logs RUN`: each test run, its outcome and where its log can be read."""
    out = console()
    if not test_runs:
        out.print(f"run {run_id} has no test runs yet")
        return
    table = Table(_id_column("phase", [e["phase"] or "(land)" for e in test_runs]), "attempt",
                  _id_column("kind", [e["kind"] for e in test_runs]), "exit", "tests", "log", "junit")
    for e in test_runs:
        counts = ", ".join(f"{n} {'error' if n == 1 else 'errors'}" if what == "errors" else f"{n} {what}"
                           for what, n in e["counts"].items() if n and what != "total") or "none"
        table.add_row(e["phase"] or "(land)", str(e["attempt"] or "-"), e["kind"],
                      "timed out" if e["timed_out"] else str(e["exit_code"]), counts, e["log"], e["junit"])
    out.print(table)
    out.print(f"print one: autopack logs {run_id} PHASE [--attempt N] [--kind KIND]")


def print_drain_summary(summary: dict[str, Any], stderr: bool = False) -> None:
    out = console(stderr)
    if summary["phases"]:
        table = Table("run", "phase", "state", "attempts", "why")
        for p in summary["phases"]:
            why = "; ".join(p["reasons"]) if p["state"] == PhaseState.COMPLETE else f"{p['failure_kind']}: {p['message']}"
            if p.get("parked"):
                why += f" [parked: {p['parked']}]"
            table.add_row(p["run_id"], p["phase_id"], _state(p["state"]), str(p["attempts"]), why)
        out.print(table)
    line = (f"drained {summary['processed']} phases: {summary['completed']} complete, {summary['failed']} failed"
            f"; stopped: {summary['stop_reason']}")
    if summary.get("cost_usd"):
        line += f"; cost ${summary['cost_usd']:.4f}"
    if summary.get("busy_runs"):
        line += f"; skipped busy runs: {', '.join(summary['busy_runs'])}"
    if "run" in summary:
        line += f"; run {summary['run']['id']} is {summary['run']['state']}"
    out.print(line)
    for run_id, why in summary.get("unavailable_runs", {}).items():
        out.print(f"not drained: run {run_id}: {why}")


def write_drain_junit(summary: dict[str, Any], path: Any) -> None:
    """Each drained phase as a JUnit testcase (failure message = the verdict's reasons)."""
    from autopack.junit import TestOutcome, junit_document
    from autopack.userfiles import open_output

    outcomes = [TestOutcome(
        f"{p['run_id']}::{p['phase_id']}", "passed" if p["state"] == PhaseState.COMPLETE else "failed",
        message="" if p["state"] == PhaseState.COMPLETE else " ".join(f"{p['failure_kind']}: {p['message']}".split())
        + "\n" + ("\n".join(p["reasons"]) or p["message"]),
        duration_s=p["duration_s"]) for p in summary["phases"]]
    with open_output(path) as out:
        out.write(junit_document(outcomes, suite="autopack drain"))


def print_pick_explanation(scores: list[Any], weights: dict[str, float]) -> None:
    out = console()
    table = Table("run", "type", "score", *[f"{k} (x{w:g})" for k, w in weights.items()])
    for s in scores:
        table.add_row(s.run_id, f"{s.run_type} ({s.type_source})", f"{s.score:.2f}",
                      *[f"{s.components[k]:.2f}" for k in weights])
    out.print(table)
