"""Inline SVG for the HTML report: the attempts timeline and horizontal bar charts.

Every label is escaped here; sizes are fixed numbers, so the charts render the same in any
browser without a script or a style sheet from anywhere.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from autopack.report.text import clean

VERDICT_COLOURS = {"complete": "#2e7d32", "failed": "#c62828", "interrupted": "#8d6e63", "abandoned": "#757575",
                   "running": "#1565c0"}
LABEL_W, ROW_H, BOX_W, GAP, FONT = 190, 28, 34, 4, 13


def esc(text: Any) -> str:
    """``text`` safe in HTML and SVG text and in quoted attributes, control characters made visible."""
    return escape(clean(str(text)), quote=True)


def _label(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def timeline(phases: Sequence[dict[str, Any]]) -> str:
    """One row per phase, one box per attempt, coloured by the attempt's verdict."""
    most = max((len(p["attempt_list"]) for p in phases), default=0)
    width = LABEL_W + max(most, 1) * (BOX_W + GAP) + 170
    height = ROW_H * max(len(phases), 1) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" aria-label="attempts per phase, by verdict">']
    for row, phase in enumerate(phases):
        y = 4 + row * ROW_H
        parts.append(f'<text x="0" y="{y + 18}" font-size="{FONT}" font-family="monospace">'
                     f'<title>{esc(phase["id"])}</title>{esc(_label(phase["id"]))}</text>')
        x = LABEL_W
        for attempt in phase["attempt_list"]:
            colour = VERDICT_COLOURS.get(attempt["state"], "#9e9e9e")
            failure = attempt["failure"]
            tip = f"attempt {attempt['number']}: {attempt['state']}" + (
                f" ({failure['kind']}: {failure['message']})" if failure else "")
            parts.append(f'<g><title>{esc(tip)}</title><rect x="{x}" y="{y + 2}" width="{BOX_W}" '
                         f'height="{ROW_H - 8}" rx="3" fill="{colour}"/><text x="{x + BOX_W / 2}" y="{y + 18}" '
                         f'font-size="{FONT}" fill="#fff" text-anchor="middle">{attempt["number"]}</text></g>')
            x += BOX_W + GAP
        tail = phase["state"] + (" · parked" if phase.get("parked") else "")
        parts.append(f'<text x="{x + 6}" y="{y + 18}" font-size="{FONT}" fill="#444">{esc(tail)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(rows: Sequence[tuple[str, float]], unit: str, label: str) -> str:
    """Horizontal bars, one per (name, value), scaled to the largest value."""
    bar_max = 360
    top = max((value for _, value in rows), default=0) or 1
    width, height = LABEL_W + bar_max + 130, ROW_H * max(len(rows), 1) + 8
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{esc(label)}">']
    for row, (name, value) in enumerate(rows):
        y = 4 + row * ROW_H
        shown = f"${value:.4f}" if unit == "usd" else f"{value:,.0f} tokens"
        length = max(1.0, value / top * bar_max) if value else 0
        parts.append(f'<g><title>{esc(name)}: {esc(shown)}</title>'
                     f'<text x="0" y="{y + 18}" font-size="{FONT}" font-family="monospace">{esc(_label(name))}</text>'
                     f'<rect x="{LABEL_W}" y="{y + 4}" width="{length:.1f}" height="{ROW_H - 10}" fill="#3f51b5"/>'
                     f'<text x="{LABEL_W + length + 6:.1f}" y="{y + 18}" font-size="{FONT}">{esc(shown)}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
