"""Time autopack as whole processes and compare each figure with its target.

Usage: python -m benchmarks [--scale large|small|tiny] [--only GROUP,...]. Groups: startup (--help, status without a database), read (status, status RUN, pick-next,
drain --dry-run, ab-test on a built store), example (overhead and test-suite runs per
attempt of examples/calc), drain (RSS of one drain over --drain-phases phases), agent (the agent
builder's overhead per turn, memory over --agent-turns turns, prompt bytes with caching on/off), sandbox
(the example's suite run in the bwrap sandbox against unconfined: the ratio and the time it adds).
Prints a table and writes the figures, with the machine they were measured on, as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks.report import Figure, machine, table, write_json

GROUPS = ("startup", "read", "example", "drain", "agent", "sandbox")
DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from benchmarks.store_builder import CACHE_DIR, SCALES

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="large",
                        help="store size for the read group (large: 10,000 runs, 1,000,000 LLM calls)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (after one warm-up)")
    parser.add_argument("--drain-phases", type=int, default=1000, help="phases in the drain-memory run")
    parser.add_argument("--agent-turns", type=int, default=200, help="turns of the scripted agent attempt")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where built stores are kept")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the figures")
    args = parser.parse_args(argv)
    args.groups = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    from benchmarks.agent_turns import agent_figures
    from benchmarks.commands import read_figures, startup_figures
    from benchmarks.drain_memory import drain_memory_figures
    from benchmarks.example_run import example_figures
    from benchmarks.sandbox_ratio import sandbox_figures
    from benchmarks.store_builder import SCALES, cached_store

    args = parse_args(argv)
    host = machine()
    print(f"machine: {host['cpu']}, {host['cpus']} CPUs, {host['memory_gib']} GiB, Python {host['python']}, "
          f"SQLite {host['sqlite']}; load average {host['load_average_1m_at_start']}", flush=True)
    figures: list[Figure] = []
    settings: dict = {"repeats": args.repeats, "groups": args.groups}
    started = time.perf_counter()
    if "startup" in args.groups:
        figures += startup_figures(args.repeats)
    if "read" in args.groups:
        store = cached_store(SCALES[args.scale], args.cache_dir)
        built = f"built in {store.build_s:.0f} s" if store.build_s is not None else "cached"
        print(f"store {store.path} ({built}): " + ", ".join(f"{n:,} {t}" for t, n in store.counts.items()), flush=True)
        settings["store"] = {"scale": store.scale, "counts": store.counts, "sample_run": store.sample_run}
        figures += read_figures(store, args.repeats)
    if "example" in args.groups:
        figures += example_figures(args.repeats)
    if "drain" in args.groups:
        settings["drain_phases"] = args.drain_phases
        figures += drain_memory_figures(args.drain_phases)
    if "agent" in args.groups:
        settings["agent_turns"] = args.agent_turns
        figures += agent_figures(args.agent_turns)
    if "sandbox" in args.groups:
        figures += sandbox_figures(max(args.repeats, 5))
    print(table(figures))
    print(f"({time.perf_counter() - started:.0f} s; figures written to {args.json})")
    write_json(args.json, figures, settings, host)
    return 1 if any(figure.meets is False for figure in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
