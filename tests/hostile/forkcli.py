"""The real `autopack` CLI in a forked process: a separate pid and session, killable, ~10x faster to start.

``python -m autopack`` spends ~1 s importing anthropic and SQLAlchemy. The battery runs
hundreds of commands, so it imports them once in the pytest process and forks a child
per command (a zygote, as Android and preforking servers do). The child is a real
process: its own session (so ``killpg`` reaches it and the git it runs, but not the test
suite it starts, which autopack puts in a session of its own), its own file descriptors
(stdout/stderr to files the parent creates before the fork, stdin from /dev/null), the
given environment and cwd, and it runs ``autopack.cli.main`` exactly as the console
script does. ``prepare`` runs in the child first: fault injection (a kill point, a
resource limit) without touching autopack.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

# Imported here, once, so forked children start warm.
import anthropic  # noqa: F401
import autopack.cli  # noqa: F401
import autopack.drain  # noqa: F401
import autopack.launch  # noqa: F401
import autopack.llm.builder  # noqa: F401
import autopack.llm.client  # noqa: F401
import autopack.llm.doctor  # noqa: F401
import autopack.runner  # noqa: F401
import autopack.store  # noqa: F401
import autopack.store.drains  # noqa: F401
import autopack.store.queries  # noqa: F401
import autopack.workspace  # noqa: F401

EXIT_CRASHED = 70  # a bug: past autopack's error boundary (a traceback in stderr), or reported by it (a crash log)
CRASH_LOG = re.compile(r"the traceback is in (\S+); please report it")


@dataclass(frozen=True)
class Finished:
    """How a forked command ended: an exit code, or the signal that killed it."""

    code: int | None
    signal: int | None
    stdout: str
    stderr: str
    crash_log: str = ""  # the traceback autopack's error boundary saved, when it reported a bug

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    @property
    def output(self) -> str:
        """Everything the command said, the crash log's traceback included (so checks for one see it)."""
        return self.stdout + self.stderr + self.crash_log


class Forked:
    """A running forked command."""

    def __init__(self, pid: int, stdout: Path, stderr: Path):
        self.pid, self._stdout, self._stderr = pid, stdout, stderr
        self._status: int | None = None

    def poll(self) -> bool:
        """True once the child has exited (and was reaped)."""
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = status
        return self._status is not None

    def kill(self) -> None:
        """SIGKILL the child, then its session's process group (the git it runs; not the suite's session).

        The child first: once it is dying it cannot start anything, so the group kill that
        follows reaches every process it started, even if it had only just called ``setsid``.
        """
        for send in (os.kill, os.killpg):
            try:
                send(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # no group yet: the child had not reached setsid
                pass

    def wait(self) -> Finished:
        if self._status is None:
            self._status = os.waitpid(self.pid, 0)[1]
        code = os.waitstatus_to_exitcode(self._status)
        stderr = self._stderr.read_text(errors="replace")
        crashed = CRASH_LOG.search(stderr) if code == EXIT_CRASHED else None
        return Finished(code if code >= 0 else None, -code if code < 0 else None,
                        self._stdout.read_text(errors="replace"), stderr,
                        Path(crashed.group(1)).read_text(errors="replace") if crashed else "")


_counter = [0]


def spawn(args: Sequence[str], *, cwd: Path, env: Mapping[str, str], logs: Path,
          prepare: Callable[[], None] | None = None) -> Forked:
    """Start ``autopack ARGS`` in a forked child; its stdout/stderr go to files under ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    _counter[0] += 1
    stdout, stderr = logs / f"cmd{_counter[0]:04d}.out", logs / f"cmd{_counter[0]:04d}.err"
    sys.stdout.flush()
    sys.stderr.flush()
    # Opened here, not in the child: a SIGKILL that lands before the child runs still leaves
    # both files for ``wait`` to read.
    streams = ((os.open(os.devnull, os.O_RDONLY), 0),
               (os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1),
               (os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2))
    gc.freeze()  # the parent's objects: the child's collections skip them (no copy-on-write storm)
    pid = os.fork()
    if pid:
        gc.unfreeze()
        for fd, _ in streams:
            os.close(fd)
        return Forked(pid, stdout, stderr)
    code = EXIT_CRASHED
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd, target in streams:
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, encoding="utf-8")
        sys.stderr = open(2, "w", closefd=False, encoding="utf-8")
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = ["autopack", *args]
        if prepare is not None:
            prepare()
        try:
            autopack.cli.main(list(args))
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            gc.collect()  # what interpreter shutdown does: unreachable stores close their SQLite files
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run(args: Sequence[str], *, cwd: Path, env: Mapping[str, str], logs: Path,
        prepare: Callable[[], None] | None = None) -> Finished:
    """``spawn`` and wait."""
    return spawn(args, cwd=cwd, env=env, logs=logs, prepare=prepare).wait()


class PeakRss:
    """How much a forked child's peak resident set (VmHWM) grew past what it inherited, in KiB."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkstemp(prefix="autopack-rss-")[1])

    def arm(self) -> None:
        import autopack.cli as cli

        path, original, start = self.path, cli.main, _status_kib("VmRSS")

        def main(argv: list[str] | None = None) -> None:
            try:
                original(argv)
            finally:
                path.write_text(str(_status_kib("VmHWM") - start))

        cli.main = main

    def read(self) -> int:
        """The growth; an error if the child never got to measure it."""
        text = self.path.read_text().strip()
        self.path.unlink(missing_ok=True)
        assert text, "the forked autopack never wrote its peak RSS"
        return int(text)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0
