"""The read commands on SQLite and on PostgreSQL, over the same large store: PostgreSQL / SQLite ratios.

Usage: python -m benchmarks.read_commands_pg [--scale large|small|tiny] [--repeats N] [--cache-dir DIR]

The store of ``python -m benchmarks`` (store_builder) is copied into a throwaway PostgreSQL
server (scripts/pg-server; tests/storecopy.py), then each read command's work is timed two ways:
in process (open the reader, run the read model, close: the database's share), the median of
``--repeats`` runs after a warm-up, and as the ``autopack`` command a user runs (interpreter start,
imports — psycopg's ~0.1-0.2 s among them on PostgreSQL — the command's code and its output), the
median of ``--repeats`` runs on each database taken alternately. Target: PostgreSQL at most 1.5x
SQLite. Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5
AB_TEST_PAIRS = 200
COMMANDS = ("status", "status RUN", "status --stats", "show RUN", "pick-next", "drain --dry-run", "ab-test")


def _settings(db: Any) -> SimpleNamespace:
    return SimpleNamespace(db=db, lease_s=120.0, park_after_identical_failures=3, park_after_attempts=12)


def command(name: str, db: Any, sample_run: str, pairs: list[tuple[str, str]]) -> Callable[[], Any]:
    """The work of read command ``name`` on ``db`` (a path or a PostgresUrl), through the command's own code."""
    def status() -> Any:
        from autopack.cli.status import _snapshot
        return _snapshot(_settings(db), None, 60.0, 20)

    def status_run() -> Any:
        from autopack.cli.status import _snapshot
        return _snapshot(_settings(db), sample_run, 60.0, 20)

    def stats() -> Any:
        from autopack.cli.status import _stats
        return _stats(_settings(db), None)

    def show() -> Any:
        from autopack.cli.show import _story
        return _story(_settings(db), sample_run, None, None, False, False)

    def with_reader(work: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            from autopack.store import open_reader
            with open_reader(db) as reader:
                return work(reader)
        return run

    def pick_next(reader: Any) -> Any:
        from autopack.drain import park_rule
        from autopack.picker import EXPLAINED_RUNS, score_runs
        return [s.to_dict() for s in score_runs(reader, park_rule(_settings(db)), limit=EXPLAINED_RUNS)]

    def dry_run(reader: Any) -> Any:
        from autopack.drain import DrainOptions, plan_candidates
        return [(c.phase.run_id, c.phase.phase_id, c.rank, c.reason)
                for c in plan_candidates(reader, _settings(db), DrainOptions())]

    def ab_test(reader: Any) -> Any:
        from autopack import abtest
        from autopack.abtest_pairs import pairs_from_arms
        arms = pairs_from_arms([c for c, _ in pairs], [t for _, t in pairs])
        return abtest.compare(reader, arms).to_dict()

    return {"status": status, "status RUN": status_run, "status --stats": stats, "show RUN": show,
            "pick-next": with_reader(pick_next), "drain --dry-run": with_reader(dry_run),
            "ab-test": with_reader(ab_test)}[name]


def _median_s(work: Callable[[], Any], repeats: int) -> float:
    work()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def cli_args(name: str, db: str, sample_run: str, pairs: list[tuple[str, str]]) -> list[str]:
    """The arguments of read command ``name`` as a user types them."""
    return {"status": ["status"], "status RUN": ["status", sample_run], "status --stats": ["status", "--stats"],
            "show RUN": ["show", sample_run], "pick-next": ["pick-next"], "drain --dry-run": ["drain", "--dry-run"],
            "ab-test": ["ab-test", "--json", os.devnull, "--control", ",".join(c for c, _ in pairs),
                        "--treatment", ",".join(t for _, t in pairs)]}[name] + ["--db", db]


def _processes_s(name: str, dbs: tuple[str, str], sample_run: str, pairs: list[tuple[str, str]],
                 repeats: int) -> tuple[float, float]:
    """Median wall seconds of ``autopack <name>`` on each of ``dbs``, the two run alternately (this
    machine's speed drifts: alternating keeps a drift out of the ratio), after a warm-up of each."""
    from benchmarks.timing import autopack_argv, autopack_env, run_once

    env = autopack_env()
    argvs = [autopack_argv(*cli_args(name, db, sample_run, pairs)) for db in dbs]
    samples: tuple[list[float], list[float]] = ([], [])
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
        for argv in argvs:
            run_once(argv, Path(scratch), env)
        for _ in range(repeats):
            for argv, taken in zip(argvs, samples):
                taken.append(run_once(argv, Path(scratch), env)[0])
    return statistics.median(samples[0]), statistics.median(samples[1])


def _pg_copy(sqlite_path: Path, scratch: Path) -> tuple[str, float]:
    """Start a throwaway server in ``scratch``, copy the store there; (URL, seconds the copy took)."""
    import psycopg

    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import database_url
    from storecopy import copy_store

    started = subprocess.run(["bash", str(ROOT / "scripts" / "pg-server"), "start", str(scratch)],
                             capture_output=True, text=True, check=True)
    server = started.stdout.strip()
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute('CREATE DATABASE "bench"')
    url = database_url(server, "bench")
    began = time.perf_counter()
    copy_store(sqlite_path, url)
    return url, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    from benchmarks.store_builder import CACHE_DIR, SCALES

    parser = argparse.ArgumentParser(prog="python -m benchmarks.read_commands_pg", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    args = parser.parse_args(argv)

    from benchmarks.store_builder import cached_store
    from autopack.store.location import PostgresUrl

    store = cached_store(SCALES[args.scale], args.cache_dir)
    pairs = store.ab_pairs[:AB_TEST_PAIRS]
    print(f"store {store.path}: " + ", ".join(f"{n:,} {t}" for t, n in store.counts.items()), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="autopack-bench-pg."))
    try:
        url, copy_s = _pg_copy(store.path, scratch)
        print(f"copied to PostgreSQL in {copy_s:.1f} s", flush=True)
        print(f"{'command':<18} {'in process: SQLite':>19} {'PostgreSQL':>11} {'ratio':>6}   "
              f"{'autopack command: SQLite':>25} {'PostgreSQL':>11} {'ratio':>6}")
        for name in COMMANDS:
            inner = [_median_s(command(name, db, store.sample_run, pairs), args.repeats)
                     for db in (store.path, PostgresUrl(url))]
            outer = _processes_s(name, (str(store.path), url), store.sample_run, pairs, args.repeats)
            print(f"{name:<18} {inner[0] * 1000:>16.1f} ms {inner[1] * 1000:>8.1f} ms {inner[1] / inner[0]:>5.2f}x   "
                  f"{outer[0] * 1000:>22.1f} ms {outer[1] * 1000:>8.1f} ms {outer[1] / outer[0]:>5.2f}x", flush=True)
        print(f"(target: PostgreSQL at most {TARGET_RATIO}x SQLite; medians of {args.repeats} runs after a warm-up)")
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "pg-server"), "stop", str(scratch)], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
