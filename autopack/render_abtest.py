"""`ab-test` output: a rich view for the terminal and a Markdown report for humans to keep.

Both take an ``AbReport``; the Markdown has no timestamps, so the same store and seed give
the same file byte for byte.
"""

from __future__ import annotations

import os
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from autopack.abtest import METRICS, AbReport, format_ci, format_p, format_percent, format_value
from autopack.render import console

BAR_WIDTH = 10
TERMINAL_ROWS = 40  # pairs and flips shown in the terminal; the files have all of them
PIPED_WIDTH = 140  # piped output goes to files and pagers, not 80-column terminals
PAIR_COLUMNS = ("tokens_total", "cost_usd", "phases_complete", "attempts", "wall_s")
TERMINAL_PAIR_COLUMNS = ("tokens_total", "cost_usd", "phases_complete")
SUMMARY_HEADERS = ("metric", "n", "control mean", "treatment mean", "mean Δ", "Δ % of means", "median Δ",
                   "stdev Δ", "95 % CI of mean Δ", "sign test p", "Wilcoxon p")
TERMINAL_SUMMARY = {"metric": "metric", "control mean": "control", "treatment mean": "treatment",
                    "mean Δ": "mean Δ", "Δ % of means": "Δ %", "95 % CI of mean Δ": "95 % CI",
                    "Wilcoxon p": "Wilcoxon p"}  # what fits a 100-column terminal; the files have all
ARM_HEADERS = ("arm", "runs", "cost", "phases complete", "cost per completed phase")
_UNITS = {metric.name: metric.unit for metric in METRICS}
_LABELS = {metric.name: metric.label for metric in METRICS}


def chart_metric(report: AbReport) -> str:
    """Cost, unless no call in the compared runs was priced: then tokens."""
    priced = any(p.control_metrics.cost_usd or p.treatment_metrics.cost_usd for p in report.pairs)
    return "cost_usd" if priced else "tokens_total"


def delta_bar(delta: float | None, scale: float, width: int = BAR_WIDTH) -> str:
    """A bar left (negative) or right (positive) of a centre line; ``scale`` fills ``width`` cells."""
    if delta is None:
        return " " * (2 * width + 1)
    cells = min(width, max(1, round(abs(delta) / scale * width))) if delta and scale else 0
    if delta < 0:
        return " " * (width - cells) + "█" * cells + "│" + " " * width
    return " " * width + "│" + "█" * cells + " " * (width - cells)


def _chart(report: AbReport) -> tuple[str, float]:
    """The charted metric and its scale: the largest |delta| among included pairs (excluded ones are capped)."""
    metric = chart_metric(report)
    pairs = report.included or report.pairs
    return metric, max((abs(p.deltas[metric]) for p in pairs if p.deltas[metric] is not None), default=0)


def _summary_rows(report: AbReport) -> list[list[str]]:
    rows = []
    for s in report.metrics.values():
        rows.append([s.label, str(s.n), format_value(s.control_mean, s.unit), format_value(s.treatment_mean, s.unit),
                     format_value(s.mean, s.unit, signed=True), format_percent(s.percent_change),
                     format_value(s.median, s.unit, signed=True), format_value(s.stdev, s.unit),
                     format_ci(s.ci95, s.unit), format_p(s.sign_test_p), format_p(s.wilcoxon_p)])
    return rows



def _arm_rows(report: AbReport) -> list[list[str]]:
    return [[arm, str(a.runs), format_value(a.cost_usd, "usd"), str(a.phases_complete),
             format_value(a.cost_per_completed_phase, "usd")] for arm, a in report.arms.items()]



def _pair_cells(pair: Any) -> list[str]:
    return [format_value(pair.deltas[name], _UNITS[name], signed=True) for name in PAIR_COLUMNS]


def _cassettes(pair: Any) -> str:
    """Where each arm's answers came from: its run.cassette, or the live API."""
    control, treatment = (pair.cassettes[arm] or "live API" for arm in ("control", "treatment"))
    return control if control == treatment else f"{control} → {treatment}"


def _with_cassettes(report: AbReport) -> bool:
    return any(any(p.cassettes.values()) for p in report.pairs)


def _warning_lines(report: AbReport) -> list[str]:
    lines = [f"pair {p.index} ({p.control} → {p.treatment}): {w.message}" for p in report.pairs for w in p.warnings]
    return lines + list(report.notes)


def _title(report: AbReport) -> str:
    return (f"A/B test: {len(report.pairs)} pair{'s' * (len(report.pairs) != 1)}, {len(report.included)} included "
            f"(seed {report.seed}, {report.resamples:,} bootstrap resamples; Δ = treatment − control)")


# -- terminal -------------------------------------------------------------------------

def print_report(report: AbReport) -> None:
    """Summary, the first TERMINAL_ROWS pairs with a bar chart, flips, warnings, interpretation."""
    out = console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPED_WIDTH
    out.print(Text(_title(report), style="bold"))
    n = len(report.included)
    summary = _terminal_table(title=f"means per run over {n} included pairs")
    for header in TERMINAL_SUMMARY.values():
        summary.add_column(header, no_wrap=header in ("metric", "95 % CI"))
    for s, cells in zip(report.metrics.values(), _summary_rows(report)):
        row = dict(zip(SUMMARY_HEADERS, cells))
        if s.n != n:
            row["metric"] += f" (n={s.n})"
        summary.add_row(*(row[h] for h in TERMINAL_SUMMARY),
                        style="bold" if s.significant else ("dim" if not s.n else ""))
    out.print(summary)
    out.print("cost per completed phase: " + ", ".join(
        f"{arm} {format_value(a.cost_per_completed_phase, 'usd')} ({a.phases_complete} phases)"
        for arm, a in report.arms.items()))
    metric, scale = _chart(report)
    cassettes = _with_cassettes(report)
    pairs = _terminal_table("#", "control", "treatment", *(("cassettes",) if cassettes else ()), "Δ tokens",
                            "Δ cost", "Δ phases", title="pairs")
    pairs.add_column(f"Δ {_LABELS[metric]}", no_wrap=True)
    pairs.add_column("warnings")
    for p in report.pairs[:TERMINAL_ROWS]:
        delta = p.deltas[metric]
        pairs.add_row(str(p.index), p.control, p.treatment, *((_cassettes(p),) if cassettes else ()),
                      *(format_value(p.deltas[n], _UNITS[n], signed=True) for n in TERMINAL_PAIR_COLUMNS),
                      Text(delta_bar(delta, scale), style="cyan" if (delta or 0) < 0 else "magenta"),
                      ", ".join(w.kind for w in p.warnings) or "-", style="" if p.included else "dim")
    out.print(pairs)
    _more(out, len(report.pairs), "pairs")
    if report.flips:
        flips = _terminal_table("#", "control", "treatment", "phase", "complete only in", title="flipped phases")
        for f in report.flips[:TERMINAL_ROWS]:
            flips.add_row(str(f.pair), f.control, f.treatment, f.phase, f.complete_in)
        out.print(flips)
        _more(out, len(report.flips), "flipped phases")
    for line in _warning_lines(report):
        out.print(Text(f"warning: {line}", style="yellow"))
    for line in report.interpretation:
        out.print(line)


def _terminal_table(*headers: str, title: str) -> Table:
    """Compact: a rule under the header, one space between columns."""
    return Table(*headers, box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False,
                 show_edge=False, title=title, title_justify="left")


def _more(out: Any, total: int, what: str) -> None:
    if total > TERMINAL_ROWS:
        out.print(Text(f"... and {total - TERMINAL_ROWS} more {what}: see --markdown or --json", style="dim"))


# -- markdown -------------------------------------------------------------------------

def _table(headers: Any, rows: list[list[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def to_markdown(report: AbReport) -> str:
    """The report as Markdown: summary, interpretation, pairs with a chart, flips, warnings."""
    lines = [f"# {_title(report)}", "", "## Summary", ""]
    lines += _table(SUMMARY_HEADERS, _summary_rows(report), "lrrrrrrrlrr")
    lines += ["", "## Cost per completed phase", ""]
    lines += _table(ARM_HEADERS, _arm_rows(report), "lrrrr")
    lines += ["", "## Interpretation", ""] + [f"- {line}" for line in report.interpretation]
    metric, scale = _chart(report)
    lines += ["", "## Pairs", "",
              f"The chart shows Δ {_LABELS[metric]}; a full bar is {format_value(scale, _UNITS[metric])}.", ""]
    cassettes = _with_cassettes(report)
    rows = [[str(p.index), f"`{p.control}`", f"`{p.treatment}`", *((f"`{_cassettes(p)}`",) if cassettes else ()),
             "yes" if p.included else "**no**", *_pair_cells(p),
             f"`{delta_bar(p.deltas[metric], scale)}`", ", ".join(w.kind for w in p.warnings) or "-"]
            for p in report.pairs]
    lines += _table(("#", "control", "treatment", *(("cassettes",) if cassettes else ()), "included",
                     *(f"Δ {_LABELS[n]}" for n in PAIR_COLUMNS), "chart", "warnings"), rows,
                    "rlll" + "l" * cassettes + "r" * len(PAIR_COLUMNS) + "ll")
    lines += ["", "## Flipped phases", ""]
    if report.flips:
        lines += _table(("#", "control", "treatment", "phase", "complete only in"),
                        [[str(f.pair), f"`{f.control}`", f"`{f.treatment}`", f"`{f.phase}`", f.complete_in]
                         for f in report.flips], "rllll")
    else:
        lines.append("None: every phase had the same outcome in both runs of each included pair.")
    lines += ["", "## Validity warnings", ""]
    lines += [f"- {line}" for line in _warning_lines(report)] or ["None."]
    return "\n".join(lines) + "\n"
