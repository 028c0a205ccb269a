"""`autopack show` as plain text (ANSI colours when asked), and the phrases every report view shares.

Stored text (test names, model output, diffs) may hold terminal escape sequences: every
control character but newline and tab is shown as its Unicode control picture, so nothing a
model wrote can move the cursor, retitle the terminal or hide a line in the pager.
"""

from __future__ import annotations

import re
from typing import Any

from autopack.domain.lifecycle import PhaseState
from autopack.report.story import attempt_outcome, diff_source
from autopack.report.transcript import transcript_items

DELTA_KEYS = ("new_failures", "collection_errors", "removed", "fixed", "still_failing", "flaky")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
_STYLE = {"complete": "32", "failed": "31", "skipped": "33", "parked": "33", "add": "32", "del": "31",
          "hunk": "36", "head": "1", "dim": "2"}


def clean(text: str) -> str:
    """``text`` with control characters (but newline and tab) made visible and inert."""
    return _CONTROL.sub(_picture, text)


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    return "\u2421" if code == 0x7F else "\ufffd"


def cost_text(entry: dict[str, Any]) -> str:
    text = f"${entry.get('cost_usd', 0.0):.4f}"
    return f"{text} (+{entry['unpriced_calls']} unpriced calls)" if entry.get("unpriced_calls") else text


def tokens_text(tokens: dict[str, int]) -> str:
    return (f"{tokens['input']:,} in, {tokens['output']:,} out, {tokens['cache_read']:,} cache read, "
            f"{tokens['cache_write']:,} cache write")


def attempt_facts(attempt: dict[str, Any]) -> str:
    """Model, builder, budget and turns of an attempt, in one line."""
    budget = f"budget {attempt['budget']:,} tokens" if attempt["budget"] else "no budget recorded"
    if attempt["budget"] and attempt["budget_source"]:
        budget += f" ({attempt['budget_source']})"
    turns = attempt["turns"]
    return (f"model {attempt['model'] or '-'}, {attempt['builder']} builder, {budget}, "
            f"{turns} turn{'' if turns == 1 else 's'}, {attempt['wall_ms'] / 1000:.1f} s")


def test_run_text(run: dict[str, Any]) -> str:
    counts = run["counts"]
    shown = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if counts[k])
    how = "timed out" if run["timed_out"] else f"exit {run['exit_code']}"
    return f"{run['kind']}: {shown or 'no tests'} ({how}, {run['duration_s']:.1f} s)"


def advice_text(entry: dict[str, Any]) -> str:
    """One event about an attempt's advice: a pattern hint, a diagnosis, a skipped doctor, an escalation."""
    kind, source = entry["kind"], str(entry.get("source", ""))
    if kind == "advice" and source.startswith("pattern:"):
        return f"known failure pattern '{source.partition(':')[2]}': {entry.get('text', '')}"
    if kind == "advice":
        return f"doctor's diagnosis ({entry.get('model') or 'doctor'}): {entry.get('text', '')}"
    if kind == "doctor_skipped":
        return f"doctor not asked: {entry.get('reason')}"
    return f"output budget escalated from {entry.get('base')} to {entry.get('new')} tokens ({entry.get('reason')})"


def phase_headline(phase: dict[str, Any]) -> str:
    line = f"phase {phase['id']}: {phase['state']}"
    if phase["commit"]:
        line += f" at {phase['commit'][:10]}"
    line += f" ({phase['attempts']} attempt{'' if phase['attempts'] == 1 else 's'})"
    return line


def phase_note(phase: dict[str, Any]) -> str | None:
    """Why a phase is not complete, and whether drains leave it parked."""
    note = None
    if phase["state"] == PhaseState.SKIPPED:
        note = f"skipped: a dependency did not complete ({', '.join(phase['depends_on'])})"
    elif phase["state"] != PhaseState.COMPLETE and phase["last_failure"]:
        note = f"last failure: {phase['last_failure']['kind']}: {phase['last_failure']['message']}"
    if phase.get("parked"):
        note = (note + "; " if note else "") + f"parked: {phase['parked']} (drains leave it alone without " \
                                                "--include-parked)"
    return note


def structure_lines(value: Any, indent: str = "") -> list[str]:
    """Any JSON value (evidence, apply stats) as indented ``key: value`` lines."""
    if isinstance(value, dict):
        lines: list[str] = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines += [f"{indent}{key}:", *structure_lines(item, indent + "  ")]
            else:
                lines.append(f"{indent}{key}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            nested = structure_lines(item, indent + "  ")
            if isinstance(item, (dict, list)) and nested:
                lines += [f"{indent}- {nested[0].strip()}", *nested[1:]]
            else:
                lines.append(f"{indent}- {_scalar(item)}")
        return lines
    return [f"{indent}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


class _Out:
    def __init__(self, color: bool):
        self.color, self.lines = color, []

    def add(self, text: str, indent: str = "", style: str | None = None) -> None:
        for line in clean(text).split("\n"):
            self.lines.append(indent + (f"\x1b[{_STYLE[style]}m{line}\x1b[0m" if style and self.color else line))

    def block(self, text: str, indent: str) -> None:
        self.add(text.rstrip("\n") or "(empty)", indent + "| ")

    def diff(self, text: str) -> None:
        for line in clean(text).rstrip("\n").split("\n"):
            style = None
            if line.startswith(("+++", "---", "diff --git", "commit ")):
                style = "head"
            elif line.startswith("+"):
                style = "add"
            elif line.startswith("-"):
                style = "del"
            elif line.startswith("@@"):
                style = "hunk"
            self.add(line, style=style)


def render_show(story: dict[str, Any], *, color: bool = False) -> str:
    """The whole `autopack show` text of ``story`` (run_story's dict)."""
    out = _Out(color)
    run = story["run"]
    out.add(f"run {run['id']}: {run['state']} (branch {run['branch']})", style="head")
    out.add(f"goal: {run['goal']}")
    out.add(f"cost {cost_text(run)}; tokens {tokens_text(run['tokens'])}")
    for phase in story["phases"]:
        out.add("")
        out.add(phase_headline(phase), style=phase["state"] if phase["state"] in _STYLE else "head")
        out.add(f"goal: {phase['goal']}", "  ")
        note = phase_note(phase)
        if note:
            out.add(note, "  ", "parked" if phase.get("parked") else None)
        if not phase["attempt_list"]:
            out.add("no attempts yet", "  ", "dim")
        previous = None
        for attempt in phase["attempt_list"]:
            logs = f"autopack logs {run['id']} {phase['id']} --attempt {attempt['number']}"
            _attempt(out, attempt, told_above=previous == attempt["number"] - 1, logs=logs)
            previous = attempt["number"]
    return "\n".join(out.lines) + "\n"


def _attempt(out: _Out, attempt: dict[str, Any], told_above: bool, logs: str) -> None:
    out.add("")
    out.add(f"attempt {attempt['number']}: {attempt_outcome(attempt)}", "  ",
            attempt["state"] if attempt["state"] in _STYLE else "head")
    pad = "    "
    out.add(attempt_facts(attempt), pad)
    out.add(f"tokens {tokens_text(attempt['tokens'])}; cost {cost_text(attempt)}", pad)
    if attempt["failure"]:
        out.add(f"failure: {attempt['failure']['kind']}: {attempt['failure']['message']}", pad)
    decision = attempt["decision"]
    if decision:
        out.add(f"verdict: {decision.get('verdict')}", pad)
        for reason in decision.get("reasons", []):
            out.add(f"- {reason}", pad + "  ")
        _delta(out, decision.get("delta") or {}, pad)
    if attempt["evidence"] is not None:
        out.add("evidence:", pad)
        for line in structure_lines(attempt["evidence"], pad + "  "):
            out.add(line)
    if attempt["test_runs"]:
        out.add("tests: " + "; ".join(test_run_text(r) for r in attempt["test_runs"]), pad)
    for entry in attempt["advice"]:
        out.add(f"advice: {advice_text(entry)}", pad)
    if attempt["given_digest"] and not told_above:  # else shown as the previous attempt's digest
        out.add(f"told of the last failure (digest given to attempt {attempt['number']}):", pad)
        out.block(attempt["given_digest"], pad)
    if attempt["next_digest"]:
        out.add(f"digest given to attempt {attempt['number'] + 1}:", pad)
        out.block(attempt["next_digest"], pad)
    for run in attempt["test_runs"]:
        if "output_tail" in run:
            cut = " (its end: the output was cut)" if run["output_truncated"] else ""
            out.add(f"test output, {run['kind']}{cut}; the whole log: {logs} --kind {run['kind']}", pad)
            out.block(run["output_tail"], pad)
    if "transcript" in attempt:
        _transcript(out, attempt["transcript"], pad)
    _diff(out, attempt["diff"], pad)


def _delta(out: _Out, delta: dict[str, Any], pad: str) -> None:
    for key in DELTA_KEYS:
        if delta.get(key):
            out.add(f"{key.replace('_', ' ')}: {', '.join(map(str, delta[key]))}", pad + "  ")


def _transcript(out: _Out, exchanges: list[dict[str, Any]], pad: str) -> None:
    out.add(f"transcript ({len(exchanges)} exchange{'' if len(exchanges) == 1 else 's'}):", pad)
    for item in transcript_items(exchanges):
        if item.who == "meta":
            out.add(item.text, pad + "  ", "dim")
            continue
        out.add(f"{'>>' if item.who in ('model', 'error') else '<<'} {item.label}:", pad + "  ")
        out.block(item.text, pad + "  ")


def _diff(out: _Out, diff: dict[str, Any] | None, pad: str) -> None:
    if diff is None:
        out.add("diff: none (nothing was changed)", pad, "dim")
        return
    where = diff_source(diff)
    if diff.get("missing"):
        out.add(f"diff ({where}): not available: {diff['missing']}", pad)
        return
    out.add(f"diff ({where}){', cut at its first 256 KiB' if diff['truncated'] else ''}:", pad)
    out.diff(diff["text"])
