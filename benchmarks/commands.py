"""Start-up and read commands, each timed as a whole process on an empty and on a built store."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.report import Figure
from benchmarks.store_builder import BuiltStore
from benchmarks.timing import ProcessTiming, autopack_argv, autopack_env, time_process

HELP_LIMIT_MS = 150.0
READ_LIMIT_MS = 1000.0
AB_TEST_PAIRS = 200


def _figure(name: str, timing: ProcessTiming, limit_ms: float | None, **detail: object) -> Figure:
    return Figure(name, timing.median_s * 1000, "ms", limit_ms, {
        "wall_ms": [round(s * 1000, 1) for s in timing.wall_s],
        "cpu_ms_median": round(timing.cpu_median_s * 1000, 1),
        "max_rss_mib": round(timing.max_rss_kb / 1024, 1),
        "command": " ".join(timing.argv[3:]), **detail})


def startup_figures(repeats: int) -> list[Figure]:
    """A bare `python -c pass` (the machine's speed right now, for reading the rest), `autopack --help`,
    and `autopack status` where no database exists yet."""
    env = autopack_env()
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
        cwd = Path(scratch)
        bare = time_process([sys.executable, "-c", "pass"], cwd, env, repeats)
        help_timing = time_process(autopack_argv("--help"), cwd, env, repeats)
        empty = time_process(autopack_argv("status", "--db", str(cwd / "none.db")), cwd, env, repeats)
    return [_figure("python -c pass (reference)", bare, None),
            _figure("autopack --help", help_timing, HELP_LIMIT_MS),
            _figure("status (no database)", empty, READ_LIMIT_MS)]


def read_figures(store: BuiltStore, repeats: int, names: set[str] | None = None) -> list[Figure]:
    """The read commands on ``store``; ``names`` picks some of them (None: all)."""
    db = str(store.path)
    pairs = store.ab_pairs[:AB_TEST_PAIRS]
    commands = {
        "status": ["status", "--db", db],
        "status --json": ["status", "--json", "--db", db],
        "status RUN": ["status", store.sample_run, "--db", db],
        "pick-next": ["pick-next", "--db", db],
        "drain --dry-run": ["drain", "--dry-run", "--db", db],
        f"ab-test ({len(pairs)} pairs)": ["ab-test", "--db", db, "--json", os.devnull,
                                          "--control", ",".join(c for c, _ in pairs),
                                          "--treatment", ",".join(t for _, t in pairs)],
    }
    env = autopack_env()
    figures = []
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
        for name, args in commands.items():
            if names is not None and name.split(" (")[0] not in names:
                continue
            timing = time_process(autopack_argv(*args), Path(scratch), env, repeats)
            figures.append(_figure(f"{name} [{store.scale}]", timing, READ_LIMIT_MS))
    return figures
