"""Memory of one drain over many trivial phases: resident set size after phase 100 and after the last.

The project is generated: N independent phases, each writing its own file under
``notes/`` (its scope is that file alone, so every phase is the same work however many
came before); a cassette with one builder response per phase; and a test command that
is not pytest (``sh check.sh`` writes a one-test JUnit report to ``$AUTOPACK_JUNIT_FILE``
at once), so what grows is the drain's own memory. The run is queued with
``run --queue-only`` and drained by one ``drain --run-id`` process whose plain output
(one line per finished phase) is read as it comes, while a thread samples the drain's
VmRSS from /proc every 10 ms.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import Figure
from benchmarks.timing import autopack_argv, autopack_env, run_once

RUN_ID = "drain-memory"
FIRST_CHECKPOINT = 100
GROWTH_LIMIT_MIB = 10.0
CHECK_SCRIPT = """#!/bin/sh
# One passing test per note file would be slow to write; one test is enough here.
printf '<testsuite name="notes" tests="1"><testcase classname="notes" name="exist"/></testsuite>\\n' \\
  > "$AUTOPACK_JUNIT_FILE"
"""


@dataclass(frozen=True)
class DrainMemory:
    phases: int
    completed: int
    rss_mib: dict[int, float]  # phases finished -> VmRSS of the drain then
    seconds: float

    @property
    def growth_mib(self) -> float:
        """RSS after the last phase minus RSS after phase 100."""
        return self.rss_mib[self.phases] - self.rss_mib[min(FIRST_CHECKPOINT, self.phases)]


def write_project(root: Path, phases: int) -> Path:
    """The generated git project with its plan and cassette; returns the plan file."""
    env = autopack_env()
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "README").write_text("one file per phase\n")
    (root / "check.sh").write_text(CHECK_SCRIPT)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                       cwd=root, env=env, check=True, capture_output=True)
    ids = [f"p{n:04d}" for n in range(1, phases + 1)]
    plan = [f'[run]\nid = "{RUN_ID}"\ngoal = "Add one note per phase"\nrepo = "."\n'
            'test_command = "sh check.sh"\ncassette = "cassette.jsonl"\nbuilder = "single"\n']
    plan += [f'[[phases]]\nid = "{pid}"\ngoal = "Write notes/{pid}.txt"\ncategory = "docs"\n'
             f'scope = ["notes/{pid}.txt"]\ndeliverables = ["notes/{pid}.txt"]\n' for pid in ids]
    (root / "plan.toml").write_text("\n".join(plan))
    with open(root / "cassette.jsonl", "w") as cassette:
        for n, pid in enumerate(ids):
            cassette.write(json.dumps(_builder_line(pid, n)) + "\n")
    return root / "plan.toml"


def _builder_line(phase_id: str, n: int) -> dict:
    body = {"id": f"msg_bench{n:05d}", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
            "content": [{"type": "tool_use", "id": f"toolu_bench{n:05d}", "name": "write_file",
                         "input": {"path": f"notes/{phase_id}.txt", "content": f"note {phase_id}\n"}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 300, "output_tokens": 40, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}
    return {"role": "builder", "phase": phase_id, "attempt": 1,
            "response": {"status": 200, "headers": {"request-id": f"req_bench{n:05d}"}, "body": body}}


class _RssSampler(threading.Thread):
    """Reads a process's VmRSS every 10 ms until it exits."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.samples: list[tuple[float, float]] = []  # (perf_counter, MiB)

    def run(self) -> None:
        while True:
            try:
                text = self.status.read_text()
            except OSError:
                return
            rss = next((line.split()[1] for line in text.splitlines() if line.startswith("VmRSS:")), None)
            if rss is None:  # a zombie: it has exited
                return
            self.samples.append((time.perf_counter(), int(rss) / 1024))
            time.sleep(0.01)

    def before(self, when: float) -> float:
        """The last sample taken before ``when``."""
        return [mib for at, mib in self.samples if at <= when][-1]


def measure_drain(workdir: Path, phases: int) -> DrainMemory:
    """Queue ``phases`` phases and drain them in one process, sampling its RSS as phases finish.

    RSS "after k phases" is the last 10 ms sample before the k-th phase's line arrived.
    """
    project = workdir / "project"
    plan = write_project(project, phases)
    env = autopack_env()
    db = str(workdir / "autopack.db")
    run_once(autopack_argv("run", str(plan), "--queue-only", "--db", db), project, env)
    checkpoints = {min(FIRST_CHECKPOINT, phases), phases, *range(0, phases + 1, max(phases // 10, 1))} - {0}
    arrivals: dict[int, float] = {}
    finished = completed = 0
    started = time.perf_counter()
    argv = autopack_argv("drain", "--run-id", RUN_ID, "--batch-size", str(phases), "--db", db)
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(argv, cwd=project, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        sampler = _RssSampler(proc.pid)
        sampler.start()
        for line in proc.stdout:
            if ": complete at " in line or ": failed: " in line:
                finished += 1
                completed += ": complete at " in line
                if finished in checkpoints:
                    arrivals[finished] = time.perf_counter()
        code = proc.wait()
        sampler.join()
        if finished != phases:
            stderr.seek(0)
            raise RuntimeError(f"drain exited {code} after {finished} of {phases} phases: "
                               f"{stderr.read().decode(errors='replace')[-500:]}")
    rss = {done: sampler.before(when) for done, when in sorted(arrivals.items())}
    return DrainMemory(phases, completed, rss, time.perf_counter() - started)


def drain_memory_figures(phases: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
        result = measure_drain(Path(scratch), phases)
    first = min(FIRST_CHECKPOINT, phases)
    detail = {"phases": result.phases, "completed": result.completed, "drain_seconds": round(result.seconds, 1),
              "rss_mib_by_phases_done": {str(k): round(v, 1) for k, v in result.rss_mib.items()},
              f"rss_mib_after_{first}": round(result.rss_mib[first], 1),
              f"rss_mib_after_{phases}": round(result.rss_mib[phases], 1)}
    return [Figure(f"drain RSS growth, phase {first} -> {phases}", result.growth_mib, "MiB",
                   GROWTH_LIMIT_MIB, detail)]
