"""The agent builder's own cost: autopack's overhead per turn, memory over a long attempt, prompt bytes.

A scripted attempt (``ScriptedBuilder``: the agent loop with a script for a model, no HTTP) runs
through the real runner on a generated git project, with the real toolbox (git ls-files, reads,
searches, edits), the real store (a ledger row and a transcript row per turn) and, for run_tests,
the real sandboxed test command (``sh check.sh`` writes a one-test JUnit report at once). Measured:

- overhead per turn: from one model reply to the next request, minus the test subprocess in
  between: running the tools, writing the store, building the next request;
- memory: this process's VmRSS after turn 20 and after the last turn;
- prompt bytes per turn with caching on and off: each request's size, and the part of it that no
  cache entry written by an earlier request covers (what the API processes at the full price).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import Figure
from benchmarks.timing import autopack_env

OVERHEAD_LIMIT_MS = 20.0
RSS_GROWTH_LIMIT_MIB = 10.0
MODULES = 30
CHECK_SCRIPT = """#!/bin/sh
printf '<testsuite name="app" tests="1"><testcase classname="app" name="imports"/></testsuite>\\n' \\
  > "$AUTOPACK_JUNIT_FILE"
"""


@dataclass(frozen=True)
class AttemptRecord:
    turns: int
    overheads_ms: list[float]
    rss_mib: dict[int, float]  # turn -> VmRSS when its request was made
    request_bytes: list[int]
    uncached_bytes: list[int]


def write_project(root: Path) -> Path:
    """A git project of MODULES small modules under src/ and check.sh; returns its directory."""
    import subprocess

    project = root / "app"
    (project / "src").mkdir(parents=True)
    for n in range(MODULES):
        body = "".join(f"def f_{n}_{k}(x):\n    return x + {k}\n\n\n" for k in range(8))
        (project / "src" / f"mod_{n:02d}.py").write_text(f'"""Module {n}."""\n\nVALUE = 0\n\n\n{body}')
    (project / "check.sh").write_text(CHECK_SCRIPT)
    env = autopack_env()
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                       cwd=project, env=env, check=True, capture_output=True)
    return project


def script(turns: int, test_every: int = 20) -> list[list[tuple[str, dict]]]:
    """``turns`` turns of exploration and small edits, run_tests every ``test_every``, then finish."""
    played: list[list[tuple[str, dict]]] = []
    value = 0
    for n in range(turns - 1):
        module = f"src/mod_{n % MODULES:02d}.py"
        kind = n % 4
        if n % test_every == test_every - 1:
            played.append([("run_tests", {})])
        elif kind == 0:
            played.append([("list_files", {"path": "src"})])
        elif kind == 1:
            played.append([("read_file", {"path": module, "start_line": 1, "end_line": 40})])
        elif kind == 2:
            played.append([("search", {"pattern": rf"def f_{n % MODULES}_\d+", "path": "src"})])
        else:
            played.append([("edit_file", {"path": "src/mod_00.py", "old": f"VALUE = {value}",
                                          "new": f"VALUE = {value + 1}"})])
            value += 1
    played.append([("finish", {"summary": "benchmark"})])
    return played


def run_attempt_scripted(root: Path, turns: int, *, cache: bool = True, keep_requests: bool = False) -> AttemptRecord:
    """One scripted attempt of ``turns`` turns through the runner, timed turn by turn."""
    from autopack.config import load_settings
    from autopack.launch import check_new_run, record_run
    from autopack.llm.scripted import ScriptedBuilder
    from autopack.plan import load_plan
    from autopack.runner import RunContext, run_attempt
    from autopack.store import open_store
    from autopack.workspace import Workspace

    write_project(root)
    (root / "plan.toml").write_text(
        '[run]\nid = "agent-bench"\ngoal = "Benchmark the agent loop"\nrepo = "app"\ntest_command = "sh check.sh"\n'
        f'builder = "agent"\n\n[run.limits]\nagent_max_turns = {turns}\nagent_max_test_runs = {turns}\n\n'
        '[[phases]]\nid = "explore"\ngoal = "Explore and edit"\ncategory = "refactor"\nscope = ["src/"]\n'
        'max_attempts = 1\n')
    settings = load_settings(root, environ={**autopack_env(), "AUTOPACK_DB": str(root / "state" / "autopack.db")})
    plan = load_plan(root / "plan.toml")
    builder = ScriptedBuilder(script(turns), max_turns=turns, cache=cache)
    timed = _Timed(builder.model, keep_requests)
    builder.model = timed
    with open_store(settings.db) as store:
        run = record_run(store, plan, check_new_run(settings, plan), settings)
        workspace = Workspace(Path(run.repo_root), Path(run.worktree), run.branch, run.subdir)
        workspace.ensure(run.base_commit)
        ctx = RunContext(store=store, run=run, plan=plan, workspace=workspace, builder=builder, settings=settings,
                         executor_id="bench", artifacts=settings.state_dir / "runs" / run.id,
                         builder_model="claude-sonnet-5-5")
        phase = store.claim_next(run.id, "bench", 600)
        run_attempt(ctx, phase, plan.phase("explore"), None)
        with store.read() as conn:
            tests = [row[0] for row in conn.execute(
                "SELECT duration_s FROM test_runs WHERE kind = 'agent' ORDER BY id")]
    test_turns = [n for n, turn in enumerate(script(turns)) if turn[0][0] == "run_tests"]
    pauses = dict(zip(test_turns, tests))
    overheads = [(timed.starts[n + 1] - timed.ends[n] - pauses.get(n, 0.0)) * 1000 for n in range(len(timed.ends) - 1)]
    return AttemptRecord(len(timed.starts), overheads, timed.rss, builder.model.inner.request_sizes,
                         uncached_bytes(timed.requests) if keep_requests else [])


class _Timed:
    """Wraps the scripted model: when each request came and its reply left, VmRSS at turns 20 and last."""

    def __init__(self, inner: Any, keep_requests: bool):
        self.inner, self.keep = inner, keep_requests
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.rss: dict[int, float] = {}
        self.requests: list[Any] = []

    def reply(self, request: Any) -> Any:
        self.starts.append(time.perf_counter())
        if request.turn == 20 or request.turn == len(self.inner.turns):
            self.rss[request.turn] = _rss_mib()
        if self.keep:
            self.requests.append(request)
        reply = self.inner.reply(request)
        self.ends.append(time.perf_counter())
        return reply


def _rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items() if key != "cache_control"}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def uncached_bytes(requests: list[Any]) -> list[int]:
    """Per request: its size minus the longest prefix (tools, system, messages up to a cache mark) that an
    earlier request marked too, i.e. wrote to the cache. Without marks nothing is cached."""
    written: set[str] = set()
    sizes = []
    for request in requests:
        tools, system, messages = _canonical(request.tools), _canonical(request.system), _canonical(request.messages)
        total = len(json.dumps([tools, system, messages]))
        prefixes = []
        if any("cache_control" in block for block in request.system):
            prefixes.append(json.dumps([tools, system, []]))
        for index, message in enumerate(request.messages):
            if isinstance(message["content"], list) and "cache_control" in message["content"][-1]:
                prefixes.append(json.dumps([tools, system, messages[:index + 1]]))
        hit = max((len(prefix) for prefix in prefixes if prefix in written), default=0)
        sizes.append(total - hit)
        written.update(prefixes)
    return sizes


def agent_figures(turns: int = 200, prompt_turns: int = 40) -> list[Figure]:
    """Overhead per turn and memory over a ``turns``-turn attempt; prompt bytes over ``prompt_turns`` turns."""
    with tempfile.TemporaryDirectory(prefix="autopack-bench-agent-") as scratch:
        long = run_attempt_scripted(Path(scratch), turns)
    with tempfile.TemporaryDirectory(prefix="autopack-bench-agent-") as scratch:
        cached = run_attempt_scripted(Path(scratch), prompt_turns, keep_requests=True)
    with tempfile.TemporaryDirectory(prefix="autopack-bench-agent-") as scratch:
        uncached = run_attempt_scripted(Path(scratch), prompt_turns, cache=False, keep_requests=True)
    first, last = min(long.rss_mib), max(long.rss_mib)
    growth = long.rss_mib[last] - long.rss_mib[first]
    overheads = sorted(long.overheads_ms)
    return [
        Figure(f"agent overhead per turn (scripted, {long.turns} turns)", statistics.median(overheads), "ms",
               OVERHEAD_LIMIT_MS, {"p90_ms": overheads[int(len(overheads) * 0.9)], "max_ms": overheads[-1],
                                   "turns": long.turns}),
        Figure(f"agent RSS growth, turn {first} → {last}", growth, "MiB", RSS_GROWTH_LIMIT_MIB,
               {"rss_mib": long.rss_mib, "last_request_bytes": long.request_bytes[-1]}),
        Figure(f"agent prompt bytes per turn not cached, cache on ({prompt_turns} turns)",
               statistics.median(cached.uncached_bytes), "bytes", None,
               {"request_bytes_median": statistics.median(cached.request_bytes),
                "uncached_total": sum(cached.uncached_bytes), "request_total": sum(cached.request_bytes)}),
        Figure(f"agent prompt bytes per turn not cached, cache off ({prompt_turns} turns)",
               statistics.median(uncached.uncached_bytes), "bytes", None,
               {"request_bytes_median": statistics.median(uncached.request_bytes),
                "uncached_total": sum(uncached.uncached_bytes), "request_total": sum(uncached.request_bytes)}),
    ]
