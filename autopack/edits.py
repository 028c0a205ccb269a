"""The builder's edits applied all-or-nothing (contract 2).

``apply_edits`` validates every operation against the path rules and the phase scope by
simulating the whole set in memory, and writes only when all of them are valid. Each file
is replaced atomically; a write that fails midway rolls back the files already written.
The tools' definitions and the shape check of their calls are in ``autopack.edit_tools``.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from autopack.edit_tools import (
    TOOL_DEFINITIONS,
    TOOL_NAMES,
    ApplyStats,
    EditError,
    EditOp,
    Rejected,
    check_op_fields,
    edit_label,
    edit_tool_definitions,
    parse_tool_uses,
)

__all__ = ["TOOL_DEFINITIONS", "TOOL_NAMES", "ApplyStats", "EditError", "EditOp", "apply_edits", "atomic_write",
           "check_path", "edit_tool_definitions", "parse_tool_uses"]

_DRIVE = re.compile(r"^[A-Za-z]:")

def _canonical(component: str) -> str:
    """Fold a name the way case-insensitive filesystems do ('.GIT', '.git.' are '.git')."""
    return component.rstrip(". ").lower() or component


def _normalise_path(raw: str, protected: frozenset[str]) -> str:
    """Check the textual path rules; return the path without '.' and empty components."""
    if not raw:
        raise Rejected("path is empty")
    if any(ord(char) < 32 or char == "\x7f" for char in raw):
        raise Rejected("path contains a NUL or control character")
    if any("\ud800" <= char <= "\udfff" for char in raw):
        raise Rejected("path is not valid UTF-8 text (it contains a lone surrogate)")
    if "\\" in raw:
        raise Rejected("path contains a backslash; use '/' as the separator")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise Rejected("path is absolute; give it relative to the project root")
    if raw.endswith("/"):
        raise Rejected("path ends with '/'; a file path is required")
    components = raw.split("/")
    if ".." in components:
        raise Rejected("path contains a '..' component")
    parts = [part for part in components if part not in ("", ".")]
    if not parts:
        raise Rejected("path names no file")
    for part in parts:
        if _canonical(part) in protected:
            raise Rejected(f"path enters protected '{part}'; autopack never writes there")
    return "/".join(parts)


def check_path(raw: str, protected: Sequence[str] = (".git", ".autopack")) -> str:
    """``raw`` normalised by the textual path rules every tool follows (relative POSIX, no '..', no
    protected component); ValueError saying what is wrong."""
    try:
        return _normalise_path(raw, frozenset(_canonical(name.strip("/")) for name in protected))
    except Rejected as problem:
        raise ValueError(str(problem)) from None


def _in_scope(path: str, scope: Sequence[str]) -> bool:
    """A scope entry is a file path, or a directory ending in '/' that covers everything under it."""
    for entry in scope:
        key = "/".join(part for part in entry.split("/") if part not in ("", "."))
        if entry.endswith("/") and (not key or path.startswith(key + "/")):
            return True
        if not entry.endswith("/") and path == key:
            return True
    return False


@dataclass(frozen=True)
class _Original:
    data: bytes | None  # None: the file did not exist
    mode: int | None


class _Simulation:
    """The edit set applied in memory, on top of what is on disk."""

    def __init__(self, root: Path, scope: Sequence[str] | None, protected: Sequence[str], max_file_bytes: int):
        self.root = root
        self.scope = scope
        self.protected = frozenset(_canonical(name.strip("/")) for name in protected)
        self.max_file_bytes = max_file_bytes
        self.name_max, self.path_max = _limit(root, "PC_NAME_MAX", 255), _limit(root, "PC_PATH_MAX", 4096)
        self.contents: dict[str, str | None] = {}  # None: deleted
        self.originals: dict[str, _Original] = {}
        self.directories: set[str] = set()  # directories implied by simulated writes

    def apply(self, op: EditOp) -> None:
        check_op_fields(op)
        path = _normalise_path(op.path, self.protected)
        self._check_length(path)
        self._check_scope(path)
        self._check_location(path)
        self._original(path)  # read before anything changes, for no-op detection and rollback
        if op.tool == "write_file":
            result: str | None = op.content
        elif op.tool == "edit_file":
            result = self._edited(path, op.old, op.new)
        else:
            if not self._exists(path):
                raise Rejected("file does not exist")
            result = None
        if result is not None:
            self._check_size(result)
            parts = path.split("/")
            self.directories.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
        self.contents[path] = result

    def changes(self) -> list[tuple[str, bytes | None, _Original]]:
        """(path, new bytes or None for delete, original) for every path whose content changes."""
        result = []
        for path, text in sorted(self.contents.items()):
            data = None if text is None else text.encode("utf-8")
            original = self._original(path)
            if data != original.data:
                result.append((path, data, original))
        return result

    def _check_length(self, path: str) -> None:
        """The file system's limits, with room for the temporary copy each write makes beside its file."""
        *directories, name = path.split("/")
        limits = [*((part, self.name_max) for part in directories), (name, self.name_max - _TEMP_EXTRA)]
        for part, limit in limits:
            if len(part.encode("utf-8")) > limit:
                raise Rejected(f"a name in the path is {len(part.encode('utf-8'))} bytes; names may have at "
                                f"most {limit} bytes here")
        size = len(os.fsencode(self.root / path))
        if size + _TEMP_EXTRA >= self.path_max:
            raise Rejected(f"the path is too long: {size} bytes with the worktree's path; at most "
                            f"{self.path_max - _TEMP_EXTRA - 1} fit here")

    def _check_scope(self, path: str) -> None:
        if self.scope is not None and not _in_scope(path, self.scope):
            raise Rejected(f"path is outside the phase scope ({', '.join(self.scope) or 'empty'})")

    def _check_location(self, path: str) -> None:
        """Refuse symlinks anywhere, files used as directories, and non-file targets."""
        parts = path.split("/")
        on_disk = True
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            is_target = depth == len(parts)
            if not is_target and self.contents.get(prefix) is not None:
                raise Rejected(f"parent '{prefix}' is a file")
            if is_target and prefix in self.directories:
                raise Rejected("path is a directory")
            if not on_disk:
                continue
            try:
                mode = os.lstat(self.root / prefix).st_mode
            except (FileNotFoundError, NotADirectoryError):
                on_disk = False
                continue
            except OSError as error:
                raise Rejected(f"cannot inspect '{prefix}': {error.strerror}") from None
            if stat.S_ISLNK(mode):
                raise Rejected(f"'{prefix}' is a symbolic link; autopack never follows links")
            if is_target and stat.S_ISDIR(mode):
                raise Rejected("path is a directory")
            if is_target and not stat.S_ISREG(mode):
                raise Rejected("path is not a regular file")
            if not is_target and stat.S_ISREG(mode) and prefix not in self.contents:
                raise Rejected(f"parent '{prefix}' is a file")
            if not is_target and not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise Rejected(f"parent '{prefix}' is not a directory")
        resolved = os.path.realpath(self.root / path)
        if os.path.commonpath([resolved, str(self.root)]) != str(self.root):
            raise Rejected("path resolves outside the project root")

    def _original(self, path: str) -> _Original:
        if path not in self.originals:
            target = self.root / path
            try:
                info = os.lstat(target)
            except (FileNotFoundError, NotADirectoryError):
                self.originals[path] = _Original(None, None)
            else:
                try:
                    data = target.read_bytes()
                except OSError as error:
                    raise Rejected(f"cannot read the existing file: {error.strerror}") from None
                self.originals[path] = _Original(data, stat.S_IMODE(info.st_mode))
        return self.originals[path]

    def _exists(self, path: str) -> bool:
        if path in self.contents:
            return self.contents[path] is not None
        return self._original(path).data is not None

    def _edited(self, path: str, old: str, new: str) -> str:
        if not old:
            raise Rejected("old text is empty; it must match exactly once")
        if path in self.contents:
            current = self.contents[path]
        else:
            data = self._original(path).data
            try:
                current = None if data is None else data.decode("utf-8")
            except UnicodeDecodeError:
                raise Rejected("the file is not UTF-8 text; replace it with write_file") from None
        if current is None:
            raise Rejected("file does not exist; create it with write_file")
        count = _count_occurrences(current, old)
        if count != 1:
            raise Rejected(f"old text matches {count} times; it must match exactly once")
        return current.replace(old, new, 1)

    def _check_size(self, text: str) -> None:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise Rejected("content is not valid UTF-8 text (it contains a lone surrogate)") from None
        if size > self.max_file_bytes:
            raise Rejected(f"content is {size} bytes, more than the {self.max_file_bytes}-byte limit")


def _count_occurrences(text: str, needle: str) -> int:
    """Count occurrences, overlapping ones included (each is an ambiguous match)."""
    count, start = 0, text.find(needle)
    while start != -1:
        count += 1
        start = text.find(needle, start + 1)
    return count


def apply_edits(
    root: Path,
    ops: list[EditOp],
    scope: Sequence[str] | None,
    protected: Sequence[str] = (".git", ".autopack"),
    max_file_bytes: int = 5_000_000,
) -> ApplyStats:
    """Validate every operation, then write them all or, on any problem, nothing.

    ``scope`` entries are files (``calc/ops.py``) or directories ending in ``/``;
    ``None`` allows any path inside ``root``. Raises EditError listing every problem.
    """
    real_root = Path(os.path.realpath(root))
    if not real_root.is_dir():
        raise EditError([f"project root {root} is not a directory"])
    simulation = _Simulation(real_root, scope, protected, max_file_bytes)
    reasons = []
    for index, op in enumerate(ops, 1):
        try:
            simulation.apply(op)
        except Rejected as problem:
            reasons.append(f"{edit_label(index, op.tool, op.path)}: {problem}")
    if reasons:
        raise EditError(reasons)
    changes = simulation.changes()
    _write_changes(real_root, changes)
    return ApplyStats(
        operations_parsed=len(ops),
        operations_applied=len(ops),
        files_touched=tuple(path for path, _, _ in changes),
        bytes_written=sum(len(data) for _, data, _ in changes if data is not None),
    )


def _write_changes(root: Path, changes: list[tuple[str, bytes | None, _Original]]) -> None:
    """Deletions first (a deleted file may become a directory), then writes; roll back on failure."""
    journal = _Journal(root)
    current = ""
    try:
        for path, data, original in sorted(changes, key=lambda change: change[1] is not None):
            current = path
            if data is None:
                journal.delete(path, original)
            else:
                journal.write(path, data, original)
    except BaseException as error:
        leftovers = journal.rollback()
        if not isinstance(error, OSError):
            raise
        outcome = (
            f"rollback also failed: {'; '.join(leftovers)}"
            if leftovers
            else f"the {len(journal.done)} file change(s) already made were undone"
        )
        raise EditError([f"applying the edit to {current} failed: {error.strerror or error}; {outcome}"]) from error


class _Journal:
    """Writes and deletes files, remembering how to undo them."""

    def __init__(self, root: Path):
        self.root = root
        self.done: list[tuple[str, _Original]] = []
        self.created_directories: list[Path] = []

    def delete(self, path: str, original: _Original) -> None:
        os.unlink(self.root / path)
        self.done.append((path, original))

    def write(self, path: str, data: bytes, original: _Original) -> None:
        target = self.root / path
        for directory in reversed(target.relative_to(self.root).parents[:-1]):
            absolute = self.root / directory
            if not absolute.is_dir():
                os.mkdir(absolute)
                self.created_directories.append(absolute)
        atomic_write(target, data, original.mode)
        self.done.append((path, original))

    def rollback(self) -> list[str]:
        """Undo everything done so far; return what could not be undone."""
        failures = []
        for path, original in reversed(self.done):
            if original.data is None:
                try:
                    os.unlink(self.root / path)
                except OSError as error:
                    failures.append(f"{path}: {error.strerror}")
        for directory in reversed(self.created_directories):
            try:
                os.rmdir(directory)
            except OSError as error:
                failures.append(f"{directory.relative_to(self.root)}: {error.strerror}")
        for path, original in reversed(self.done):
            if original.data is not None:
                try:
                    atomic_write(self.root / path, original.data, original.mode)
                except OSError as error:
                    failures.append(f"{path}: {error.strerror}")
        return failures


_TEMP_EXTRA = len(".." + secrets.token_hex(4) + ".autopack-tmp")  # atomic_write's temp name = file name + this


def _limit(root: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(root, name)
    except (OSError, ValueError):
        return default


def atomic_write(target: Path, data: bytes, mode: int | None) -> None:
    """Write via a temp file in the same directory and os.replace; keep ``mode`` if given."""
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.autopack-tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temp, flags, 0o666)  # new files get the umask's permissions
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
