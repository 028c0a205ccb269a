"""The per-run lock (one executor per run) and the executor heartbeat.

On SQLite the lock is a portalocker (flock) lock on ``<state dir>/locks/<run-id>.lock``:
the OS releases it when the holder dies, even on SIGKILL. Test subprocesses are started
with ``close_fds=True`` so they never inherit it. On PostgreSQL it is a session advisory
lock on a connection of its own (``PgRunLock``): the server releases it when that
connection ends.
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


class PgRunLock:
    """The run's lock on PostgreSQL: ``pg_try_advisory_lock`` held by a dedicated connection (never the
    pool's: a session lock outlives the pooled connection's checkout), named ``autopack pid N on HOST``.

    The server frees it when the holder's connection drops: at once when the process dies, after
    the keepalives when its host goes silent, and after ``IDLE_SESSION_S`` when the process hangs
    (a thread pings every ``PING_S`` while it lives)."""

    PING_S = 10
    IDLE_SESSION_S = 60

    def __init__(self, url: Any, run_id: str):
        self.url = url
        self.run_id = run_id
        self._conn: Any = None
        self._stop = threading.Event()
        self._pinger: threading.Thread | None = None

    @property
    def key(self) -> int:
        from autopack.store.pg_engine import advisory_key

        return advisory_key(f"autopack run {self.run_id}")

    def acquire(self) -> None:
        """Take the lock or raise Busy naming the holder (pid and host, from pg_stat_activity)."""
        from autopack.store.pg_connect import connect, translate_pg_errors

        conn = connect(self.url, autocommit=True, options=f"-c idle_session_timeout={self.IDLE_SESSION_S}s")
        try:
            with translate_pg_errors(self.url):
                taken = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
                holder = None if taken else self._holder(conn)
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            raise Busy(f"run '{self.run_id}' is being executed by {holder}; try again later")
        self._conn = conn
        self._stop.clear()
        self._pinger = threading.Thread(target=self._ping, name="autopack-lock-ping", daemon=True)
        self._pinger.start()

    def _holder(self, conn: Any) -> str:
        key = self.key & 0xFFFF_FFFF_FFFF_FFFF
        row = conn.execute(
            "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE "
            "datname = current_database()) AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
            "AND l.objsubid = 1 LIMIT 1", (key >> 32, key & 0xFFFF_FFFF)).fetchone()
        if row is None:
            return "another process"
        name, since = row
        who = name.removeprefix("autopack ") if name.startswith("autopack pid ") else f"'{name}'"
        return f"{who} (since {since.isoformat()})"

    def _ping(self) -> None:
        while not self._stop.wait(self.PING_S):
            try:
                self._conn.execute("SELECT 1")
            except Exception:  # the connection is gone, and the lock with it; the run's writes go on unfenced
                return

    def release(self) -> None:
        if self._conn is not None:
            self._stop.set()
            if self._pinger is not None:
                self._pinger.join(timeout=5)
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            except Exception:
                pass  # a lost connection: the server has released the lock already
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "PgRunLock":
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
