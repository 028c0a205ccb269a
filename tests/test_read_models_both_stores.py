"""Every read model answers the same on SQLite and on PostgreSQL, over the same rows.

A realistic store (the benchmarks' generator at tiny scale, plus live and silent executors,
agent transcripts, doctor skips, goal-evidence test runs, stored logs) is built on SQLite, copied into a
fresh PostgreSQL database (tests/storecopy.py), and each read model runs on ``Reader`` and on
``PgReader``: the results must be equal, value for value. Then what ``open_reader`` does with a
PostgreSQL database that is empty, foreign, behind or ahead, or unreachable.
"""

from __future__ import annotations

import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: benchmarks/

from benchmarks.store_builder import SCALES, build_store  # noqa: E402
from pgserver import database_url  # noqa: E402
from storecopy import copy_store  # noqa: E402

from autopack.errors import EnvironmentProblem, MigrationNeeded  # noqa: E402
from autopack.store import open_reader  # noqa: E402
from autopack.store.location import PostgresUrl  # noqa: E402
from autopack.store.pg import PgReader  # noqa: E402
from autopack.store.sql import Reader  # noqa: E402
from autopack.test_logs import STORED_LOG_BYTES  # noqa: E402

NOW = datetime.now(timezone.utc).replace(microsecond=0)
RUNS = [f"bench-{n:05d}" for n in range(SCALES["tiny"].runs)]


def _add_live_rows(path: Path, sample_run: str) -> None:
    """What the generator does not write: executors at work and gone silent, agent attempts with
    transcripts, doctor skips with reasons, goal-evidence and confirmed test runs, stored logs (one cut) and JUnit XML."""
    from sqlalchemy import create_engine, select, update

    from autopack.store import models

    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        phase = conn.execute(select(models.Phase.__table__.c.phase_id).where(
            models.Phase.__table__.c.run_id == sample_run).limit(1)).scalar()
        conn.execute(models.Executor.__table__.insert(), [
            {"id": "live-b", "pid": 2, "host": "m2", "command": "autopack drain", "run_id": sample_run,
             "phase_id": phase, "step": "tests", "started_at": NOW - timedelta(minutes=3),
             "heartbeat_at": NOW - timedelta(seconds=5), "stopped_at": None},
            {"id": "live-a", "pid": 1, "host": "m1", "command": "autopack drain", "run_id": sample_run,
             "phase_id": phase, "step": "builder", "started_at": NOW - timedelta(minutes=3),
             "heartbeat_at": NOW - timedelta(seconds=12), "stopped_at": None},
            {"id": "silent", "pid": 3, "host": "m1", "command": "autopack run", "run_id": RUNS[3],
             "phase_id": None, "step": None, "started_at": NOW - timedelta(hours=2),
             "heartbeat_at": NOW - timedelta(hours=1), "stopped_at": None},
        ])
        runs, phases = models.Run.__table__, models.Phase.__table__
        for n, run_id in enumerate(RUNS[:12]):  # run types (pick-next, drains) and complexities (stats)
            plan = conn.execute(select(runs.c.plan).where(runs.c.id == run_id)).scalar()
            plan["run"]["type"] = ("feature-work", "maintenance", "docs")[n % 3]
            conn.execute(update(runs).where(runs.c.id == run_id).values(plan=plan))
            for pk, spec in conn.execute(select(phases.c.pk, phases.c.spec).where(phases.c.run_id == run_id)).all():
                spec["complexity"] = ("low", "medium", "high")[(pk + n) % 3]
                conn.execute(update(phases).where(phases.c.pk == pk).values(spec=spec))
        attempts = models.Attempt.__table__
        agent_ids = conn.execute(select(attempts.c.id).where(attempts.c.run_id.in_(RUNS[:4]))
                                 .order_by(attempts.c.id).limit(6)).scalars().all()
        conn.execute(update(attempts).where(attempts.c.id.in_(agent_ids)).values(builder="agent"))
        conn.execute(models.TranscriptTurn.__table__.insert(), [
            {"attempt_id": attempt_id, "turn": turn, "max_tokens": 8192,
             "request": {"messages": [{"role": "user", "content": f"turn {turn} of {attempt_id}: 100% done?"}]},
             "response": {"content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                          "usage": {"output_tokens": 10 * turn}},
             "created_at": NOW - timedelta(minutes=30 - turn)}
            for attempt_id in agent_ids for turn in (1, 2, 2, 3)])
        conn.execute(models.Event.__table__.insert(), [
            {"run_id": RUNS[n % 4], "phase_id": "p01", "attempt_id": agent_ids[n % len(agent_ids)],
             "kind": "doctor_skipped", "data": {"reason": ("budget", "same failure")[n % 2], "tokens_avoided": 700 * n},
             "created_at": NOW - timedelta(minutes=n)} for n in range(5)])
        test_runs = models.SuiteRun.__table__
        conn.execute(test_runs.insert(), [
            {"run_id": RUNS[n % 4], "attempt_id": agent_ids[n % len(agent_ids)], "kind": kind,
             "tree_sha": f"{n:040d}", "command": "python -m pytest -q", "exit_code": n % 2, "timed_out": n == 2,
             "duration_s": 1.5 * n, "passed": 3, "failed": n % 2, "errors": 0, "skipped": 0, "total": 3 + n % 2,
             "junit_error": None, "output_tail": f"tail {n}", "output_bytes": 10, "output_truncated": n == 1,
             "log_path": None, "created_at": NOW - timedelta(minutes=n)}
            for n, kind in enumerate(("f2p", "old_tests", "f2p", "confirmed", "attempt"))])
        logged = conn.execute(select(test_runs.c.id).where(test_runs.c.run_id.in_(RUNS[:4]))
                              .order_by(test_runs.c.id).limit(4)).scalars().all()
        long_log = b"".join(b"line %d of a long log\n" % n for n in range(60_000))  # over STORED_LOG_BYTES
        logs = [b"1 passed\n", "caf\u00e9 \u2713 2 failed\n".encode(), long_log, b""]
        conn.execute(models.SuiteRunFiles.__table__.insert(), [
            {"test_run_id": test_run_id, "log": zlib.compress(log[:STORED_LOG_BYTES]), "log_bytes": len(log),
             "junit": zlib.compress(b"<testsuite tests='%d'/>" % n) if n % 2 == 0 else None,
             "junit_bytes": 24 if n % 2 == 0 else 5_000_000}
            for n, (test_run_id, log) in enumerate(zip(logged, logs))])
    engine.dispose()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, pg_server: str) -> Any:
    """(SQLite path, PostgreSQL URL, the built store's facts) holding the same rows."""
    import psycopg

    path = tmp_path_factory.mktemp("both") / "autopack.db"
    built = build_store(path, SCALES["tiny"])
    _add_live_rows(path, built.sample_run)
    name = "autopack_both_stores"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url(pg_server, name)
    copy_store(path, url)
    yield path, PostgresUrl(url), built
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _models(built: Any) -> dict[str, Callable[[Any], Any]]:
    from autopack import abtest
    from autopack.abtest_pairs import pairs_from_arms
    from autopack.drain import DrainOptions, plan_candidates
    from autopack.picker import score_runs
    from autopack.report import logs
    from autopack.report.story import run_story
    from autopack.store import activity, drainable, metrics, queries, stats, transcripts

    settings = SimpleNamespace(park_after_identical_failures=3, park_after_attempts=12)
    pairs = pairs_from_arms([c for c, _ in built.ab_pairs], [t for _, t in built.ab_pairs])
    agent_phase = "p01"
    return {
        "count_runs": queries.count_runs,
        "run_exists": lambda db: [queries.run_exists(db, run) for run in (RUNS[0], "nope")],
        "list_runs": queries.list_runs,
        "list_runs limit": lambda db: queries.list_runs(db, 5),
        "run_status": lambda db: [queries.run_status(db, run) for run in RUNS + ["nope"]],
        "activity": lambda db: activity.activity(db, NOW, 60, 600),
        "activity all waiting": lambda db: activity.activity(db, NOW + timedelta(days=400), 3 * 86400, 1),
        "drainable": drainable.drainable_phases,
        "drainable with parked": lambda db: drainable.drainable_phases(db, include_parked=True),
        "drainable one run": lambda db: drainable.drainable_phases(db, built.sample_run, include_parked=True),
        "drainable strict rule": lambda db: drainable.drainable_phases(db, rule=drainable.ParkRule(2, 2)),
        "run_costs": lambda db: drainable.run_costs(db, RUNS),
        "run_facts": metrics.run_facts,
        "run_facts some": lambda db: metrics.run_facts(db, RUNS[:5] + ["nope"]),
        "run_metrics": lambda db: metrics.run_metrics(db, RUNS),
        "telemetry": stats.telemetry,
        "telemetry one run": lambda db: [stats.telemetry(db, run) for run in RUNS[:4]],
        "transcript_counts": lambda db: [transcripts.transcript_counts(db, run) for run in RUNS[:4]],
        "attempt_transcript": lambda db: [transcripts.attempt_transcript(db, run, agent_phase, n)
                                          for run in RUNS[:4] for n in (None, 1, 2, 9)],
        "run_story": lambda db: [run_story(db, run, transcripts=True, logs=True) for run in RUNS[:6]],
        "pick-next scores": lambda db: [s.to_dict() for s in score_runs(db, drainable.ParkRule(), NOW)],
        "pick-next top 1 of them": lambda db: _top_of_all(score_runs, db, 1),
        "drain --dry-run candidates": lambda db: [(c.phase, c.rank, c.reason) for c in
                                                  plan_candidates(db, settings, DrainOptions(include_parked=True))],
        "ab-test": lambda db: abtest.compare(db, pairs, seed=7, resamples=200),
        "logs: test runs": lambda db: [logs.test_runs(db, run) for run in RUNS[:4] + ["nope"]],
        "logs: stored log and JUnit": lambda db: [(logs.log_text(db, entry), logs.junit_text(db, entry))
                                                   for run in RUNS[:4] for entry in logs.test_runs(db, run)],
    }


def _top_of_all(score_runs: Any, db: Any, limit: int) -> list[dict[str, Any]]:
    """The best ``limit`` scores, which must be the start of all of them (the types read for those alone)."""
    from autopack.store.drainable import ParkRule

    top = [s.to_dict() for s in score_runs(db, ParkRule(), NOW, limit=limit)]
    assert len(top) == limit and top == [s.to_dict() for s in score_runs(db, ParkRule(), NOW)][:limit]
    return top


MODEL_NAMES = list(_models(SimpleNamespace(ab_pairs=[("a", "b")])))


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_a_read_model_answers_the_same_on_both_stores(stores: Any, model: str) -> None:
    path, url, built = stores
    read = _models(built)[model]
    with Reader.open(path) as sqlite_reader, PgReader.open(url) as pg_reader:
        on_sqlite, on_pg = read(sqlite_reader), read(pg_reader)
    assert on_sqlite, f"{model}: nothing to compare"
    assert on_pg == on_sqlite


def test_the_copy_holds_what_the_read_models_are_compared_on(stores: Any) -> None:
    """Live and silent executors, transcripts and waiting phases are there, so the comparison means something."""
    from autopack.store.activity import activity
    from autopack.store.stats import telemetry

    _, url, _ = stores
    with PgReader.open(url) as reader:
        now = activity(reader, NOW, 60, 600)
        stats = telemetry(reader)
    assert [e["id"] for e in now["executors"]] == ["live-a", "live-b"] and now["stale_executors"]
    assert now["waiting_phases"] and stats["doctor"]["skipped_by_reason"] == {"budget": 3, "same failure": 2}
    assert stats["goal_evidence"]["runs"] == {"f2p": 2, "old_tests": 1}
    assert {row["complexity"] for row in stats["estimation_smape"]} == {"low", "medium", "high"}
    with PgReader.open(url) as reader:
        from autopack.store.drainable import drainable_phases, run_types

        assert set(run_types(reader, sorted({p.run_id for p in drainable_phases(reader)})).values()) - {None}
    from autopack.report import logs

    with PgReader.open(url) as reader:
        listed = [entry for run in RUNS[:4] for entry in logs.test_runs(reader, run)]
        stored = [(entry["log"], logs.log_text(reader, entry)) for entry in listed]
        junit = [logs.junit_text(reader, entry) for entry in listed]
    [(cut, _)] = [found for place, found in stored if place == "stored, cut"]
    assert cut.startswith("line 0 of a long log\n")  # bytea read back as bytes
    assert "the store keeps the log's first 1,048,576 of 1,488,890 bytes" in cut
    assert ("stored", ("caf\u00e9 \u2713 2 failed\n", "the store")) in stored
    assert "<testsuite tests='0'/>" in junit and {e["junit"] for e in listed} >= {
        "stored", "not stored: 5,000,000 bytes, over 1,048,576", "none"}


def test_status_of_a_run_through_the_command_s_code_is_the_same_on_both(stores: Any) -> None:
    from autopack.cli.status import _snapshot

    path, url, built = stores
    on_sqlite = _snapshot(SimpleNamespace(db=path, lease_s=60), built.sample_run, 10, 20)
    on_pg = _snapshot(SimpleNamespace(db=url, lease_s=60), built.sample_run, 10, 20)
    assert on_pg == on_sqlite and on_pg["run"]["executors"]


def test_the_reader_is_one_read_only_snapshot(stores: Any, pg_server: str) -> None:
    """A write committed after the reader opened is not seen; the reader itself cannot write."""
    import psycopg

    from autopack.store.queries import count_runs

    _, url, _ = stores
    with PgReader.open(url) as reader:
        before = count_runs(reader)
        with psycopg.connect(url.libpq_url, autocommit=True) as writer:
            writer.execute("CREATE TABLE IF NOT EXISTS scratch (n int)")
            writer.execute("INSERT INTO scratch VALUES (1)")
        assert count_runs(reader) == before
        with pytest.raises(EnvironmentProblem, match="read-only transaction"):
            with reader.read() as conn:
                conn.execute("INSERT INTO scratch VALUES (2)")
    with psycopg.connect(url.libpq_url, autocommit=True) as writer:
        writer.execute("DROP TABLE scratch")


def test_an_empty_postgresql_database_has_no_store_yet(pg_url: str) -> None:
    assert open_reader(PostgresUrl(pg_url)) is None


@pytest.mark.parametrize("sql, params", [("SELECT nonsense FROM", ()), ("SELECT 1", (1,))],
                         ids=["refused by the server", "refused by the driver"])
def test_sql_postgresql_refuses_is_reported_as_autopack_s_bug(pg_url: str, sql: str, params: tuple) -> None:
    from autopack.errors import AutopackError
    from autopack.store.pg_connect import translate_pg_errors

    url = PostgresUrl(pg_url)
    with PgReader.open(url) as reader, pytest.raises(AutopackError) as refused:
        with translate_pg_errors(url):
            reader.connection.execute(sql, params)
    assert "this is a bug in autopack" in str(refused.value) and "autopack database" not in str(refused.value)
    assert not isinstance(refused.value, EnvironmentProblem)


def test_a_database_of_something_else_is_refused(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int)")
    with pytest.raises(EnvironmentProblem, match=r"not an autopack database \(no _migrations table\)"):
        open_reader(PostgresUrl(pg_url))


@pytest.mark.parametrize("change, refusal, message", [
    ("DELETE FROM _migrations WHERE name = 'm007_derived_state'", MigrationNeeded,
     r"needs migrating \(1 pending\); run `autopack migrate --db postgresql://"),
    ("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', now())", EnvironmentProblem,
     r"written by a newer autopack \(unknown migrations: m999_future\)"),
])
def test_a_schema_behind_or_ahead_is_refused_as_on_sqlite(pg_url: str, tmp_path: Path, change: str,
                                                          refusal: type, message: str) -> None:
    import psycopg

    from autopack.store import migrate

    migrate(tmp_path / "autopack.db")
    copy_store(tmp_path / "autopack.db", pg_url)
    assert open_reader(PostgresUrl(pg_url)) is not None
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(change)
    with pytest.raises(refusal, match=message):
        open_reader(PostgresUrl(pg_url))


def test_a_server_that_cannot_be_reached_is_one_line_naming_the_url_without_its_password(tmp_path: Path) -> None:
    url = PostgresUrl(f"postgresql://autopack:s3cret@/autopack?host={tmp_path}&connect_timeout=2")
    with pytest.raises(EnvironmentProblem) as refused:
        open_reader(url)
    message = str(refused.value)
    assert refused.value.exit_code == 4 and "\n" not in message and "s3cret" not in message
    assert message.startswith("postgresql://autopack:***@/autopack") and "cannot use the PostgreSQL server" in message
    assert "the URL's host, port, user, password and database are right (--db, the db setting or AUTOPACK_DB)" in message


def test_without_psycopg_a_postgresql_store_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg: ImportError
    with pytest.raises(EnvironmentProblem, match=r"needs psycopg; install autopack\[postgresql\]"):
        open_reader(PostgresUrl("postgresql://localhost/autopack"))
