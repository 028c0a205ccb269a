"""Claims per second: 8 executors claiming one run's phases through ``Store.claim_next``, on SQLite and on
PostgreSQL (figures only; nothing is asserted).

Usage: python -m benchmarks.claims [--phases N] [--executors N]

One run of ``--phases`` queued phases (no dependencies) is recorded in a fresh store of each kind, a
SQLite file and a database on a throwaway PostgreSQL server (scripts/pg-server, stopped after); then
``--executors`` threads, started together, each claim until ``claim_next`` answers None. Printed per
store: claims, wall time, claims per second, duplicates (a phase claimed twice; must be 0), phases
left queued and the fewest claims one executor got (0: it starved); then the PostgreSQL / SQLite ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.drain_memory import RUN_ID, write_project

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-server"
LEASE_S = 600


@dataclass(frozen=True)
class ClaimFigures:
    store: str
    claims: int
    seconds: float
    duplicates: int
    left_queued: int
    fewest: int

    @property
    def per_second(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


def record(db: Any, root: Path, phases: int) -> None:
    """A run of ``phases`` queued phases in ``db`` (a path or a postgresql:// URL)."""
    from autopack.config import load_settings
    from autopack.launch import check_new_run, record_run
    from autopack.plan import load_plan
    from autopack.store import open_store

    plan = load_plan(write_project(root, phases))
    settings = load_settings(root, environ={"AUTOPACK_DB": str(db), "HOME": str(root)})
    with open_store(settings.db) as store:
        record_run(store, plan, check_new_run(settings, plan), settings)


def claim_all(name: str, db: Any, executors: int) -> ClaimFigures:
    from autopack.store import open_store
    from autopack.store.location import parse_location

    won: list[list[int]] = [[] for _ in range(executors)]
    errors: list[BaseException] = []
    start = threading.Barrier(executors + 1)
    with open_store(parse_location(str(db)), create=False) as store:
        def executor(n: int) -> None:
            start.wait()
            try:
                while (phase := store.claim_next(RUN_ID, f"bench-{n}", LEASE_S)) is not None:
                    won[n].append(phase.pk)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=executor, args=(n,)) for n in range(executors)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        left = sum(p.state == "queued" for p in store.phases(RUN_ID))
    if errors:
        raise SystemExit(f"{name}: a claimer failed: {errors[0]}")
    claimed = [pk for pks in won for pk in pks]
    return ClaimFigures(name, len(claimed), seconds, len(claimed) - len(set(claimed)), left,
                        min(len(pks) for pks in won))


def table(figures: list[ClaimFigures], executors: int) -> str:
    lines = [f"{'store':<12} {'claims':>7} {'seconds':>8} {'claims/s':>9} {'duplicates':>10} {'left':>5} "
             f"{'fewest/executor':>15}"]
    lines += [f"{f.store:<12} {f.claims:>7} {f.seconds:>8.2f} {f.per_second:>9.0f} {f.duplicates:>10} "
              f"{f.left_queued:>5} {f.fewest:>15}" for f in figures]
    by_store = {f.store: f for f in figures}
    if {"SQLite", "PostgreSQL"} <= by_store.keys() and by_store["SQLite"].per_second:
        ratio = by_store["PostgreSQL"].per_second / by_store["SQLite"].per_second
        lines.append(f"PostgreSQL / SQLite claims per second, {executors} executors: {ratio:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=2000, help="queued phases in the run")
    parser.add_argument("--executors", type=int, default=8, help="threads claiming together")
    args = parser.parse_args(argv)
    figures = []
    with tempfile.TemporaryDirectory(prefix="autopack-claims-") as tmp:
        sqlite_db = Path(tmp) / "state" / "autopack.db"
        record(sqlite_db, Path(tmp) / "sqlite", args.phases)
        figures.append(claim_all("SQLite", sqlite_db, args.executors))
        started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True)
        if started.returncode != 0:
            print(f"no PostgreSQL server: {started.stderr.strip()}")
        else:
            url = started.stdout.strip()
            try:
                record(url, Path(tmp) / "pg", args.phases)
                figures.append(claim_all("PostgreSQL", url, args.executors))
            finally:
                subprocess.run(["bash", str(SCRIPT), "stop", url.split("host=", 1)[1].split("&", 1)[0]],
                               capture_output=True)
    print(f"{args.executors} executors (threads) claiming {args.phases} phases of one run via Store.claim_next:")
    print(table(figures, args.executors))


if __name__ == "__main__":
    main()
