"""`autopack report`: one self-contained HTML file (inline CSS and SVG, no script, nothing fetched).

Everything shown comes from the store, the model or the project's tests, so all of it is
escaped (``svg.esc``), and a Content-Security-Policy forbids scripts and any fetch even if
something slipped through. Diffs are highlighted by pygments with inline styles.
"""

from __future__ import annotations

from typing import Any, Sequence

from autopack.report.story import attempt_outcome, diff_source
from autopack.report.svg import VERDICT_COLOURS, bar_chart, esc, timeline
from autopack.report.text import (DELTA_KEYS, advice_text, attempt_facts, clean, cost_text, phase_headline,
                                  phase_note, test_run_text, tokens_text)
from autopack.report.transcript import transcript_items
from autopack.text import to_json

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;
color:#1b1b1b;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.3rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1.1rem;margin:1.2rem 0 .4rem}h4{font-size:1rem;margin:.8rem 0 .3rem}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;
vertical-align:top}th{background:#f5f5f5}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:.85rem}pre{background:#f8f8f8;padding:.6rem;overflow-x:auto;white-space:pre-wrap;
word-break:break-word;border:1px solid #eee}
.verdict{display:inline-block;padding:0 .5rem;border-radius:.3rem;color:#fff;font-weight:600}
.phase{border:1px solid #ddd;border-radius:.4rem;padding:.2rem 1rem 1rem;margin:1rem 0}
.attempt{border-left:4px solid #9e9e9e;padding-left:.8rem;margin:1rem 0}
.note{color:#6d4c00;background:#fff8e1;padding:.2rem .5rem}.dim{color:#666}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
.item{margin:.3rem 0 .3rem .5rem}.who{font-weight:600;color:#37474f}.who-model{color:#1b5e20}
.who-error{color:#b71c1c}.legend span{display:inline-block;margin-right:1rem}
.swatch{display:inline-block;width:.9rem;height:.9rem;border-radius:.2rem;vertical-align:middle;margin-right:.3rem}
svg.chart{max-width:100%;height:auto}
"""


def render_html(story: dict[str, Any]) -> str:
    """The whole report of ``story`` (run_story's dict, with transcripts and logs) as one HTML document."""
    run = story["run"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>autopack report: {esc(run['id'])}</title><style>{CSS}</style></head><body>",
             f'<header><h1>Run <code>{esc(run["id"])}</code> {_verdict(run["state"])}</h1>',
             f"<p>{esc(run['goal'])}</p></header>",
             _summary(story), _timeline(story), _costs(story)]
    parts.append('<section id="phases"><h2>Phases</h2>')
    parts += [_phase(phase) for phase in story["phases"]]
    parts.append("</section><footer><p class=\"dim\">Written by <code>autopack report</code> from the run's "
                 "record; every value is as stored.</p></footer></body></html>\n")
    return "\n".join(parts)


def _verdict(state: str) -> str:
    return f'<span class="verdict" style="background:{VERDICT_COLOURS.get(state, "#757575")}">{esc(state)}</span>'


def _table(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of (header, already-escaped HTML)."""
    return "<table>" + "".join(f"<tr><th>{esc(h)}</th><td>{v}</td></tr>" for h, v in rows) + "</table>"


def _summary(story: dict[str, Any]) -> str:
    run = story["run"]
    counts: dict[str, int] = {}
    for phase in story["phases"]:
        counts[phase["state"]] = counts.get(phase["state"], 0) + 1
    attempts = sum(len(p["attempt_list"]) for p in story["phases"])
    rows = [("state", _verdict(run["state"])), ("branch", f"<code>{esc(run['branch'])}</code>"),
            ("base commit", f"<code>{esc(run['base_commit'])}</code>"), ("created", esc(run["created_at"])),
            ("phases", esc(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none")),
            ("attempts", str(attempts)), ("tokens", esc(tokens_text(run["tokens"]))), ("cost", esc(cost_text(run)))]
    if run.get("flags"):
        rows.append(("flags", esc(", ".join(f"{k}={to_json(v)}" for k, v in sorted(run["flags"].items())))))
    return '<section id="summary"><h2>Summary</h2>' + _table(rows) + "</section>"


def _timeline(story: dict[str, Any]) -> str:
    legend = "".join(f'<span><i class="swatch" style="background:{colour}"></i>{esc(state)}</span>'
                     for state, colour in VERDICT_COLOURS.items())
    return (f'<section id="timeline"><h2>Timeline</h2><p class="dim">Each phase\'s attempts in order, '
            f'coloured by verdict.</p>{timeline(story["phases"])}<p class="legend">{legend}</p></section>')


def _costs(story: dict[str, Any]) -> str:
    by_phase, by_role = story["cost_by_phase"], story["cost_by_role"]
    priced = any(u["cost_usd"] for u in by_role.values())
    unit = "usd" if priced else "tokens"

    def value(usage: dict[str, Any]) -> float:
        return usage["cost_usd"] if priced else float(sum(usage["tokens"].values()))

    phase_rows = [(pid or "(no phase)", value(usage)) for pid, usage in by_phase.items()]
    role_rows = [(role, value(usage)) for role, usage in by_role.items()]
    what = "Cost" if priced else "Tokens (no call was priced)"
    return (f'<section id="cost"><h2>{esc(what)}</h2><h3>By phase</h3>'
            f'{bar_chart(phase_rows, unit, "cost by phase") if phase_rows else "<p>No model calls.</p>"}'
            f'<h3>By role</h3>{bar_chart(role_rows, unit, "cost by role") if role_rows else "<p>No model calls.</p>"}'
            "</section>")


def _phase(phase: dict[str, Any]) -> str:
    parts = [f'<section class="phase" id="phase-{esc(phase["id"])}">',
             f'<h3>{esc(phase_headline(phase))} {_verdict(phase["state"])}</h3>', f"<p>{esc(phase['goal'])}</p>"]
    note = phase_note(phase)
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    if not phase["attempt_list"]:  # else each attempt shows its own decision
        parts.append(_decision(phase["decision"]) if phase["decision"] else '<p class="dim">No attempts yet.</p>')
    parts += [_attempt(attempt) for attempt in phase["attempt_list"]]
    parts.append("</section>")
    return "\n".join(parts)


def _decision(decision: dict[str, Any]) -> str:
    parts = [f"<p>verdict {_verdict(str(decision.get('verdict')))}</p>"]
    reasons = decision.get("reasons") or []
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{esc(r)}</li>" for r in reasons) + "</ul>")
    delta = decision.get("delta") or {}
    rows = [(key, tests) for key in DELTA_KEYS for tests in [delta.get(key) or []] if tests]
    if rows:
        parts.append('<table class="delta"><tr><th>delta</th><th>tests</th></tr>' + "".join(
            f"<tr><td>{esc(key.replace('_', ' '))}</td><td>{'<br>'.join(f'<code>{esc(t)}</code>' for t in tests)}"
            "</td></tr>" for key, tests in rows) + "</table>")
    return "".join(parts)


def structure(value: Any) -> str:
    """Any JSON value as HTML: objects as tables, lists of scalars as lists, everything escaped."""
    if isinstance(value, dict):
        return _table([(str(k), structure(v)) for k, v in value.items()]) if value else '<span class="dim">none</span>'
    if isinstance(value, list):
        if not value:
            return '<span class="dim">none</span>'
        return "<ul>" + "".join(f"<li>{structure(item)}</li>" for item in value) + "</ul>"
    if value is None:
        return '<span class="dim">-</span>'
    return esc(str(value).lower() if isinstance(value, bool) else value)


def _attempt(attempt: dict[str, Any]) -> str:
    colour = VERDICT_COLOURS.get(attempt["state"], "#9e9e9e")
    parts = [f'<div class="attempt" style="border-color:{colour}">',
             f"<h4>Attempt {attempt['number']}: {esc(attempt_outcome(attempt))}</h4>",
             _table([("run", esc(attempt_facts(attempt))), ("tokens", esc(tokens_text(attempt["tokens"]))),
                     ("cost", esc(cost_text(attempt))), ("started", esc(attempt["started_at"]))])]
    if attempt["failure"]:
        parts.append(f"<p><b>failure</b> <code>{esc(attempt['failure']['kind'])}</code>: "
                     f"{esc(attempt['failure']['message'])}</p>")
    if attempt["decision"]:
        parts.append(_decision(attempt["decision"]))
    if attempt["evidence"] is not None:
        parts.append("<h4>Evidence</h4>" + structure(attempt["evidence"]))
    if attempt["test_runs"]:
        parts.append("<p><b>tests</b></p><ul>" + "".join(
            f"<li>{esc(test_run_text(r))} <code>{esc(r['command'])}</code></li>" for r in attempt["test_runs"])
            + "</ul>")
    parts += [f"<p><b>advice</b> {esc(advice_text(entry))}</p>" for entry in attempt["advice"]]
    if attempt["next_digest"]:
        parts.append(f"<details><summary>Failure digest given to attempt {attempt['number'] + 1}</summary>"
                     f"<pre>{esc(attempt['next_digest'])}</pre></details>")
    parts.append(_diff(attempt["diff"]))
    if attempt.get("transcript"):
        parts.append(_transcript(attempt["transcript"]))
    for run in attempt["test_runs"]:
        if run.get("output_tail"):
            cut = " (its end)" if run["output_truncated"] else ""
            parts.append(f"<details><summary>Test output: {esc(run['kind'])}{cut}</summary>"
                         f"<pre>{esc(run['output_tail'])}</pre></details>")
    parts.append("</div>")
    return "\n".join(parts)


def _diff(diff: dict[str, Any] | None) -> str:
    if diff is None:
        return '<p class="dim">No change.</p>'
    where = diff_source(diff, path=False)
    if diff.get("missing"):
        return f'<p class="note">Diff ({esc(where)}) not available: {esc(diff["missing"])}</p>'
    cut = " (cut at 256 KiB)" if diff["truncated"] else ""
    return (f"<details open><summary>Diff: {esc(where)}{esc(cut)}</summary>{highlight_diff(diff['text'])}"
            "</details>")


def highlight_diff(text: str) -> str:
    """``text`` as a diff highlighted with inline styles (pygments); a plain escaped block without it."""
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import DiffLexer
    except ImportError:
        return f"<pre>{esc(text)}</pre>"
    return highlight(clean(text), DiffLexer(), HtmlFormatter(noclasses=True, style="default"))


def _transcript(exchanges: list[dict[str, Any]]) -> str:
    items = []
    for item in transcript_items(exchanges):
        if item.who == "meta":
            items.append(f'<p class="dim">{esc(item.text)}</p>')
        else:
            items.append(f'<div class="item"><span class="who who-{item.who}">{esc(item.label)}</span>'
                         f"<pre>{esc(item.text)}</pre></div>")
    turns = len({e["turn"] for e in exchanges})
    return (f"<details><summary>Transcript ({turns} turn{'' if turns == 1 else 's'})</summary>"
            + "".join(items) + "</details>")
