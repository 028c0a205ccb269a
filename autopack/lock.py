"""The per-run lock (one executor per run) and the executor heartbeat.

The lock is a portalocker (flock) lock on ``<state dir>/locks/<run-id>.lock``: the OS
releases it when the holder dies, even on SIGKILL. Test subprocesses are started with
``close_fds=True`` so they never inherit it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import portalocker

from autopack.errors import Busy, writing
from autopack.text import to_json


class RunLock:
    """An exclusive, non-blocking lock on one run; the file names the holder."""

    def __init__(self, lock_dir: Path, run_id: str):
        self.run_id = run_id
        self.path = lock_dir / f"{run_id}.lock"
        self._file: Any = None

    def acquire(self) -> None:
        """Take the lock or raise Busy naming the holder's pid and host."""
        with writing(self.path, "the run's lock file"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+", encoding="utf-8")
        try:
            portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        except portalocker.exceptions.LockException:
            handle.seek(0)
            holder = _holder_text(handle.read())
            handle.close()
            raise Busy(f"run '{self.run_id}' is being executed by {holder}; try again later") from None
        handle.seek(0)
        handle.truncate()
        handle.write(to_json({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now(timezone.utc).isoformat()}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            portalocker.unlock(self._file)
            self._file.close()
            self._file = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder_text(raw: str) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


class Heartbeat:
    """A daemon thread calling ``beat()`` every ``interval_s`` until stopped."""

    def __init__(self, beat: Callable[[], None], interval_s: float):
        self._beat = beat
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="autopack-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception:  # a missed beat only shortens the lease; the next one retries
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
