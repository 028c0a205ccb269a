"""A test run's log and JUnit XML as the store keeps them, and as `autopack logs` reads them back.

The store keeps the log file's first ``STORED_LOG_BYTES`` and the JUnit XML when it is at most
``STORED_JUNIT_BYTES`` (a cut XML file is no use), zlib-compressed, so every machine sharing the
store can read them. The local files, on the machine that ran the tests, are the cache: read first
while they are still the ones recorded (the same size), and whole.

Both files sit in directories a test command may write to, so they are opened without following
a symlink and only when regular: a suite cannot have autopack copy another file into the store.
"""

from __future__ import annotations

import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

STORED_LOG_BYTES = 1024 * 1024
STORED_JUNIT_BYTES = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


@dataclass(frozen=True)
class StoredFiles:
    """What the store keeps of one test run's files (compressed); sizes are the local files' own."""

    log: bytes | None
    log_bytes: int
    junit: bytes | None
    junit_bytes: int


def files_to_store(log_path: Path | None, junit_path: Path | None) -> StoredFiles | None:
    """The copies to store of a finished test run's log and JUnit XML; None when it has neither."""
    log, log_bytes = read_own_file(log_path, STORED_LOG_BYTES)
    junit, junit_bytes = read_own_file(junit_path, STORED_JUNIT_BYTES)
    if junit is not None and junit_bytes > STORED_JUNIT_BYTES:
        junit = None
    if log is None and junit is None:
        return None
    return StoredFiles(_compressed(log), log_bytes, _compressed(junit), junit_bytes)


def read_own_file(path: Path | str | None, max_bytes: int | None = None) -> tuple[bytes | None, int]:
    """(the first ``max_bytes`` of the regular file at ``path``, its size); (None, 0) when there is
    no such file, or it is a symlink or anything but a regular file."""
    if path is None:
        return None, 0
    try:
        descriptor = os.open(path, _OPEN_FLAGS)
    except OSError:  # absent, a symlink (ELOOP), unreadable
        return None, 0
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            return None, 0
        os.set_blocking(descriptor, True)
        try:
            return (handle.read() if max_bytes is None else handle.read(max_bytes)), info.st_size
        except OSError:
            return None, 0


def stored_text(blob: bytes | None) -> str | None:
    """A stored copy as text (None: none stored)."""
    if blob is None:
        return None
    return zlib.decompress(bytes(blob)).decode("utf-8", errors="replace")


def _compressed(data: bytes | None) -> bytes | None:
    return None if data is None else zlib.compress(data, 6)
