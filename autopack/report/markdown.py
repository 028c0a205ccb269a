"""`autopack report --markdown`: the HTML report's content as Markdown (e.g. a pull request or CI summary).

Stored text is escaped for Markdown and for the HTML that Markdown lets through: prose with
backslashes and entities, multi-line text in fenced blocks whose fence is longer than any
run of backticks inside, table cells on one line with ``|`` escaped.
"""

from __future__ import annotations

import re
from typing import Any

from autopack.report.story import attempt_outcome, diff_source
from autopack.report.text import (DELTA_KEYS, advice_text, attempt_facts, clean, cost_text, phase_headline,
                                  phase_note, structure_lines, test_run_text, tokens_text)
from autopack.report.transcript import transcript_items
from autopack.text import one_line

_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # inline markup anywhere in a line
_BLOCK_START = re.compile(r"^(\d*)([#+=-]|(?<=\d)[.)])")  # what would open a heading or a list at a line's start
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def md(text: Any) -> str:
    """``text`` as inline Markdown that shows exactly these characters (one line)."""
    escaped = _BLOCK_START.sub(r"\1\\\2", _SPECIAL.sub(r"\\\1", one_line(clean(str(text)))))
    return "".join(_ENTITIES.get(c, c) for c in escaped)


def fenced(text: str, info: str = "") -> str:
    """``text`` in a fenced code block that nothing inside can close."""
    runs = [len(m) for m in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{info}\n{clean(text).rstrip(chr(10))}\n{fence}"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{md(summary)}</summary>\n\n{body}\n\n</details>"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def render_markdown(story: dict[str, Any]) -> str:
    """The report of ``story`` (run_story's dict, with transcripts and logs) as Markdown."""
    run = story["run"]
    out = [f"# Run {md(run['id'])}: {md(run['state'])}", "", md(run["goal"]), "", "## Summary", "",
           _table(("", ""), [("branch", md(run["branch"])), ("base commit", md(run["base_commit"])),
                             ("created", md(run["created_at"])), ("tokens", md(tokens_text(run["tokens"]))),
                             ("cost", md(cost_text(run)))]),
           "", "## Timeline", "",
           _table(("phase", "attempts", "state"), [
               (md(p["id"]), md(", ".join(f"{a['number']} {attempt_outcome(a)}" for a in p["attempt_list"]) or "-"),
                md(p["state"] + (" (parked)" if p.get("parked") else ""))) for p in story["phases"]]),
           "", "## Cost", "",
           _usage_table("phase", story["cost_by_phase"]), "", _usage_table("role", story["cost_by_role"]),
           "", "## Phases"]
    for phase in story["phases"]:
        out += ["", f"### {md(phase_headline(phase))}", "", md(phase["goal"])]
        note = phase_note(phase)
        if note:
            out += ["", f"> {md(note)}"]
        if not phase["attempt_list"]:
            out += ["", _decision(phase["decision"]) if phase["decision"] else "No attempts yet."]
        for attempt in phase["attempt_list"]:
            out += _attempt(attempt)
    return "\n".join(out) + "\n"


def _usage_table(what: str, usage: dict[str, dict[str, Any]]) -> str:
    return _table((what, "tokens", "cost"), [(md(name or "(no phase)"), md(tokens_text(u["tokens"])), md(cost_text(u)))
                                             for name, u in usage.items()])


def _decision(decision: dict[str, Any]) -> str:
    lines = [f"Verdict: **{md(decision.get('verdict'))}**", ""]
    lines += [f"- {md(reason)}" for reason in decision.get("reasons") or []]
    delta = decision.get("delta") or {}
    rows = [(md(key.replace("_", " ")), "<br>".join(md(t) for t in delta[key])) for key in DELTA_KEYS if delta.get(key)]
    if rows:
        lines += ["", _table(("delta", "tests"), rows)]
    return "\n".join(lines)


def _attempt(attempt: dict[str, Any]) -> list[str]:
    out = ["", f"#### Attempt {attempt['number']}: {md(attempt_outcome(attempt))}", "",
           f"- {md(attempt_facts(attempt))}",
           f"- tokens {md(tokens_text(attempt['tokens']))}; cost {md(cost_text(attempt))}"]
    if attempt["failure"]:
        out.append(f"- failure: {md(attempt['failure']['kind'])}: {md(attempt['failure']['message'])}")
    out += [f"- tests: {md(test_run_text(r))}" for r in attempt["test_runs"]]
    out += [f"- advice: {md(advice_text(entry))}" for entry in attempt["advice"]]
    if attempt["decision"]:
        out += ["", _decision(attempt["decision"])]
    if attempt["evidence"] is not None:
        out += ["", "Evidence:", "", fenced("\n".join(structure_lines(attempt["evidence"])))]
    if attempt["next_digest"]:
        told = f"Failure digest given to attempt {attempt['number'] + 1}"
        out += ["", _details(told, fenced(attempt["next_digest"]))]
    diff = attempt["diff"]
    if diff is None:
        out += ["", "No change."]
    elif diff.get("missing"):
        out += ["", f"Diff not available: {md(diff['missing'])}"]
    else:
        where = diff_source(diff, path=False)
        cut = ", cut at 256 KiB" if diff["truncated"] else ""
        out += ["", f"Diff ({md(where)}{cut}):", "", fenced(diff["text"], "diff")]
    if attempt.get("transcript"):
        items = transcript_items(attempt["transcript"])
        body = "\n\n".join(f"_{md(item.text)}_" if item.who == "meta" else
                           f"**{md(item.label)}**\n\n{fenced(item.text)}" for item in items)
        out += ["", _details("Transcript", body)]
    return out
