"""Run the project's test command safely and read per-test outcomes from JUnit XML.

The command runs in its own process group with a scrubbed environment, a timeout
and a capped log; the verdict comes from the JUnit XML it writes, never from the
exit code alone (see "Finalizer rules" in DESIGN.md).
"""

from __future__ import annotations

import glob
import os
import re
import selectors
import shlex
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from autopack.errors import AutopackError, UsageError

Outcome = Literal["passed", "failed", "error", "skipped"]

MAX_JUNIT_BYTES = 50 * 1024 * 1024
MESSAGE_CAP = 2000
TAIL_BYTES = 8192
NO_JUNIT = "no JUnit XML was written"
SECRET_PATTERNS = ("*_API_KEY", "*_TOKEN", "*SECRET*", "*PASSWORD*", "ANTHROPIC_*", "AUTOPACK_*")

_SEVERITY: dict[str, int] = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
_CHILD_OUTCOME = {"error": "error", "failure": "failed", "skipped": "skipped"}
_CONTROL_OPERATORS = {";", ";;", "&", "&&", "|", "||", "|&", "(", ")"}
_RUNNER_PREFIXES = (("uv", "run"), ("poetry", "run"), ("pdm", "run"))
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"(?:.*/)?python(?:\d+(?:\.\d+)*)?")


class JUnitError(AutopackError):
    """A JUnit XML report that cannot be read safely."""


@dataclass(frozen=True)
class TestOutcome:
    """One test's result as reported in JUnit XML."""

    __test__ = False  # not a pytest test class

    test_id: str
    outcome: Outcome
    file: str | None = None
    message: str = ""
    duration_s: float = 0.0
    collection_error: bool = False


@dataclass(frozen=True)
class TestReport:
    """What one run of the test command produced."""

    __test__ = False

    command: str
    exit_code: int | None
    timed_out: bool
    duration_s: float
    outcomes: tuple[TestOutcome, ...]
    output_tail: str
    output_bytes: int
    output_truncated: bool
    junit_error: str | None

    def by_id(self) -> dict[str, TestOutcome]:
        return {outcome.test_id: outcome for outcome in self.outcomes}

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("passed", "failed", "error", "skipped"), 0)
        for outcome in self.outcomes:
            counts[outcome.outcome] += 1
        counts["total"] = len(self.outcomes)
        return counts

    def collection_errors(self) -> list[str]:
        return [outcome.test_id for outcome in self.outcomes if outcome.collection_error]

    def to_dict(self, *, with_outcomes: bool = False) -> dict[str, Any]:
        """JSON-able summary with counts; per-test outcomes only when asked (they can be large)."""
        data = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "outcomes"}
        data["counts"] = self.counts()
        data["collection_errors"] = self.collection_errors()
        if with_outcomes:
            data["outcomes"] = [asdict(outcome) for outcome in self.outcomes]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TestReport:
        """Rebuild a report saved with ``to_dict(with_outcomes=True)`` (e.g. a cached baseline)."""
        values = {field.name: data[field.name] for field in fields(cls) if field.name != "outcomes"}
        return cls(**values, outcomes=tuple(TestOutcome(**item) for item in data.get("outcomes", ())))


def is_pytest(command: str) -> bool:
    """True when ``command`` is one plain pytest invocation that autopack can extend.

    Accepts ``pytest``, ``py.test``, ``.../pytest``, ``python[3[.x]] -m pytest``, optionally
    after ``VAR=value`` assignments and ``uv run`` / ``poetry run`` / ``pdm run``. Commands
    chained with ``;``, ``&&``, ``|`` etc. are not: arguments appended to them would land
    on the last command.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return False
    if any(token in _CONTROL_OPERATORS for token in tokens):
        return False
    while tokens and _ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    for prefix in _RUNNER_PREFIXES:
        if tuple(tokens[:2]) == prefix:
            tokens = tokens[2:]
            break
    if not tokens:
        return False
    program = tokens[0]
    if program in ("pytest", "py.test") or program.endswith(("/pytest", "/py.test")):
        return True
    if not _PYTHON.fullmatch(program):
        return False
    return tokens[1:3] == ["-m", "pytest"] or tokens[1:2] == ["-mpytest"]


def scrub_env(environ: Mapping[str, str], allow: Sequence[str] = ()) -> dict[str, str]:
    """A copy of ``environ`` without credentials (API keys, tokens, secrets, passwords,
    ANTHROPIC_* and AUTOPACK_*), except names matching an ``allow`` fnmatch pattern.
    Matching is case-insensitive."""

    def matches(name: str, patterns: Sequence[str]) -> bool:
        return any(fnmatchcase(name.upper(), pattern.upper()) for pattern in patterns)

    return {
        name: value
        for name, value in environ.items()
        if not matches(name, SECRET_PATTERNS) or matches(name, allow)
    }


def parse_junit(paths: Sequence[Path]) -> list[TestOutcome]:
    """Per-test outcomes from one or more JUnit XML files, merged by test id.

    A test reported more than once (pytest writes a teardown error as a second
    ``<testcase>``) keeps its worst outcome: error > failed > skipped > passed.
    Raises JUnitError for unreadable, oversized, malformed or DOCTYPE/ENTITY documents.
    """
    merged: dict[str, TestOutcome] = {}
    for path in paths:
        for outcome in _read_junit_file(Path(path)):
            previous = merged.get(outcome.test_id)
            merged[outcome.test_id] = outcome if previous is None else _merge(previous, outcome)
    return list(merged.values())


def pytest_node_id(outcome: TestOutcome) -> str | None:
    """The pytest node id to re-run ``outcome`` (from xunit1's ``file`` attribute).

    ``tests/test_a.py`` + ``tests.test_a.TestX`` + ``test_y[1-2]`` gives
    ``tests/test_a.py::TestX::test_y[1-2]``; None when it cannot be rebuilt.
    """
    if not outcome.file:
        return None
    file = outcome.file.replace("\\", "/")
    if outcome.collection_error:
        return file
    classname, separator, name = outcome.test_id.partition("::")
    if not separator:
        return None
    module = re.sub(r"\.py$", "", file).replace("/", ".")
    if classname == module:
        return f"{file}::{name}"
    if classname.startswith(module + "."):
        classes = classname[len(module) + 1 :].split(".")
        return "::".join([file, *classes, name])
    return None


def run_tests(
    command: str,
    cwd: Path,
    *,
    timeout_s: float,
    log_path: Path,
    junit_path: Path,
    junit_xml: str | None = None,
    select: Sequence[str] = (),
    output_cap_bytes: int = 2_000_000,
    env_allow: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> TestReport:
    """Run ``command`` in ``cwd`` and report per-test outcomes.

    pytest commands get ``--junitxml=<junit_path> -o junit_family=xunit1
    --continue-on-collection-errors`` (so one broken module does not hide every other
    outcome) and the ``select`` node ids appended; other commands must write JUnit XML to ``junit_xml``
    (a file, a directory of ``*.xml`` or a glob, relative to ``cwd``). Output goes to
    ``log_path``, capped at ``output_cap_bytes``. The whole process group is killed
    when the command exits, times out, or autopack is interrupted.
    """
    cwd = Path(cwd)
    if is_pytest(command):
        junit_file = Path(junit_path).resolve()
        junit_file.parent.mkdir(parents=True, exist_ok=True)
        extra = [f"--junitxml={junit_file}", "-o", "junit_family=xunit1",
                 "--continue-on-collection-errors", *select]
        command = " ".join([command, *(shlex.quote(arg) for arg in extra)])
        report_root, pattern = junit_file.parent, glob.escape(junit_file.name)
    else:
        if junit_xml is not None:
            _check_inside(junit_xml)
        report_root, pattern = cwd, junit_xml
    for stale in _junit_files(report_root, pattern):
        stale.unlink()

    variables = scrub_env(os.environ if env is None else env, env_allow)
    variables["PYTHONDONTWRITEBYTECODE"] = "1"
    result = _run_process(command, cwd, variables, timeout_s, Path(log_path), output_cap_bytes)

    reports = _junit_files(report_root, pattern)
    outcomes: list[TestOutcome] = []
    junit_error: str | None = None
    if not reports:
        junit_error = NO_JUNIT if pattern else f"{NO_JUNIT} (the test command is not pytest; set junit_xml)"
    else:
        try:
            outcomes = parse_junit(reports)
        except JUnitError as error:
            junit_error = str(error)
    return TestReport(command=command, outcomes=tuple(outcomes), junit_error=junit_error, **asdict(result))


# --- JUnit XML --------------------------------------------------------------------


def _read_junit_file(path: Path) -> list[TestOutcome]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_JUNIT_BYTES + 1)
    except OSError as error:
        raise JUnitError(f"cannot read JUnit XML {path}: {error.strerror}") from error
    if len(data) > MAX_JUNIT_BYTES:
        raise JUnitError(f"JUnit XML {path} is larger than the 50 MB limit")
    if re.search(rb"<!\s*(DOCTYPE|ENTITY)", data, re.IGNORECASE):
        raise JUnitError(f"malformed JUnit XML: {path} declares a DOCTYPE or ENTITY (refused)")
    root = _parse_xml(data, path)
    if root.tag not in ("testsuites", "testsuite"):
        raise JUnitError(
            f"malformed JUnit XML: {path} has root <{root.tag}>, expected <testsuites> or <testsuite>"
        )
    return [_testcase_outcome(case, path) for case in root.iter("testcase")]


def _parse_xml(data: bytes, path: Path) -> Any:
    """Parse with expat, refusing any DTD (also catches declarations in UTF-16 documents)."""
    from xml.etree.ElementTree import TreeBuilder
    from xml.parsers import expat

    def refuse(*_: object) -> None:
        raise JUnitError(f"malformed JUnit XML: {path} declares a DOCTYPE or ENTITY (refused)")

    builder = TreeBuilder()
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except expat.ExpatError as error:
        raise JUnitError(f"malformed JUnit XML: {path}: {error}") from error
    return builder.close()


def _testcase_outcome(case: Any, path: Path) -> TestOutcome:
    classname = case.get("classname") or ""
    name = case.get("name")
    if name is None:
        raise JUnitError(f"malformed JUnit XML: {path} has a <testcase> without a name")
    outcome: Outcome = "passed"
    detail = ""
    collection_error = False
    for child in case:
        kind = _CHILD_OUTCOME.get(child.tag)
        if kind is None or _SEVERITY[kind] <= _SEVERITY[outcome]:
            continue
        outcome = kind  # type: ignore[assignment]
        message = child.get("message") or ""
        detail = "\n".join(part for part in (message, (child.text or "").strip()) if part)
        collection_error = kind == "error" and not classname and message == "collection failure"
    try:
        duration = float(case.get("time") or 0.0)
    except ValueError:
        duration = 0.0
    return TestOutcome(
        test_id=f"{classname}::{name}" if classname else name,
        outcome=outcome,
        file=case.get("file"),
        message=_cap_text(detail),
        duration_s=duration,
        collection_error=collection_error,
    )


def _merge(first: TestOutcome, second: TestOutcome) -> TestOutcome:
    worse, other = (first, second)
    if _SEVERITY[second.outcome] > _SEVERITY[first.outcome]:
        worse, other = second, first
    message = "\n".join(text for text in (worse.message, other.message) if text)
    return TestOutcome(
        test_id=first.test_id,
        outcome=worse.outcome,
        file=first.file or second.file,
        message=_cap_text(message),
        duration_s=first.duration_s + second.duration_s,
        collection_error=first.collection_error or second.collection_error,
    )


def _cap_text(text: str, cap: int = MESSAGE_CAP) -> str:
    """Keep the head (the message) and the tail (where the traceback ends)."""
    if len(text) <= cap:
        return text
    marker = "\n[...]\n"
    head = cap // 4
    return text[:head] + marker + text[-(cap - head - len(marker)) :]


def _check_inside(junit_xml: str) -> None:
    if Path(junit_xml).is_absolute() or ".." in Path(junit_xml).parts:
        raise UsageError(f"junit_xml {junit_xml!r} must be relative to the repository, without '..'")


def _junit_files(root: Path, pattern: str | None) -> list[Path]:
    """The files ``pattern`` names under ``root``: a file, a directory of *.xml, or a glob."""
    if not pattern:
        return []
    target = root / pattern
    if target.is_dir():
        return sorted(path for path in target.glob("*.xml") if path.is_file())
    if glob.has_magic(pattern):
        matches = glob.glob(os.path.join(glob.escape(str(root)), pattern), recursive=True)
        return sorted(Path(path) for path in matches if Path(path).is_file())
    return [target] if target.is_file() else []


# --- the process ------------------------------------------------------------------


@dataclass(frozen=True)
class _ProcessResult:
    exit_code: int | None
    timed_out: bool
    duration_s: float
    output_tail: str
    output_bytes: int
    output_truncated: bool


class _OutputSink:
    """Writes output to the log up to a cap, counts it all, keeps the last bytes."""

    def __init__(self, log_file: Any, cap: int):
        self.log_file = log_file
        self.cap = cap
        self.written = 0
        self.total = 0
        self.tail = bytearray()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - self.written
        if room > 0:
            part = chunk[:room]
            self.log_file.write(part)
            self.written += len(part)
        self.tail += chunk
        if len(self.tail) > TAIL_BYTES:
            del self.tail[:-TAIL_BYTES]

    def finish(self) -> None:
        if self.total > self.cap:
            note = f"\n[autopack: output truncated after {self.cap} bytes; {self.total} bytes in all]\n"
            self.log_file.write(note.encode())


def _run_process(
    command: str, cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path, cap: int
) -> _ProcessResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        sink = _OutputSink(log_file, cap)
        process = subprocess.Popen(
            ["/bin/sh", "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        try:
            timed_out = _pump(process, sink, started + timeout_s)
            if timed_out:
                _signal_group(process.pid, signal.SIGTERM)
                _wait_for_exit(process.pid, time.monotonic() + 2.0)
            # Still unreaped, so the group id cannot have been reused: kill stray children.
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            duration = time.monotonic() - started
            _drain(process.stdout.fileno(), sink)
        except BaseException:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            process.stdout.close()
            sink.finish()
    return _ProcessResult(
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        duration_s=duration,
        output_tail=bytes(sink.tail).decode("utf-8", errors="replace"),
        output_bytes=sink.total,
        output_truncated=sink.total > cap,
    )


def _pump(process: subprocess.Popen[bytes], sink: _OutputSink, deadline: float) -> bool:
    """Stream output until the shell exits; True when the deadline came first."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    pipe_open = True
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not _has_exited(process.pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if not pipe_open:
                time.sleep(min(remaining, 0.05))
            elif selector.select(min(remaining, 0.2)):
                chunk = os.read(fd, 65536)
                if chunk:
                    sink.write(chunk)
                else:
                    pipe_open = False
                    selector.unregister(fd)
    return False


def _drain(fd: int, sink: _OutputSink) -> None:
    """Read what is left in the pipe; give up after 2 s if an escaped process keeps it open."""
    give_up = time.monotonic() + 2.0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < give_up and selector.select(0.2):
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            sink.write(chunk)


def _has_exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_for_exit(pid: int, deadline: float) -> None:
    while not _has_exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass
