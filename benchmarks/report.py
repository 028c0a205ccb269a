"""Figures: one measured value each, with its target; printed as a table and written as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Figure:
    """A measured value; ``limit`` is the most it may be (None: recorded, no target)."""

    name: str
    value: float
    unit: str  # ms | count | MiB | bytes | ratio
    limit: float | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def meets(self) -> bool | None:
        return None if self.limit is None else self.value <= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "meets": self.meets}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_kb = 0
    try:
        memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                             if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        pass
    import sqlite3

    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "load_average_1m_at_start": round(os.getloadavg()[0], 2)}


def _format(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    if unit == "bytes":
        return f"{value:,.0f} B"
    return f"{value:,.2f}"


def table(figures: list[Figure]) -> str:
    """A plain-text table: name, median, CPU time of the median process run (if timed), target, verdict."""
    rows = [("benchmark", "median", "cpu", "target", "")]
    for figure in figures:
        target = "-" if figure.limit is None else f"<= {_format(figure.limit, figure.unit)}"
        verdict = {True: "ok", False: "MISSED", None: ""}[figure.meets]
        cpu = figure.detail.get("cpu_ms_median")
        rows.append((figure.name, _format(figure.value, figure.unit), "" if cpu is None else _format(cpu, "ms"),
                     target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}  {r[4]}".rstrip()
             for r in rows]
    lines.insert(1, "-" * max(map(len, lines)))
    return "\n".join(lines)


def write_json(path: Path, figures: list[Figure], settings: dict[str, Any], host: dict[str, Any]) -> None:
    payload = {"schema": 1, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": host, "settings": settings, "argv": sys.argv[1:],
               "figures": [figure.to_dict() for figure in figures]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
