"""Whole-process timing: wall and CPU time of `python -m autopack ...`, median of several runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class ProcessTiming:
    """Seconds per run of one command; the first (warm-up) run is not among the samples."""

    argv: list[str]
    wall_s: list[float]
    cpu_s: list[float]  # user + system of the process and the children it waited for
    max_rss_kb: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def cpu_median_s(self) -> float:
        return statistics.median(self.cpu_s)


class CommandFailed(RuntimeError):
    pass


def autopack_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without autopack settings or an API key, and with bytecode caching on.

    PYTHONDONTWRITEBYTECODE is dropped so that the warm-up run leaves .pyc files behind,
    as a normal ``pip install`` does: without them every start recompiles SQLAlchemy.
    """
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AUTOPACK_") and name not in ("ANTHROPIC_API_KEY", "PYTHONDONTWRITEBYTECODE")}
    env.update(COLUMNS="120", **(extra or {}))
    return env


def autopack_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "autopack", *args]


def run_once(argv: Sequence[str], cwd: Path, env: dict[str, str],
             ok_codes: tuple[int, ...] = (0,)) -> tuple[float, float, int]:
    """(wall s, cpu s, max RSS KiB) of one run; raises CommandFailed on an unexpected exit code."""
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code not in ok_codes:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip()[-500:]
            raise CommandFailed(f"{' '.join(argv[3:])} exited {code}: {message}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def time_process(argv: Sequence[str], cwd: Path, env: dict[str, str], repeats: int = 5,
                 ok_codes: tuple[int, ...] = (0,)) -> ProcessTiming:
    """Run ``argv`` once to warm caches, then ``repeats`` times, timing each run."""
    run_once(argv, cwd, env, ok_codes)
    samples = [run_once(argv, cwd, env, ok_codes) for _ in range(repeats)]
    return ProcessTiming(list(argv), [s[0] for s in samples], [s[1] for s in samples],
                         max(s[2] for s in samples))
