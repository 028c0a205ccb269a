"""Resource faults: a full disk and a read-only database, before and in the middle of a run.

A full disk is simulated with RLIMIT_FSIZE in the autopack process (inherited by the git and
test commands it starts): every write that would grow a file past the limit fails with EFBIG,
as it would with ENOSPC. The database becomes read-only with ``chattr +i`` (root) or ``chmod``.
Each fault must end the command cleanly (exit 4, one stderr line, no traceback), leave the
database consistent (``integrity_check``, no phase complete without its commit), and once the
fault is gone the next command must complete the run with exactly one commit per phase.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Callable

import pytest

from drainkit import PhaseScript, Workbench
from conftest import git
from hostile import forkcli

OK = ("ok",) * 5
PHASES = [PhaseScript("a", OK, max_attempts=3), PhaseScript("b", ("break",) + OK, max_attempts=3)]


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def assert_consistent(wb: Workbench, run_id: str) -> None:
    """Whatever the fault interrupted: the file is sound and no phase is complete without its commit."""
    assert query(wb.db, "PRAGMA integrity_check") == [("ok",)]
    recorded = dict(query(wb.db, f"SELECT phase_id, \"commit\" FROM phases WHERE run_id = '{run_id}' "
                                 "AND state = 'complete'"))
    for phase_id, commit in recorded.items():
        assert git(wb.repo, "cat-file", "-t", commit, env=wb.env) == "commit", phase_id


def assert_completed_once(wb: Workbench, run_id: str) -> None:
    assert set(wb.phase_states(run_id).values()) == {"complete"}
    assert sorted(phase for phase, _ in wb.commits(run_id)) == ["a", "b"]
    worktree = wb.db.parent / "worktrees" / run_id
    assert git(worktree, "status", "--porcelain", "--untracked-files=all", env=wb.env) == ""


def fault_then_recover(wb: Workbench, run_id: str, fault: Callable[[], None] | None,
                       undo: Callable[[], None] = lambda: None) -> forkcli.Finished:
    logs = wb.root / "cli-logs"
    try:
        faulted = forkcli.run(["run", "--run-id", run_id], cwd=wb.root, env=wb.env, logs=logs, prepare=fault)
    finally:
        undo()
    assert "Traceback" not in faulted.output, faulted.output
    assert faulted.code == 4, faulted.output
    [line] = faulted.stderr.splitlines()
    assert line.startswith("autopack: error: ") and len(line) < 600, line
    assert_consistent(wb, run_id)
    done = forkcli.run(["run", "--run-id", run_id], cwd=wb.root, env=wb.env, logs=logs)
    assert done.code == 0, done.output
    assert_completed_once(wb, run_id)
    return faulted


# Limits (bytes per file) chosen to fail at different moments: the first database write, the
# middle of the first attempt, the failing attempt of the second phase, the last commits.
FSIZE_LIMITS = [8_192, 40_000, 120_000, 260_000, 420_000]


@pytest.mark.parametrize("limit", FSIZE_LIMITS)
def test_a_full_disk_ends_the_command_cleanly_and_the_next_one_finishes(tmp_path: Path, limit: int) -> None:
    wb = Workbench(tmp_path)
    wb.queue("full", PHASES)

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    faulted = fault_then_recover(wb, "full", full_disk)
    print(f"\nRLIMIT_FSIZE={limit}: {faulted.stderr.strip()}")
    assert "free disk space" in faulted.stderr or "File too large" in faulted.stderr, faulted.stderr


def read_only(paths: list[Path]) -> Callable[[], None]:
    """Make ``paths`` unwritable, even for root (chattr +i); returns the undo."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in paths}
        for path in paths:
            path.chmod(modes[path] & 0o555)
        return lambda: [path.chmod(mode) for path, mode in modes.items()]
    if shutil.which("chattr") is None:
        pytest.skip("root without chattr: cannot make the database read-only")
    if subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    return lambda: subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def test_a_read_only_database_directory_is_refused_cleanly_and_the_next_command_finishes(tmp_path: Path) -> None:
    wb = Workbench(tmp_path)
    wb.queue("ro", PHASES)
    state = wb.db.parent
    undo = read_only([state, wb.db])
    faulted = fault_then_recover(wb, "ro", None, undo)
    assert str(wb.db) in faulted.stderr and "writable" in faulted.stderr
    assert query(wb.db, "SELECT count(*) FROM attempts") == [(3,)]  # a once, b twice: the refused command added none


def test_a_database_that_turns_read_only_mid_attempt_is_recovered(tmp_path: Path) -> None:
    wb = Workbench(tmp_path)
    wb.queue("midway", PHASES)
    state = wb.db.parent
    undos: list[Callable[[], None]] = []

    def turn_read_only_after_the_first_suite() -> None:
        from autopack.store.runs import Store

        original = Store.record_test_run

        def record_test_run(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            files = [p for p in (state, wb.db, Path(f"{wb.db}-wal")) if p.exists()]
            subprocess.run(["chattr", "+i", *map(str, files)], check=True)
            return result

        Store.record_test_run = record_test_run

    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr: permissions do not affect files autopack already has open")
    undos.append(lambda: subprocess.run(["chattr", "-i", *[str(p) for p in (state, wb.db, Path(f"{wb.db}-wal"))
                                                           if p.exists()]], check=False))
    fault_then_recover(wb, "midway", turn_read_only_after_the_first_suite, lambda: [u() for u in undos])
    states = [s for (s,) in query(wb.db, "SELECT state FROM attempts ORDER BY id")]
    assert states[0] == "abandoned"  # the attempt the fault cut short, recovered by the next command


def test_a_full_disk_while_the_suite_log_is_written_ends_cleanly(tmp_path: Path) -> None:
    """The write that fails is autopack's test log (the suite prints 1 GiB), not the database."""
    wb = Workbench(tmp_path)
    flood = Path(__file__).resolve().parent / "hostile" / "code" / "flood.py"
    wb.add_run("flood", [PhaseScript("a", OK, max_attempts=3), PhaseScript("b", OK, max_attempts=3)])
    plan = wb.plans / "flood.toml"
    plan.write_text(plan.read_text().replace('test_command = "python check.py"', f'test_command = "python {flood}"')
                    .replace('junit_xml = "report.xml"\n', ""))
    assert forkcli.run(["run", str(plan), "--queue-only"], cwd=wb.root, env=wb.env, logs=wb.root / "l").code == 0

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, resource.RLIM_INFINITY))

    faulted = fault_then_recover(wb, "flood", full_disk)
    assert "cannot write the test output: File too large" in faulted.stderr and ".log:" in faulted.stderr


def test_a_refused_patch_write_ends_the_command_cleanly_naming_the_patch(tmp_path: Path) -> None:
    """The failed attempt's patch cannot be written (the directory is read-only): exit 4 naming it."""
    wb = Workbench(tmp_path)
    wb.queue("patch", PHASES)
    patches = wb.db.parent / "runs" / "patch" / "patches"
    patches.mkdir(parents=True)
    faulted = fault_then_recover(wb, "patch", None, read_only([patches]))
    assert f"{patches}/b-attempt-1.patch: cannot write the attempt's patch" in faulted.stderr, faulted.stderr
    assert "make it writable" in faulted.stderr


@pytest.mark.parametrize("errno_name, advice", [("ENOSPC", "free disk space"), ("EFBIG", "free disk space"),
                                                ("EROFS", "make it writable"), ("EACCES", "make it writable")])
def test_a_file_system_refusal_names_the_file_and_what_to_do(errno_name: str, advice: str) -> None:
    import errno

    from autopack.errors import EnvironmentProblem, writing

    code = getattr(errno, errno_name)
    with pytest.raises(EnvironmentProblem) as refused:
        with writing("/state/x.log", "the log"):
            raise OSError(code, os.strerror(code), "/state/x.log")
    assert str(refused.value).startswith(f"/state/x.log: cannot write the log: {os.strerror(code)}; {advice}")
    assert refused.value.exit_code == 4


def test_any_other_os_error_while_writing_is_not_dressed_up_as_a_full_disk() -> None:
    from autopack.errors import writing

    with pytest.raises(FileNotFoundError):  # a bug (a wrong path): the boundary reports it as one
        with writing("/state/x.log", "the log"):
            open("/nonexistent-dir/x.log", "w")
