"""Run the project's test command safely and read per-test outcomes from JUnit XML.

The command runs in its own session with a scrubbed environment, a timeout and a
capped log, and every process it starts is killed when it ends; the verdict comes from
the JUnit XML it writes (or, for ``go test -json`` and ``cargo test``, from its converted
output), never from the exit code alone (see "Finalizer rules" in DESIGN.md). Compile
and build failures are reported as collection errors. Parsing lives in ``autopack.junit``
and ``autopack.testoutput``; the suite's processes are found and killed in
``autopack.orphans``; the command's checks and its scrubbed environment are ``autopack.testcommand``.
"""

from __future__ import annotations

import glob
import os
import selectors
import shlex
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from autopack.errors import writing
from autopack.junit import (
    MAX_JUNIT_BYTES,
    MESSAGE_CAP,
    JUnitError,
    Outcome,
    TestOutcome,
    check_inside,
    junit_files,
    junit_document,
    merge_outcomes,
    merged_document,
    parse_junit,
)
from autopack.orphans import (SUITE_PIDFILE, Suite, record_suite, signal_suite, stop_orphaned_suite, stop_suite,
                              subreaper)
from autopack.testcommand import is_pytest, pytest_node_id, scrub_env
from autopack.testoutput import PYTEST_STOPPED, build_errors, convert_output, pytest_session_errors

if TYPE_CHECKING:
    from autopack.sandbox import Sandbox

__all__ = [
    "JUNIT_FILE_ENV", "MAX_JUNIT_BYTES", "MESSAGE_CAP", "NO_JUNIT", "JUnitError", "Outcome",
    "TestOutcome", "TestReport", "is_pytest", "parse_junit", "pytest_node_id", "run_tests", "scrub_env",
]

TAIL_BYTES = 8192
NO_JUNIT = "no JUnit XML was written"
JUNIT_FILE_ENV = "AUTOPACK_JUNIT_FILE"  # set for the command: where it may write its JUnit XML


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
    converter: str | None = None,
    ecosystem: str | None = None,
    sandbox: Sandbox | None = None,
) -> TestReport:
    """Run ``command`` in ``cwd`` and report per-test outcomes.

    Where the outcomes come from:

    - pytest commands get ``--junitxml=<junit_path> -o junit_family=xunit1
      --continue-on-collection-errors`` (so one broken module does not hide every other
      outcome) and the ``select`` node ids appended;
    - ``converter`` (``go-test-json`` or ``libtest``): the command's output is converted,
      and the outcomes are also written to ``junit_path`` as JUnit XML;
    - ``junit_xml``: a file, a directory of ``*.xml`` or a glob, relative to ``cwd``;
    - otherwise ``junit_path``, which the command finds in ``$AUTOPACK_JUNIT_FILE``.

    ``ecosystem`` (from ``toolchains.TestCommand``) turns that toolchain's compile/build
    failures in the output into collection errors, and selects the node JUnit rules. A pytest
    session that stopped before any test ran (exit code 2, 3 or 4 without results: a conftest
    that cannot be imported, a usage or configuration error, an internal error) is reported
    as collection errors carrying pytest's error lines, read from the log.
    Report files are deleted before the run, so a build that fails writes no stale
    results. Output goes to ``log_path``, capped at ``output_cap_bytes``. Every process
    the command started, whatever its session or process group, is killed when the command
    exits, times out, or autopack is interrupted (``autopack.orphans``). While it runs, it
    is recorded in ``SUITE_PIDFILE`` beside the log, so that a suite left running by a
    killed autopack is stopped before the next one starts (one suite at a time per log
    directory). With ``sandbox`` (``autopack.sandbox``) the command runs inside it, with the
    worktree and the report directory writable.
    """
    cwd = Path(cwd)
    junit_file = Path(junit_path).resolve()
    junit_file.parent.mkdir(parents=True, exist_ok=True)
    pytest = is_pytest(command)
    if pytest:
        extra = [f"--junitxml={junit_file}", "-o", "junit_family=xunit1",
                 "--continue-on-collection-errors", *select]
        command = " ".join([command, *(shlex.quote(arg) for arg in extra)])
    own_report = (junit_file.parent, glob.escape(junit_file.name))
    if junit_xml is not None and converter is None and not pytest:
        check_inside(junit_xml)
        report_root, pattern = cwd, junit_xml
    else:
        report_root, pattern = own_report
    for stale in {*junit_files(report_root, pattern), *junit_files(*own_report)}:
        stale.unlink()

    stop_orphaned_suite(Path(log_path).parent)
    variables = scrub_env(os.environ if env is None else env, env_allow)
    variables["PYTHONDONTWRITEBYTECODE"] = "1"
    variables[JUNIT_FILE_ENV] = str(junit_file)
    keep_output = converter is not None or ecosystem not in (None, "python", "custom")
    output_path = junit_file.with_suffix(".output") if keep_output else None
    prefix = sandbox.argv(cwd, variables, writable=[junit_file.parent]) if sandbox else []
    result = _run_process([*prefix, "/bin/sh", "-c", command], cwd, variables, timeout_s, Path(log_path),
                          output_cap_bytes, output_path)
    output = ""
    if output_path is not None:
        output = output_path.read_bytes().decode("utf-8", errors="replace")
        output_path.unlink()

    outcomes: list[TestOutcome] = []
    junit_error: str | None = None
    if converter is not None:
        outcomes = convert_output(converter, output, cwd)
        junit_file.write_bytes(junit_document(outcomes, suite=converter))
        if not outcomes:
            junit_error = f"no test results in the command's output (read as {converter})"
    else:
        reports = junit_files(report_root, pattern)
        if report_root is cwd and reports:  # the project's own reports: kept with autopack's
            _keep_copy(reports, junit_file)
        if not reports:
            junit_error = NO_JUNIT if junit_xml or pytest else (
                f"{NO_JUNIT} (the test command is not pytest; set junit_xml)")
        else:
            try:
                outcomes = parse_junit(reports, ecosystem=ecosystem, root=cwd)
            except JUnitError as error:
                junit_error = str(error)
        found = build_errors(ecosystem, output, cwd) if output and not result.timed_out else []
        if pytest and not outcomes and not result.timed_out and result.exit_code in PYTEST_STOPPED:
            text = Path(log_path).read_bytes()[:MAX_JUNIT_BYTES].decode("utf-8", errors="replace")
            found = pytest_session_errors(text, result.exit_code, cwd)
        if found:
            outcomes = merge_outcomes([*outcomes, *found])
            if not reports:
                junit_error = None
    return TestReport(command=command, outcomes=tuple(outcomes), junit_error=junit_error, **asdict(result))


def _keep_copy(reports: list[Path], junit_file: Path) -> None:
    """A copy of the project's JUnit file at autopack's own report path, where the store's copy is
    taken from (autopack.test_logs), or of its several files merged into one document; a symlink, or
    a file that is not regular, is not copied."""
    from autopack.test_logs import read_own_file

    data = read_own_file(reports[0])[0] if len(reports) == 1 else merged_document(reports)
    if data is not None:
        with writing(junit_file, "the test report"):
            junit_file.write_bytes(data)


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
    """Writes output to the log up to a cap, counts it all, keeps the last bytes, and
    optionally a full copy (up to MAX_JUNIT_BYTES) for converters and build-error scans."""

    def __init__(self, log_file: Any, cap: int, copy_file: Any = None):
        self.log_file = log_file
        self.cap = cap
        self.copy_file = copy_file
        self.written = 0
        self.total = 0
        self.tail = bytearray()

    def write(self, chunk: bytes) -> None:
        if self.copy_file is not None and self.total < MAX_JUNIT_BYTES:
            _put(self.copy_file, chunk[: MAX_JUNIT_BYTES - self.total])
        self.total += len(chunk)
        room = self.cap - self.written
        if room > 0:
            part = chunk[:room]
            _put(self.log_file, part)
            self.written += len(part)
        self.tail += chunk
        if len(self.tail) > TAIL_BYTES:
            del self.tail[:-TAIL_BYTES]

    def finish(self) -> None:
        if self.total > self.cap:
            note = f"\n[autopack: output truncated after {self.cap} bytes; {self.total} bytes in all]\n"
            _put(self.log_file, note.encode())


def _put(file: Any, data: bytes) -> None:
    """Write to an unbuffered file; a full disk becomes a one-line error naming the file."""
    view = memoryview(data)
    with writing(file.name, "the test output"):
        while view:  # a raw write may be short (a nearly full disk)
            view = view[file.write(view):]


def _run_process(
    argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path, cap: int,
    copy_path: Path | None = None,
) -> _ProcessResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with subreaper(), open(log_path, "wb", buffering=0) as log_file, \
            open(copy_path or os.devnull, "wb", buffering=0) as copy_file:
        sink = _OutputSink(log_file, cap, copy_file if copy_path else None)
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        suite = Suite.started_as(process.pid, f"{JUNIT_FILE_ENV}={env.get(JUNIT_FILE_ENV, '')}")
        pidfile = log_path.parent / SUITE_PIDFILE
        record_suite(pidfile, suite)
        try:
            timed_out = _pump(process, sink, started + timeout_s)
            if timed_out:
                signal_suite(suite, signal.SIGTERM)
                _wait_for_exit(process.pid, time.monotonic() + 2.0)
            stop_suite(suite)  # every process it started, whatever its session
            process.wait()
            duration = time.monotonic() - started
            _drain(process.stdout.fileno(), sink)
        except BaseException:
            stop_suite(suite)
            process.wait()
            raise
        finally:
            pidfile.unlink(missing_ok=True)
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

