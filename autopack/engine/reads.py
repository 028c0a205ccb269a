"""Reading the project for a builder: files shown up front, and the agent's list, read and search tools.

Reads are allowed anywhere in the project except ``.git/``, autopack's state and through a
symlink that leaves the project. Every result is capped and depends only on the tree: listings
are sorted, searches go file by file in path order, and nothing reports a time or a duration.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Callable, Iterator, Sequence

from autopack.edits import check_path

PROTECTED_PATHS = (".git", ".autopack")
_SKIPPED_DIRS = frozenset({".git", ".autopack", "__pycache__", ".pytest_cache", ".mypy_cache",
                           ".ruff_cache", ".venv", "node_modules"})
SEARCH_FILE_MAX_BYTES = 2_000_000  # larger files are not searched (said in the result)
READ_FILE_MAX_BYTES = 10_000_000  # larger files are refused by read_file
SHOWN_LINE_CHARS = 300  # a matching line longer than this is cut in the result


class Refused(Exception):
    """A tool call that cannot be served; its message goes back to the model as an error result."""


@dataclass(frozen=True)
class ReadLimits:
    read_max_lines: int = 400
    read_max_bytes: int = 40_000
    list_max_entries: int = 500
    search_max_matches: int = 100
    search_timeout_s: float = 5.0


class ProjectReader:
    """list_files, read_file and search over the project root of an attempt's worktree."""

    def __init__(self, root: Path, files: Callable[[], list[str]], limits: ReadLimits,
                 state_dir: Path | None = None):
        self.root = Path(os.path.realpath(root))
        self._list_files = files  # tracked and untracked-not-ignored files, relative to root (Workspace.project_files)
        self._files: list[str] | None = None
        self.limits = limits
        state = Path(os.path.realpath(state_dir)) if state_dir else None
        # autopack's state matters only where it lies inside the project (the worktrees usually lie inside it)
        self.state_dir = state if state is not None and state.is_relative_to(self.root) else None

    def files(self) -> list[str]:
        """The project's files, listed once until ``changed`` says the tree may have changed."""
        if self._files is None:
            self._files = self._list_files()
        return self._files

    def changed(self) -> None:
        """Files were written or deleted (an edit, a test run): list them again next time."""
        self._files = None

    def resolve(self, raw: object, *, directory: bool = False) -> tuple[str, Path]:
        """(normalised relative path, real path) of a path a tool was given; Refused when it may not be read."""
        if not isinstance(raw, str):
            raise Refused(f"path must be a string, got {type(raw).__name__}")
        if directory and raw.strip("/") in ("", "."):
            return "", self.root
        try:
            relative = check_path(raw.rstrip("/") if directory else raw, PROTECTED_PATHS)
        except ValueError as problem:
            raise Refused(f"path {raw!r}: {problem}") from None
        real = Path(os.path.realpath(self.root / relative))
        if not real.is_relative_to(self.root):
            raise Refused(f"path {raw!r} leads outside the project (through a symbolic link)")
        if self.state_dir is not None and real.is_relative_to(self.state_dir):
            raise Refused(f"path {raw!r} is autopack's state; it is not part of the project")
        if real != self.root:
            try:
                check_path(real.relative_to(self.root).as_posix(), PROTECTED_PATHS)
            except ValueError:
                raise Refused(f"path {raw!r} leads into .git or autopack's state (through a symbolic link)") from None
        return relative, real

    def listed(self, path: object = None, glob: object = None) -> list[str]:
        """The project's files under ``path`` (a directory or a file) matching ``glob``, sorted."""
        prefix = self.resolve(path, directory=True)[0] if path is not None else ""
        if glob is not None and (not isinstance(glob, str) or not glob):
            raise Refused("glob must be a non-empty string, e.g. '*.py' or 'tests/test_*.py'")
        found = []
        for name in self.files():
            if prefix and name != prefix and not name.startswith(prefix + "/"):
                continue
            if glob is not None and not (fnmatchcase(name, glob) or fnmatchcase(name.rsplit("/", 1)[-1], glob)):
                continue
            if any(part in PROTECTED_PATHS for part in name.split("/")) or not os.path.lexists(self.root / name):
                continue  # not on disk: deleted in this attempt
            found.append(name)
        return found

    def list_files(self, path: object = None, glob: object = None) -> str:
        names = self.listed(path, glob)
        shown = names[: self.limits.list_max_entries]
        lines = [f"{len(names)} file{'s' * (len(names) != 1)}"
                 + (f" under {path}" if path not in (None, "", ".") else "")
                 + (f" matching {glob}" if glob else "") + ":"]
        for name in shown:
            target = self.root / name
            if target.is_symlink():
                lines.append(f"{name} (symbolic link)")
            else:
                lines.append(f"{name} ({target.stat().st_size} bytes)")
        if len(names) > len(shown):
            lines.append(f"[{len(names) - len(shown)} more not listed; narrow it with path or glob]")
        return "\n".join(lines)

    def read_file(self, path: object, start_line: object = None, end_line: object = None) -> str:
        relative, real = self.resolve(path)
        if not real.is_file():
            raise Refused(f"{relative}: no such file" + ("" if not real.is_dir() else " (it is a directory; "
                                                           "list_files shows what is in it)"))
        start = _line_number(start_line, "start_line", 1)
        end = _line_number(end_line, "end_line", None)
        if end is not None and end < start:
            raise Refused(f"end_line {end} is before start_line {start}")
        if real.stat().st_size > READ_FILE_MAX_BYTES:
            raise Refused(f"{relative}: {real.stat().st_size} bytes, too large to read (the limit is "
                          f"{READ_FILE_MAX_BYTES}); search it instead")
        text = _text_of(real.read_bytes())
        if text is None:
            raise Refused(f"{relative}: a binary or non-UTF-8 file; it cannot be shown as text")
        lines = text.splitlines()
        if start > max(len(lines), 1):
            raise Refused(f"{relative} has {len(lines)} lines; start_line {start} is past its end")
        last = min(len(lines), end or len(lines), start - 1 + self.limits.read_max_lines)
        shown, size = [], 0
        for number in range(start, last + 1):
            line = f"{number:>6}\t{lines[number - 1]}"
            if shown and size + len(line) + 1 > self.limits.read_max_bytes:
                last = number - 1
                break
            shown.append(line)
            size += len(line) + 1
        header = f"{relative}: lines {start}-{last} of {len(lines)}" if lines else f"{relative}: empty file"
        more = f"\n[lines {last + 1}-{len(lines)} not shown; read on with start_line={last + 1}]" \
            if last < min(len(lines), end or len(lines)) else ""
        return "\n".join([header, *shown]) + more

    def search(self, pattern: object, path: object = None, glob: object = None) -> str:
        if not isinstance(pattern, str) or not pattern:
            raise Refused("pattern must be a non-empty string (a Python regular expression)")
        note = ""
        try:
            regex = re.compile(pattern)
        except re.error as problem:
            regex = re.compile(re.escape(pattern))
            note = f"(not a valid regular expression: {problem}; searched for it as literal text)\n"
        names = self.listed(path, glob)
        matches: list[str] = []
        skipped, more = 0, False
        try:
            with _deadline(self.limits.search_timeout_s) as expired:
                for name in names:
                    target = self.root / name
                    if target.is_symlink() or not target.is_file():
                        continue
                    if target.stat().st_size > SEARCH_FILE_MAX_BYTES:
                        skipped += 1
                        continue
                    text = _text_of(target.read_bytes())
                    if text is None:
                        continue
                    for number, line in enumerate(text.splitlines(), 1):
                        if regex.search(line):
                            if len(matches) == self.limits.search_max_matches:
                                more = True
                                break
                            shown = line if len(line) <= SHOWN_LINE_CHARS else line[:SHOWN_LINE_CHARS] + " [...]"
                            matches.append(f"{name}:{number}: {shown}")
                    if more:
                        break
                    expired()
        except _SearchTimeout:
            raise Refused(f"the search took longer than {self.limits.search_timeout_s:g} s and was stopped; "
                          "simplify the pattern (nested repetition such as (a+)+ backtracks) or narrow path/glob")
        where = f" in {len(names)} file{'s' * (len(names) != 1)}"
        lines = [f"{note}{len(matches)}{'+' if more else ''} match{'es' * (len(matches) != 1)}{where}:", *matches]
        if more:
            lines.append(f"[stopped at {len(matches)} matches; narrow the pattern, path or glob]")
        if skipped:
            lines.append(f"[{skipped} file(s) over {SEARCH_FILE_MAX_BYTES} bytes not searched]")
        return "\n".join(lines)


class _SearchTimeout(Exception):
    pass


@contextmanager
def _deadline(seconds: float) -> Iterator[Callable[[], None]]:
    """Yields a check that raises _SearchTimeout past ``seconds``; in the main thread an interval timer
    also interrupts a single regular-expression match that backtracks for too long (re checks signals)."""
    ends = time.monotonic() + seconds

    def expired() -> None:
        if time.monotonic() > ends:
            raise _SearchTimeout()

    if threading.current_thread() is not threading.main_thread():
        yield expired
        return

    def interrupt(signum, frame):
        raise _SearchTimeout()

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield expired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _line_number(value: object, name: str, default: int | None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Refused(f"{name} must be a line number (an integer >= 1), got {value!r}")
    return value


def _text_of(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def collect_files(root: Path, scope: Sequence[str] | None, context: Sequence[str], *,
                  max_bytes: int) -> tuple[dict[str, str], tuple[str, ...]]:
    """Existing UTF-8 text files named by scope (files and dir/ entries) and context, in path order.

    Each file is included while it fits in what is left of ``max_bytes``; the ones that do not
    fit are returned as omitted. Missing paths, binary files, symlinks leaving ``root``, and
    .git/.autopack/cache directories are skipped.
    """
    root = Path(root).resolve()
    candidates: set[str] = set()
    for entry in [*(scope or ()), *context]:
        candidates.update(_expand(root, entry))
    files: dict[str, str] = {}
    omitted: list[str] = []
    budget = max_bytes
    for path in sorted(candidates):
        try:
            data = (root / path).read_bytes()
        except OSError:
            continue
        text = _text_of(data)
        if text is None:
            continue
        if len(data) > budget:
            omitted.append(path)
            continue
        files[path] = text
        budget -= len(data)
    return files, tuple(omitted)


def covered(path: str, entries: Sequence[str]) -> bool:
    """Whether ``path`` is one of ``entries`` (files) or under one of them (``dir/``)."""
    return any(path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in entries)


def _expand(root: Path, entry: str) -> list[str]:
    """The readable regular files an entry names, as root-relative POSIX paths."""
    parts = [part for part in entry.split("/") if part not in ("", ".")]
    if ".." in parts or any(part in _SKIPPED_DIRS for part in parts):
        return []
    target = root.joinpath(*parts)
    if target.is_file():
        relative = _relative(root, target)
        return [relative] if relative else []
    if not target.is_dir():
        return []
    found = []
    for directory, subdirs, names in os.walk(target):
        subdirs[:] = [name for name in subdirs if name not in _SKIPPED_DIRS]
        for name in names:
            path = Path(directory, name)
            relative = _relative(root, path) if path.is_file() else None
            if relative:
                found.append(relative)
    return found


def _relative(root: Path, path: Path) -> str | None:
    """The POSIX path of ``path`` under ``root``, or None when it resolves outside (a symlink out)."""
    if not path.resolve().is_relative_to(root):
        return None
    return path.relative_to(root).as_posix()
