"""Every process of a test suite, whatever its session: found, killed and reaped; and a suite a killed autopack left.

The suite runs in a session and process group of its own, but a test can leave both
(``setsid``, a double fork into a new session), so a group kill is not enough. While a
suite runs, autopack is a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``): a suite
process whose parent exits is reparented to autopack instead of init. Every process the
suite started is then a descendant of its shell or of a child of autopack that lives in
another session, and ``stop_suite`` kills them all, walking /proc again until none is left
alive (a process may fork while it is killed). It reaps exactly the ones reparented to
autopack, never ``waitpid(-1)``, which would steal the exit status of git or of the
suite's shell. Without /proc (not Linux) only the process group is killed.

SIGKILL (or the OOM killer) on autopack gives it no chance to do that, and the suite would
run on in the worktree, where it could write into the next attempt. So while a suite runs,
its shell and its environment marker (an entry every process of the suite inherits) are
recorded in ``SUITE_PIDFILE`` beside its log. The next suite of that run, and the next
executor of that run, stop what is left first: ``stop_orphaned_suite``.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from autopack.text import to_json

SUITE_PIDFILE = "suite.pid"
STOP_WITHIN_S = 5.0  # a process still alive this long after SIGKILL is stuck in the kernel: left alone
_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37


@dataclass(frozen=True)
class Suite:
    """A test suite's shell (leader of its own session and process group) and its marker."""

    leader: int
    started: int  # the leader's start time in clock ticks since boot; -1 when unknown
    marker: bytes  # an environment entry ("NAME=value") every process of the suite inherits

    @classmethod
    def started_as(cls, leader: int, marker: str) -> Suite:
        found = _stat(leader)
        return cls(leader, found.started if found else -1, marker.encode())


class _Process(NamedTuple):
    ppid: int
    pgid: int
    sid: int
    started: int
    dead: bool  # a zombie, or on its way out


@contextmanager
def subreaper() -> Iterator[None]:
    """While the block runs, orphans of this process's descendants are reparented to it (Linux).

    Only while a suite runs: orphans of everything else (git's detached gc, a caller's own
    children) still go to init and are never left here as zombies.
    """
    prctl = _prctl()
    if prctl is None:
        yield
        return
    import ctypes

    previous = ctypes.c_int(0)
    prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0)
    prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, previous.value, 0, 0, 0)


@functools.cache
def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def signal_suite(suite: Suite, signum: int) -> None:
    """Send ``signum`` once to every process of the running ``suite`` (SIGTERM: time to clean up)."""
    _signal_group(suite.leader, signum)
    table = _process_table()
    for pid in _with_descendants(table, _suite_roots(table, suite)) - _self_and_ancestors(table):
        if not table[pid].dead:
            try:
                exits = _send(pid, table[pid].started, signum)
            except PermissionError:
                continue
            if exits is not None:
                os.close(exits)


def stop_suite(suite: Suite) -> None:
    """SIGKILL every process of ``suite``, whose shell is this process's unreaped child (so its
    ids cannot have been reused), and reap the ones reparented here. The shell itself is left
    to its ``Popen``. Returns once none is alive (or after ``STOP_WITHIN_S``)."""
    _signal_group(suite.leader, signal.SIGKILL)
    _kill_until_gone(lambda table: _suite_roots(table, suite), spare=suite.leader)


def _suite_roots(table: dict[int, _Process], suite: Suite) -> set[int]:
    """The suite's shell, its group and session, and what was reparented here from the suite:
    a child of this process in another session, started since the suite (autopack starts
    nothing else in another session while a suite runs)."""
    me, my_session = os.getpid(), os.getsid(0)
    return {pid for pid, p in table.items()
            if suite.leader in (pid, p.pgid, p.sid)
            or (p.ppid == me and p.sid != my_session and p.started >= suite.started)}


def stop_orphaned_suite(directory: Path) -> bool:
    """SIGKILL what is left of the suite a killed autopack recorded in ``directory/SUITE_PIDFILE``.

    Processes are killed only when they are provably the suite's: its group and session
    while the leader is the recorded process (same start time), every process whose
    environment holds the recorded marker (wherever ``setsid`` or a reparenting took it),
    and their descendants. Linux only (/proc); returns True when something was killed.
    """
    pidfile = Path(directory) / SUITE_PIDFILE
    try:
        record = json.loads(pidfile.read_text())
        suite = Suite(int(record["pgid"]), int(record["started"]), str(record["marker"]).encode())
    except (OSError, ValueError, KeyError, TypeError):
        return False

    def roots(table: dict[int, _Process]) -> set[int]:
        leader = table.get(suite.leader)
        same_leader = leader is not None and leader.started == suite.started
        return {pid for pid, p in table.items()
                if (same_leader and suite.leader in (pid, p.pgid, p.sid)) or _carries(pid, suite.marker)}

    found = _stat(suite.leader)
    if found is not None and found.started == suite.started:
        _signal_group(suite.leader, signal.SIGKILL)
    killed = _kill_until_gone(roots)
    pidfile.unlink(missing_ok=True)
    return killed


def _kill_until_gone(find_roots: Callable[[dict[int, _Process]], set[int]], spare: int | None = None) -> bool:
    """SIGKILL the processes ``find_roots`` finds and their descendants, again until none is
    alive; reap those that are this process's children, except ``spare``. True when any was killed."""
    me = os.getpid()
    give_up = time.monotonic() + STOP_WITHIN_S
    untouchable: set[int] = set()  # not ours to signal (another user's, e.g. through sudo)
    killed = False
    while True:
        table = _process_table()
        members = _with_descendants(table, find_roots(table)) - _self_and_ancestors(table) - untouchable
        for pid in members:
            if table[pid].dead and table[pid].ppid == me and pid != spare:
                _reap(pid)
        alive = [pid for pid in members if not table[pid].dead]
        # A child of a process that has just died is being reparented (here, if it was ours).
        orphaned = any(table[pid].ppid in members and table[table[pid].ppid].dead for pid in members)
        if not (alive or orphaned) or time.monotonic() > give_up:
            return killed
        exits = []
        for pid in alive:
            try:
                exits.append(_send(pid, table[pid].started, signal.SIGKILL))
                killed = True
            except PermissionError:
                untouchable.add(pid)
        _wait_for_exits([fd for fd in exits if fd is not None], give_up)


def _send(pid: int, started: int, signum: int) -> int | None:
    """Signal ``pid`` if it is still the process that started at ``started``. Returns a pidfd
    that turns readable when it exits, or None (gone, or signalled by pid without a pidfd)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError):  # no pidfd (old kernel, no descriptor left): by pid, checked first
        if _start_ticks(pid) == started:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return None
    try:
        if _start_ticks(pid) == started:  # the pidfd pins this process: its pid cannot be reused now
            signal.pidfd_send_signal(pidfd, signum)
            return pidfd
    except ProcessLookupError:
        pass
    except BaseException:
        os.close(pidfd)
        raise
    os.close(pidfd)
    return None


def _wait_for_exits(pidfds: list[int], deadline: float) -> None:
    """Wait until every pidfd is readable (its process exited) or ``deadline``; close them."""
    try:
        if not pidfds:
            time.sleep(0.01)  # signalled by pid: nothing to wait on, look again shortly
            return
        poller = select.poll()
        for pidfd in pidfds:
            poller.register(pidfd, select.POLLIN)
        pending = set(pidfds)
        while pending and (remaining := deadline - time.monotonic()) > 0:
            for pidfd, _ in poller.poll(remaining * 1000):
                poller.unregister(pidfd)
                pending.discard(pidfd)
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _process_table() -> dict[int, _Process]:
    """Every process /proc shows (empty without /proc)."""
    table: dict[int, _Process] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if name.isdigit() and (found := _stat(int(name))) is not None:
            table[int(name)] = found
    return table


def _stat(pid: int) -> _Process | None:
    """/proc/<pid>/stat: fields 3 (state), 4 (ppid), 5 (pgrp), 6 (session) and 22 (start time)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)  # raw: this runs for every process, twice a suite
        try:
            fields = os.read(fd, 4096).rsplit(b")", 1)[1].split()
        finally:
            os.close(fd)
        return _Process(int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]), fields[0] in (b"Z", b"X"))
    except (OSError, IndexError, ValueError):
        return None


def _start_ticks(pid: int) -> int | None:
    found = _stat(pid)
    return found.started if found else None


def _with_descendants(table: dict[int, _Process], roots: Iterable[int]) -> set[int]:
    children: defaultdict[int, list[int]] = defaultdict(list)
    for pid, process in table.items():
        children[process.ppid].append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children[pid])
    return found


def _self_and_ancestors(table: dict[int, _Process]) -> set[int]:
    """Never signalled, whatever they carry (autopack started from inside an old suite)."""
    chain, pid = set(), os.getpid()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        pid = table[pid].ppid if pid in table else 0
    return chain


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return marker in environ.read().split(b"\0")
    except OSError:
        return False


def record_suite(pidfile: Path, suite: Suite) -> None:
    """Best effort: without the record only a SIGKILLed autopack's orphan goes unnoticed."""
    try:
        pidfile.write_text(to_json({"pgid": suite.leader, "started": suite.started,
                                    "marker": suite.marker.decode()}))
    except OSError:
        pass


def _signal_group(pgid: int, signum: int) -> None:
    """Signal a process group; one that is gone (or not ours) is ignored."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
