"""Test suites left running by a killed autopack: recorded while they run, stopped before the next.

A suite runs in its own session, so SIGKILL (or the OOM killer) on autopack leaves it
running in the worktree, where it could write into the next attempt. While a suite runs,
its process group is recorded in ``SUITE_PIDFILE`` beside its log; the next suite run of
that run, and the next executor of that run, stop what is left of it first.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from autopack.text import to_json

SUITE_PIDFILE = "suite.pid"


def stop_orphaned_suite(directory: Path) -> bool:
    """SIGKILL the suite a killed autopack left running, recorded in ``directory/SUITE_PIDFILE``.

    SIGKILL gives autopack no chance to stop the suite's process group (its own session),
    so it would run on in the worktree and could write into the next attempt. Processes of
    that group are killed only when they are provably the suite's: the group leader with its
    recorded start time, or a member whose environment holds the recorded JUnit path. Linux
    only (/proc); returns True when something was killed.
    """
    pidfile = Path(directory) / SUITE_PIDFILE
    try:
        record = json.loads(pidfile.read_text())
        pgid, started, marker = int(record["pgid"]), int(record["started"]), str(record["marker"]).encode()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    killed = False
    if _start_ticks(pgid) == started:
        signal_group(pgid, signal.SIGKILL)
        killed = True
    else:
        for pid in _group_members(pgid):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                killed = _signal(pid, signal.SIGKILL) or killed
    pidfile.unlink(missing_ok=True)
    return killed


def _start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                members.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return members


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def record_suite(pidfile: Path, pgid: int, marker: str) -> None:
    """Best effort: without the record only a SIGKILLed autopack's orphan goes unnoticed."""
    try:
        pidfile.write_text(to_json({"pgid": pgid, "started": _start_ticks(pgid) or -1, "marker": marker}))
    except OSError:
        pass


def signal_group(pgid: int, signum: int) -> None:
    """Signal a process group; one that is gone (or not ours) is ignored."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
