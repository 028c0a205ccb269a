"""`drain --dry-run` over 10,000 drainable phases against a store holding one: how its time grows.

Usage: python -m benchmarks.drain_dry_run [--repeats N] [--cache-dir DIR]

Two SQLite stores are built with store_builder's generator: 1,000 runs of 10 queued phases (half
the runs chain their phases, so most are blocked and some ready, as in a real queue), and one run
of one queued phase. `autopack drain --dry-run` is timed on each as a whole process and its read
model in process (the database's share), the runs interleaved so that the machine's speed, which
varies, is the same for both. Target (issue [L]): the large store at most 1.5x the one-phase one.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks.store_builder import CACHE_DIR, Scale, _Generator, build_store
from benchmarks.timing import autopack_argv, autopack_env, run_once

TARGET_RATIO = 1.5
STORES = {"10,000 drainable": Scale("drainable", runs=1_000, llm_calls_per_run=10),
          "one phase": Scale("one-phase", runs=1, phases_per_run=1, llm_calls_per_run=10)}


class _QueuedGenerator(_Generator):
    """Every phase of every run queued (never attempted)."""

    def _phase_states(self, index: int) -> list[str]:
        return ["queued"] * self.scale.phases_per_run


def build(path: Path, scale: Scale) -> None:
    import benchmarks.store_builder as builder

    generator, builder._Generator = builder._Generator, _QueuedGenerator
    try:
        build_store(path, scale)
    finally:
        builder._Generator = generator


def in_process_s(db: Path) -> float:
    """One `drain --dry-run` read model: open the reader, order the candidates, close."""
    from autopack.drain import DrainOptions, plan_candidates
    from autopack.store import open_reader

    settings = SimpleNamespace(db=db, lease_s=120.0, park_after_identical_failures=3, park_after_attempts=12)
    started = time.perf_counter()
    with open_reader(db) as reader:
        plan_candidates(reader, settings, DrainOptions())
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain_dry_run", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR / "drain-dry-run")
    args = parser.parse_args(argv)

    paths = {}
    for name, scale in STORES.items():
        path = args.cache_dir / f"{scale.name}.db"
        started = time.perf_counter()
        build(path, scale)
        print(f"{name}: built {path} in {time.perf_counter() - started:.1f} s", flush=True)
        paths[name] = path

    env = autopack_env()
    wall: dict[str, list[float]] = {name: [] for name in paths}
    inner: dict[str, list[float]] = {name: [] for name in paths}
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
        for name, path in paths.items():  # warm-up: page cache, .pyc files
            run_once(autopack_argv("drain", "--dry-run", "--db", str(path)), Path(scratch), env)
            in_process_s(path)
        for _ in range(args.repeats):
            for name, path in paths.items():
                wall[name].append(run_once(autopack_argv("drain", "--dry-run", "--db", str(path)),
                                           Path(scratch), env)[0])
                inner[name].append(in_process_s(path))

    print(f"{'store':<18} {'whole command':>14} {'read model':>11}")
    medians = {}
    for name in paths:
        medians[name] = (statistics.median(wall[name]), statistics.median(inner[name]))
        print(f"{name:<18} {medians[name][0] * 1000:>11.1f} ms {medians[name][1] * 1000:>8.1f} ms")
    big, small = medians["10,000 drainable"], medians["one phase"]
    print(f"ratio: whole command {big[0] / small[0]:.2f}x, read model {big[1] / small[1]:.1f}x "
          f"(+{(big[0] - small[0]) * 1000:.0f} ms); target: whole command at most {TARGET_RATIO}x; "
          f"medians of {args.repeats} interleaved runs after a warm-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
