"""`autopack status` without a run: the newest runs first, limited, with the total shown."""

from __future__ import annotations

import json
from pathlib import Path

from drainkit import PhaseScript, Workbench


def test_the_list_shows_the_newest_runs_and_says_how_many_are_hidden(tmp_path: Path) -> None:
    wb = Workbench(tmp_path)
    wb.queue_many({f"run-{n}": [PhaseScript("a")] for n in range(3)})  # recorded oldest to newest

    limited = wb.cli("status", "--json", "--limit", "2")
    assert limited.returncode == 0, limited.stderr
    listing = json.loads(limited.stdout)
    assert [run["id"] for run in listing["runs"]] == ["run-2", "run-1"]
    assert listing["total_runs"] == 3

    everything = json.loads(wb.cli("status", "--json", "--limit", "0").stdout)
    assert [run["id"] for run in everything["runs"]] == ["run-2", "run-1", "run-0"]

    text = wb.cli("status", "--limit", "1")
    assert text.returncode == 0, text.stderr
    assert "run-2" in text.stdout and "run-1" not in text.stdout
    assert "2 older run(s) not shown" in text.stdout

    refused = wb.cli("status", "--limit", "-1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
