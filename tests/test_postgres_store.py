"""The store's write side on a REAL PostgreSQL server: migrate, racing claims and attempts, the run's
advisory lock (Busy, released when its holder is SIGKILLed), an unreachable server as one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import git, rows
from drainkit import PhaseScript, Workbench

from autopack.errors import Busy, EnvironmentProblem
from autopack.lock import PgRunLock
from autopack.store import open_store
from autopack.store.location import PostgresUrl
from autopack.store.migrations import MIGRATIONS

THREADS = 8


def test_migrate_creates_the_schema_and_a_second_migrate_changes_nothing(pg_url: str, tmp_path: Path,
                                                                        autopack) -> None:
    listed = autopack("migrate", "--list", "--db", pg_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"database: {pg_url} (no schema yet)",
                                          *(f"  pending  {name}" for name, _ in MIGRATIONS)]
    first = autopack("migrate", "--db", pg_url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"created {pg_url} at the latest schema ({len(MIGRATIONS)} migration(s) recorded)")
    names = [name for (name,) in rows(pg_url, "SELECT name FROM _migrations ORDER BY name")]
    assert names == sorted(name for name, _ in MIGRATIONS)
    assert rows(pg_url, "SELECT count(*) FROM phases") == [(0,)]
    second = autopack("migrate", "--db", pg_url, cwd=tmp_path)
    assert (second.returncode, second.stdout.strip()) == (0, f"{pg_url} is up to date")
    listed = autopack("migrate", "--list", "--db", pg_url, cwd=tmp_path)
    assert listed.stdout.splitlines() == [f"database: {pg_url}", *(f"  applied  {name}" for name, _ in MIGRATIONS)]
    assert not (tmp_path / ".autopack").exists() or not list((tmp_path / ".autopack").glob("*.backup-*"))


def _threads(work, count: int = THREADS) -> list[BaseException]:
    """Run ``work(n)`` in ``count`` threads started together; the errors they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(n: int) -> None:
        start.wait()
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - collected, then asserted empty
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_eight_threads_claiming_two_hundred_phases_claim_each_exactly_once(pg_url: str, tmp_path: Path) -> None:
    wb = Workbench(tmp_path, store_db=pg_url)
    ids = [f"p{n:03d}" for n in range(200)]
    wb.queue("r", [PhaseScript(i) for i in ids])
    won: dict[int, list[str]] = {n: [] for n in range(THREADS)}
    left_when_refused: list[int] = []  # queued phases at the moment a claimer was told "nothing to claim"
    with open_store(PostgresUrl(pg_url), create=False) as store:
        def claim_all(n: int) -> None:
            while (phase := store.claim_next("r", f"c{n}", 600)) is not None:
                won[n].append(phase.phase_id)
            left_when_refused.append(rows(pg_url, "SELECT count(*) FROM phases WHERE state = 'queued'")[0][0])

        assert _threads(claim_all) == []
    # A claimer is told "nothing" only when every queued phase is held by another claimer's claim in flight
    # (SKIP LOCKED passes over those, and they are claimed): at most one per other claimer, fewer by the time
    # the refused one counts. Without SKIP LOCKED claimers were refused with nearly all 200 still queued.
    assert len(left_when_refused) == THREADS and max(left_when_refused) < THREADS, left_when_refused
    claims = [p for phases in won.values() for p in phases]
    assert sorted(claims) == ids  # none twice, none missed
    owner = {p: f"c{n}" for n, phases in won.items() for p in phases}
    assert dict(rows(pg_url, "SELECT phase_id, claimed_by FROM phases")) == owner
    leases = rows(pg_url, "SELECT count(*) FROM phases WHERE lease_expires_at BETWEEN "
                          "(now() AT TIME ZONE 'UTC') + interval '590 seconds' AND "
                          "(now() AT TIME ZONE 'UTC') + interval '601 seconds'")
    assert leases == [(200,)]  # on the database's clock, stored as UTC


def test_attempts_started_together_on_one_phase_are_numbered_without_errors(pg_url: str, tmp_path: Path) -> None:
    wb = Workbench(tmp_path, store_db=pg_url)
    wb.queue("r", [PhaseScript("only")])
    with open_store(PostgresUrl(pg_url), create=False) as store:
        phase = store.phase("r", "only")
        assert _threads(lambda n: [store.start_attempt(phase.pk, f"e{n}", None) for _ in range(5)]) == []
    numbers = [n for (n,) in rows(pg_url, "SELECT number FROM attempts ORDER BY number")]
    assert numbers == list(range(1, 5 * THREADS + 1))
    assert rows(pg_url, "SELECT attempts, pass_attempts FROM phases") == [(5 * THREADS, 5 * THREADS)]


HOLDER = textwrap.dedent("""
    import sys, time
    from autopack.lock import PgRunLock
    from autopack.store.location import PostgresUrl

    lock = PgRunLock(PostgresUrl(sys.argv[1]), "calc-demo")
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def _advisory_locks(url: str) -> int:
    return rows(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")[0][0]


def wait_for_no_advisory_lock(url: str, bound_s: float = 30) -> float:
    """Seconds until the server holds no advisory lock (polled), failing after ``bound_s``."""
    started = time.monotonic()
    while _advisory_locks(url):
        if time.monotonic() - started > bound_s:
            pytest.fail(f"the advisory lock was still held {bound_s} s after its holder died")
        time.sleep(0.01)
    return time.monotonic() - started


def test_the_run_lock_names_its_holder_and_is_released_when_the_holder_is_sigkilled(pg_url: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = PgRunLock(PostgresUrl(pg_url), "calc-demo")
        with pytest.raises(Busy, match=rf"run 'calc-demo' is being executed by pid {holder.pid} on \S+ \(since "):
            lock.acquire()
        with PgRunLock(PostgresUrl(pg_url), "another-run"):  # one run's lock leaves the others free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    wait_for_no_advisory_lock(pg_url)
    with PgRunLock(PostgresUrl(pg_url), "calc-demo"):
        assert _advisory_locks(pg_url) == 1
    assert _advisory_locks(pg_url) == 0  # released, not left on a pooled connection


HUNG_HOLDER = textwrap.dedent("""
    import sys, time
    from autopack.lock import PgRunLock
    from autopack.store.location import PostgresUrl

    PgRunLock.IDLE_SESSION_S, PgRunLock.PING_S = 3, 0.5
    lock = PgRunLock(PostgresUrl(sys.argv[1]), "calc-demo")
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_a_live_holder_keeps_the_run_lock_and_a_hung_one_loses_it_after_the_idle_session_timeout(pg_url: str) -> None:
    """A SIGSTOPped holder (a hung process, a laptop lid closed) must not block its run forever."""
    holder = subprocess.Popen([sys.executable, "-c", HUNG_HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        alive_until = time.monotonic() + 2 * 3  # twice the idle timeout: its pings keep the session
        while time.monotonic() < alive_until:
            with pytest.raises(Busy):
                PgRunLock(PostgresUrl(pg_url), "calc-demo").acquire()
            time.sleep(0.5)
        holder.send_signal(signal.SIGSTOP)
        freed_s = wait_for_no_advisory_lock(pg_url)
        print(f"\nthe lock of a SIGSTOPped holder was free {freed_s:.1f} s later (idle_session_timeout 3 s)")
        with PgRunLock(PostgresUrl(pg_url), "calc-demo"):
            assert _advisory_locks(pg_url) == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.send_signal(signal.SIGCONT)
        holder.wait()


def test_an_unreachable_server_is_one_line_exit_4_without_the_password(tmp_path: Path, autopack) -> None:
    url = "postgresql://autopack:s3cret@/autopack?host=/nonexistent"
    for command in (["migrate"], ["run", "--run-id", "calc-demo"]):
        done = autopack(*command, "--db", url, cwd=tmp_path)
        assert done.returncode == 4, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "s3cret" not in done.stderr + done.stdout
        assert lines[0].startswith("autopack: error: postgresql://autopack:***@/autopack?host=/nonexistent: "
                                   "cannot use the PostgreSQL server")
    with pytest.raises(EnvironmentProblem, match="cannot use the PostgreSQL server"):
        PgRunLock(PostgresUrl(url), "x").acquire()


def test_without_psycopg_a_postgresql_store_says_what_to_install(tmp_path: Path, autopack) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('psycopg is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    env.pop("AUTOPACK_DB", None)
    done = autopack("migrate", "--db", "postgresql://u:pw@/x?host=/tmp", cwd=tmp_path, env=env)
    assert done.returncode == 4
    assert done.stderr.strip() == ("autopack: error: postgresql://u:***@/x?host=/tmp: a PostgreSQL store needs "
                                   "psycopg; install autopack[postgresql] (pip install 'autopack[postgresql]')")


def test_the_example_runs_end_to_end_on_postgresql(pg_url: str, calc_project: Path, autopack) -> None:
    done = autopack("run", "plan.toml", "--db", pg_url, cwd=calc_project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run calc-demo finished: 3 complete" in done.stdout
    phases = rows(pg_url, "SELECT phase_id, state, attempts FROM phases ORDER BY position")
    assert phases == [("add-power", "complete", 1), ("add-modulo", "complete", 2),
                      ("document-operations", "complete", 1)]
    assert rows(pg_url, "SELECT count(*) FROM executors WHERE stopped_at IS NULL") == [(0,)]
    assert (calc_project / ".autopack" / "runs" / "calc-demo").is_dir()  # artifacts beside the checkout
    assert not (calc_project / ".autopack" / "autopack.db").exists()
    assert git(calc_project, "status", "--porcelain", "--untracked-files=all") == ""  # .autopack ignores itself
    again = autopack("run", "--run-id", "calc-demo", "--db", pg_url, cwd=calc_project)
    assert again.returncode == 0, again.stderr
    status = autopack("status", "calc-demo", "--db", pg_url, cwd=calc_project)
    assert status.returncode == 0 and "complete" in status.stdout, status.stderr


def test_a_broken_constraint_is_reported_as_autopacks_bug_not_as_a_foreign_database(pg_url: str) -> None:
    from sqlalchemy import text

    from autopack.errors import AutopackError

    with open_store(PostgresUrl(pg_url)) as store:
        with pytest.raises(AutopackError, match=r"a write was refused and rolled back \(duplicate key value .*"
                                                r"this is a bug in autopack, please report it") as refused:
            with store.transactions.atomic() as session:
                session.execute(text("INSERT INTO _migrations (name, applied_at) VALUES ('m001_initial', now())"))
    assert not isinstance(refused.value, EnvironmentProblem) and "autopack database?" not in str(refused.value)
