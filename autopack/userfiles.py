"""Files a user names (plans, cassettes, settings, reports): opened so that none can hang autopack.

A FIFO with no writer blocks ``open()`` for reading forever, and one with no reader blocks
it for writing. ``read_regular`` refuses anything but a regular file: it checks with
``stat`` before opening, opens with ``O_NONBLOCK`` and checks the open file again (the
path may have been swapped in between), then reads. ``open_output`` opens an output
(a file, or a pipe such as ``/dev/stdout``) without waiting for a reader.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_OPEN_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotARegularFile(OSError):
    """The path names a directory, FIFO, socket or device where a regular file is needed."""


def read_regular(path: Path | str, max_bytes: int | None = None) -> bytes:
    """The content of the regular file at ``path`` (at most ``max_bytes + 1`` bytes when given).

    Raises FileNotFoundError and the other OSErrors of ``open``; IsADirectoryError for a
    directory; NotARegularFile (``strerror`` says what it is) for a FIFO, socket or device.
    """
    _require_regular(os.stat(path), path)
    descriptor = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    with os.fdopen(descriptor, "rb") as handle:
        _require_regular(os.fstat(descriptor), path)
        os.set_blocking(descriptor, True)
        return handle.read() if max_bytes is None else handle.read(max_bytes + 1)


def require_regular_or_absent(path: Path | str) -> None:
    """NotARegularFile unless ``path`` is a regular file or does not exist (e.g. a file to create)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    _require_regular(info, path)


def open_output(path: Path | str) -> BinaryIO:
    """``path`` opened for writing (created or truncated); a FIFO that no process reads is an
    OSError (ENXIO) at once, not a wait."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, 0o666)
    except OSError as error:
        if error.errno == errno.ENXIO:
            raise NotARegularFile(errno.ENXIO, "is a named pipe (FIFO) that no process is reading",
                                  str(path)) from None
        raise
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "wb")


def write_text_output(target: str, text: str) -> None:
    """``text`` (UTF-8) to the file ``target`` (created or replaced, see ``open_output``), or to
    stdout when ``target`` is ``-``; a file that cannot be written is an OSError."""
    if target == "-":
        import sys

        sys.stdout.write(text)
        return
    with open_output(target) as out:
        out.write(text.encode("utf-8"))


def _require_regular(info: os.stat_result, path: Path | str) -> None:
    if stat.S_ISREG(info.st_mode):
        return
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a regular file", str(path))
    kind = next((name for test, name in _KINDS if test(info.st_mode)), "an unknown kind of file")
    raise NotARegularFile(errno.EINVAL, f"is {kind}, not a regular file", str(path))
