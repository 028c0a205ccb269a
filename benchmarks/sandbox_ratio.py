"""What `sandbox = "bwrap"` costs per suite run: the example's suite (examples/calc/target) through
``run_tests``, unconfined and in the sandbox, alternately, in a worktree under a state directory
as a run has it. Prints nothing where bwrap cannot build a sandbox (the figures say why)."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.report import Figure

TARGET = Path(__file__).resolve().parent.parent / "examples" / "calc" / "target"
RATIO_LIMIT = 1.25  # the issue measured 1.02 on a 0.6 s suite
EXTRA_MS_LIMIT = 100.0


def suite_timings(workdir: Path, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per suite run (unconfined, sandboxed), ``repeats`` each after one warm-up of each."""
    from autopack.sandbox import Sandbox, preflight
    from autopack.testrun import run_tests

    checkout = workdir / "calc"
    shutil.copytree(TARGET, checkout, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run([*git, *args], cwd=checkout, check=True, capture_output=True)
    state = checkout / ".autopack"
    worktree = state / "worktrees" / "bench"
    subprocess.run([*git, "worktree", "add", "-q", "--detach", str(worktree)], cwd=checkout, check=True,
                   capture_output=True)
    sandbox = Sandbox(bwrap=preflight(), hidden=(state,))
    command = f"{sys.executable} -m pytest -q -p no:cacheprovider"
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(repeats + 1):
        for boxed in (False, True):
            report = run_tests(command, worktree, timeout_s=300, log_path=state / "runs" / "logs" / "suite.log",
                               junit_path=state / "runs" / "junit" / "suite.xml", sandbox=sandbox if boxed else None)
            if not report.outcomes:
                raise RuntimeError(f"the example's suite gave no results: {report.output_tail[-500:]}")
            if round_:  # the first round warms caches up
                times[boxed].append(report.duration_s)
    return times[False], times[True]


def sandbox_figures(repeats: int) -> list[Figure]:
    """The sandboxed/unconfined ratio of the median suite run, and the milliseconds it adds."""
    from autopack.sandbox import SandboxUnavailable

    with tempfile.TemporaryDirectory(prefix="autopack-bench-sandbox-") as scratch:
        try:
            plain, boxed = suite_timings(Path(scratch), repeats)
        except SandboxUnavailable as exc:
            print(f"sandbox: not measured: {exc}", flush=True)
            return []
    detail = {"runs": repeats, "unconfined_s": plain, "sandboxed_s": boxed}
    ratio = statistics.median(boxed) / statistics.median(plain)
    extra_ms = (statistics.median(boxed) - statistics.median(plain)) * 1000
    return [Figure("sandboxed / unconfined suite run (example)", ratio, "ratio", RATIO_LIMIT, detail),
            Figure("time the sandbox adds per suite run (example)", extra_ms, "ms", EXTRA_MS_LIMIT)]
