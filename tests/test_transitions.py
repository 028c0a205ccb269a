"""The life cycle as code: every allowed transition works, every other one is refused with the database
unchanged, the drain's claim of a failed phase is one guarded statement under several racing processes,
and a SIGKILL inside the end of an attempt (one commit) leaves what the next command repairs."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import chosen_seed, rows as stored
from drainkit import PhaseScript, Workbench
from pgserver import database_url

from autopack.domain.lifecycle import (
    FINISH,
    AttemptState,
    AttemptTransition,
    PASS_OVER,
    FailureKind,
    PhaseState,
    PhaseTransition,
    RunState,
    TRANSIENT,
    drain_rank,
)
from autopack.errors import EXIT_BUSY, TransitionRefused

SEED = chosen_seed(20261202)
COMMIT = "c0ffee" + "0" * 34


def test_every_failure_kind_has_its_rank_and_whether_it_ends_a_pass_and_is_the_builders_fault() -> None:
    for kind in FailureKind:
        assert isinstance(kind.rank, int) and isinstance(kind.ends_pass, bool), kind
        assert isinstance(kind.builders_fault, bool), kind
    assert drain_rank("a kind from a newer autopack") == TRANSIENT == drain_rank(None)  # README: unknown is transient


def test_the_transition_tables_cover_every_state() -> None:
    phase_states = {s for t in PhaseTransition for s in (*t.sources, t.target)}
    assert phase_states == set(PhaseState)
    for state in PhaseState:  # every state can be entered and, but for none, left
        assert any(t.target == state for t in PhaseTransition), state
        assert any(state in t.sources for t in PhaseTransition), state
    attempt_states = {s for t in AttemptTransition for s in (*t.sources, t.target)}
    assert attempt_states == set(AttemptState)
    assert all(FINISH[state].target == state for state in FINISH)
    t = PhaseTransition  # the transitions that start a new pass, derived from the table
    assert {x for x in t if x.starts_pass} == {t.CLAIM_NEW_PASS, t.CLAIM_PHASE, t.CLAIM_FORCED, t.UNSKIP, t.REQUEUE}
    # The enums keep the stored and printed values (contract 4).
    assert [s.value for s in PhaseState] == ["queued", "executing", "ci_running", "gate", "complete", "failed",
                                             "skipped"]
    assert {s.value for s in RunState} == {"running", "queued", "complete", "failed"}
    assert EXIT_BUSY == TransitionRefused.exit_code == 75


# -- the matrix: every transition from every state ------------------------------------


class Template:
    """Run r in a store: phase "dep", then "p" depending on it, with one attempt at p; ``copy()`` gives
    a fresh store holding the same (a copied SQLite file, or a PostgreSQL database made from it)."""

    def __init__(self, db: Path | str, server: str | None = None):
        self.db, self.server = db, server
        self._copies = itertools.count(1)
        self._live: list[str] = []

    def copy(self, tmp_path: Path, name: str) -> Path | str:
        if self.server is None:
            target = tmp_path / f"{name}.db"
            shutil.copy(self.db, target)
            return target
        import psycopg

        name = urlsplit(self.db).path.lstrip("/")
        copy = f"{name}_{next(self._copies)}"
        with psycopg.connect(self.server, autocommit=True) as admin:
            for old in self._live:  # one copy at a time: the previous case is over
                admin.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
            self._live = [copy]
            admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
        return database_url(self.server, copy)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Template:
    server = None
    if request.param == "postgresql":
        import psycopg

        server = request.getfixturevalue("pg_server")
        name = f"transitions_{os.getpid()}"
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        wb = Workbench(tmp_path_factory.mktemp("template"), store_db=database_url(server, name))
    else:
        wb = Workbench(tmp_path_factory.mktemp("template"))
    wb.queue("r", [PhaseScript("dep"), PhaseScript("p", depends_on=("dep",))])
    with wb.open_store() as store:
        p = store.phase("r", "p")
        store.start_attempt(p.pk, "executor", "model")
    return Template(wb.db, server)


def open_copy(db: Path | str) -> Any:
    from autopack.store import open_store
    from autopack.store.location import parse_location

    return open_store(parse_location(db), create=False)


def dump(db: Path | str) -> str:
    """Everything the store holds, to compare before and after."""
    if not isinstance(db, Path):
        tables = [t for (t,) in stored(db, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                           "ORDER BY tablename")]
        return "\n".join(f"{t}: {sorted(map(repr, stored(db, f'SELECT * FROM {t}')))}" for t in tables)
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def set_states(db: Path | str, p: str, dep: str, attempt: str = "running") -> None:
    write(db, "UPDATE phases SET state = ? WHERE phase_id = 'p'", (p,))
    write(db, "UPDATE phases SET state = ? WHERE phase_id = 'dep'", (dep,))
    write(db, "UPDATE attempts SET state = ?", (attempt,))


def perform(store: Any, transition: PhaseTransition, pk: int, attempt_id: int) -> Any:
    """The public store call that makes ``transition``."""
    from autopack.store.budgets import release_claim

    t = PhaseTransition
    return {
        t.CLAIM: lambda: store.claim_next("r", "x", 60),
        t.CLAIM_NEW_PASS: lambda: store.claim("r", "p", "x", 60, t.CLAIM_NEW_PASS),
        t.CLAIM_PHASE: lambda: store.claim("r", "p", "x", 60, t.CLAIM_PHASE),
        t.CLAIM_FORCED: lambda: store.claim("r", "p", "x", 60, t.CLAIM_FORCED),
        t.RUN_TESTS: lambda: store.set_step(pk, attempt_id, "tests", PhaseState.CI_RUNNING),
        t.GATE: lambda: store.set_step(pk, attempt_id, "finalize", PhaseState.GATE),
        t.ATTEMPT_FAILED: lambda: store.set_step(pk, None, "failed", PhaseState.EXECUTING),
        t.COMPLETE: lambda: store.complete_phase(pk, COMMIT, {"verdict": "complete"}),
        t.RECONCILE: lambda: store.reconcile_commit(pk, attempt_id, COMMIT, {"verdict": "complete"}),
        t.FAIL: lambda: store.fail_phase(pk, state=PhaseState.FAILED, kind="regression", message="m",
                                         fingerprint=None, decision=None),
        t.STOP: lambda: store.fail_phase(pk, state=PhaseState.QUEUED, kind="interrupted", message="m",
                                         fingerprint=None, decision=None),
        t.RELEASE: lambda: release_claim(store, pk),
        t.RESCUE: lambda: store.rescue_run("r"),
        t.SKIP: lambda: store.skip_blocked("r"),
        t.UNSKIP: lambda: store.requeue_failed("r", []),  # requeues nothing named, then unskips
        t.REQUEUE: lambda: store.requeue_failed("r", ["p"]),
    }[transition]()


# Transitions of one named phase or attempt refuse; claims answer None; set-wise ones pick no row.
REFUSING = {PhaseTransition.RUN_TESTS, PhaseTransition.GATE, PhaseTransition.ATTEMPT_FAILED,
            PhaseTransition.COMPLETE, PhaseTransition.RECONCILE, PhaseTransition.FAIL, PhaseTransition.STOP,
            PhaseTransition.RELEASE}


@pytest.mark.parametrize("transition", list(PhaseTransition))
def test_each_phase_transition_works_from_its_states_and_is_refused_from_every_other(
        template: Template, tmp_path: Path, transition: PhaseTransition) -> None:
    for state in PhaseState:
        db = template.copy(tmp_path, str(state))
        # A failed dependency blocks p (SKIP); and keeps REQUEUE's trailing unskip from taking a skipped p.
        blocked = transition in (PhaseTransition.SKIP, PhaseTransition.REQUEUE)
        dep = PhaseState.FAILED if blocked else PhaseState.COMPLETE
        set_states(db, state, dep)
        before = dump(db)
        with open_copy(db) as store:
            p = store.phase("r", "p")
            attempt = store.attempts(p.pk)[0]
            if state in transition.sources:
                perform(store, transition, p.pk, attempt.id)
                assert store.phase("r", "p").state == transition.target, (transition, state)
                continue
            if transition in REFUSING:
                with pytest.raises(TransitionRefused, match=f"phase 'p' of run 'r' is {state}"):
                    perform(store, transition, p.pk, attempt.id)
            else:
                assert not perform(store, transition, p.pk, attempt.id), (transition, state)
        assert dump(db) == before, f"{transition} from {state} changed the database"


@pytest.mark.parametrize("transition", [t for t in PhaseTransition
                                        if t.target in (PhaseState.QUEUED, PhaseState.EXECUTING)])
def test_leaving_a_finished_pass_starts_a_new_one_and_nothing_else_does(template: Template, tmp_path: Path,
                                                                        transition: PhaseTransition) -> None:
    for state in transition.sources:
        db = template.copy(tmp_path, str(state))
        set_states(db, state, PhaseState.FAILED if transition is PhaseTransition.REQUEUE else PhaseState.COMPLETE)
        write(db, "UPDATE phases SET pass_attempts = 2, parked_reason = 'stuck' WHERE phase_id = 'p'")
        with open_copy(db) as store:
            p = store.phase("r", "p")
            perform(store, transition, p.pk, store.attempts(p.pk)[0].id)
            after = store.phase("r", "p")
        expected = (0, None) if state in PASS_OVER else (2, "stuck")
        assert (after.state, after.pass_attempts, after.parked_reason) == (transition.target, *expected), state


@pytest.mark.parametrize("transition", list(AttemptTransition))
def test_each_attempt_transition_works_from_its_states_and_is_refused_from_every_other(
        template: Template, tmp_path: Path, transition: AttemptTransition) -> None:
    for state in AttemptState:
        db = template.copy(tmp_path, str(state))
        set_states(db, PhaseState.GATE, PhaseState.COMPLETE, attempt=state)
        before = dump(db)
        with open_copy(db) as store:
            pk = store.phase("r", "p").pk
            attempt_id = store.attempts(pk)[0].id

            def act() -> None:
                if transition is AttemptTransition.RECONCILE:
                    store.reconcile_commit(pk, attempt_id, COMMIT, {"verdict": "complete"})
                elif transition is AttemptTransition.ABANDON:
                    store.rescue_run("r")
                else:
                    store.finish_attempt(attempt_id, transition.target)

            if state in transition.sources:
                act()
                assert store.attempts(pk)[0].state == transition.target, (transition, state)
                continue
            if transition is AttemptTransition.ABANDON:  # set-wise: the phase is rescued, the attempt left
                act()
                assert store.attempts(pk)[0].state == state
                continue
            with pytest.raises(TransitionRefused, match=f"attempt 1 of run 'r' is {state}"):
                act()
        assert dump(db) == before, f"{transition} from {state} changed the database"


def test_atomic_blocks_commit_as_one_and_a_nested_block_rolls_back_alone(template: Template, tmp_path: Path) -> None:
    db = template.copy(tmp_path, "atomic")
    set_states(db, PhaseState.GATE, PhaseState.COMPLETE)
    before = dump(db)
    with open_copy(db) as store:
        pk = store.phase("r", "p").pk
        attempt_id = store.attempts(pk)[0].id
        with pytest.raises(TransitionRefused):
            with store.atomic():
                store.finish_attempt(attempt_id, AttemptState.COMPLETE, commit=COMMIT)
                store.set_step(pk, attempt_id, "tests", PhaseState.CI_RUNNING)  # from gate: refused
        assert dump(db) == before  # the attempt's end went with it
        with store.atomic():
            store.add_event("r", "kept")
            with pytest.raises(TransitionRefused):
                with store.atomic():
                    store.add_event("r", "dropped")
                    store.fail_phase(pk, state=PhaseState.QUEUED, kind="interrupted", message="m",
                                     fingerprint=None, decision=None)
                    store.fail_phase(pk, state=PhaseState.QUEUED, kind="interrupted", message="m",
                                     fingerprint=None, decision=None)  # queued now: refused
            store.complete_phase(pk, COMMIT, {"verdict": "complete"})  # the savepoint undid the first STOP
    events = [kind for (kind,) in stored(db, "SELECT kind FROM events ORDER BY id")]
    [(state,)] = stored(db, "SELECT state FROM phases WHERE phase_id = 'p'")
    assert (events, state) == (["kept"], "complete")


# -- racing claims in several processes -------------------------------------------------

CLAIMER = textwrap.dedent("""
    import json, random, sys, time
    from pathlib import Path
    from autopack.domain.lifecycle import PhaseTransition
    from autopack.store import open_store
    from autopack.store.location import parse_location

    db, go, me, seed, phases = parse_location(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5:]
    random.Random(seed).shuffle(phases)
    with open_store(db, create=False) as store:
        store.phase("r", phases[0])  # connected and warm before the start
        print("ready", flush=True)
        while not go.exists():
            time.sleep(0.001)
        won = [p for p in phases if store.claim("r", p, me, 600, PhaseTransition.CLAIM_NEW_PASS) is not None]
    print(json.dumps(won), flush=True)
""")


def write(db: Path | str, sql: str, *params: tuple) -> None:
    """Change the store as an outside tool would, in one transaction (each of ``params``, or once)."""
    if str(db).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(db)) as pg, pg.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), list(params) or [()])
        return
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(sql, list(params) or [()])
    conn.close()


def test_processes_racing_the_claim_of_failed_phases_claim_each_exactly_once(tmp_path: Path, store_db: str) -> None:
    rng = random.Random(SEED)
    wb = Workbench(tmp_path, store_db=store_db)
    ids = [f"p{n:02d}" for n in range(40)]
    wb.queue("r", [PhaseScript(i) for i in ids])
    failed = {i for i in ids if rng.random() < 0.6}
    write(wb.db, "UPDATE phases SET pass_attempts = 3")
    write(wb.db, "UPDATE phases SET state = 'failed' WHERE phase_id = ?", *[(i,) for i in failed])
    go = tmp_path / "go"
    claimers = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(wb.db), str(go), f"c{n}",
                                  str(rng.randrange(10**9)), *ids],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=wb.env)
                for n in range(6)]
    for claimer in claimers:
        assert claimer.stdout.readline().strip() == "ready", claimer.stderr.read()
    go.write_text("")
    won: dict[str, list[str]] = {}
    for n, claimer in enumerate(claimers):
        out, err = claimer.communicate(timeout=120)
        assert claimer.returncode == 0, err
        won[f"c{n}"] = json.loads(out)
    claims = [p for phases in won.values() for p in phases]
    assert sorted(claims) == ids, f"seed {SEED}: claimed more than once or never: {won}"
    rows = {pid: (state, by, passes) for pid, state, by, passes in
            stored(wb.db, "SELECT phase_id, state, claimed_by, pass_attempts FROM phases")}
    owner = {p: c for c, phases in won.items() for p in phases}
    assert rows == {i: ("executing", owner[i], 0 if i in failed else 3) for i in ids}


# -- SIGKILL inside the end of an attempt ------------------------------------------------


def test_a_sigkill_inside_the_end_of_an_attempt_leaves_only_the_commit_and_the_next_run_records_it(
        tmp_path: Path) -> None:
    from hostile import forkcli
    from test_chaos import STORE, KillPoint, check_run

    # Inside `with store.atomic()` at the end of a completed attempt (the first baseline saved is the
    # fresh run's own, the second the attempt's tree).
    points = [KillPoint("baseline saved", STORE, "save_baseline", nths=(2,)),
              KillPoint("attempt completed", STORE, "finish_attempt"),
              KillPoint("phase completing", STORE, "complete_phase", when="before"),
              KillPoint("phase completed", STORE, "complete_phase")]
    rng = random.Random(SEED)
    rng.shuffle(points)
    for n, point in enumerate(points):
        wb = Workbench(tmp_path / point.name.replace(" ", "-"))  # a store of its own: no cached baseline
        run_id = f"k{n}"
        wb.queue(run_id, [PhaseScript("a"), PhaseScript("b", depends_on=("a",))])
        victim = forkcli.spawn(["run", "--run-id", run_id], cwd=wb.root, env=wb.env, logs=tmp_path / "logs",
                               prepare=point.arm(point.nths[0])).wait()
        assert victim.killed, f"seed {SEED}: {point.name}: {victim.output}"
        assert wb.commits(run_id) == [("a", "1")]  # git has the commit, the store nothing of the attempt's end
        conn = sqlite3.connect(wb.db)
        seen = conn.execute(
            "SELECT p.state, a.state, a.\"commit\", (SELECT count(*) FROM baselines b JOIN test_runs t ON t.id = b.test_run_id "
            "WHERE t.attempt_id = a.id) FROM phases p JOIN attempts a ON a.phase_pk = p.pk "
            "WHERE p.run_id = ? AND p.phase_id = 'a'", (run_id,)).fetchall()
        conn.close()
        assert seen == [("gate", "running", None, 1)], f"seed {SEED}: killed at {point.name}: {seen}"
        done = wb.cli("run", "--run-id", run_id)
        assert done.returncode == 0, done.stderr
        check_run(wb, run_id)
        conn = sqlite3.connect(wb.db)
        events = conn.execute("SELECT phase_id, data FROM events WHERE run_id = ? AND kind = 'reconciled_commit'",
                              (run_id,)).fetchall()
        conn.close()
        assert [(phase, json.loads(data)["commit"][:7]) for phase, data in events] == [
            ("a", _branch_commits(wb, run_id)[0][:7])]


def _branch_commits(wb: Workbench, run_id: str) -> list[str]:
    from conftest import git

    return git(wb.repo, "log", "--reverse", "--format=%H", f"autopack/{run_id}", "^main", env=wb.env).split()


def test_an_executor_whose_claim_was_taken_back_writes_nothing_to_the_phase(tmp_path: Path, store_db: str) -> None:
    # A's lease lapsed (a partition, a long stop): the phase was rescued and B claimed it; A's late writes
    # are fenced by its claim, so B's attempt is never moved along or ended by A.
    wb = Workbench(tmp_path, store_db=store_db)
    wb.queue("r", [PhaseScript("a")])
    with wb.open_store() as store:
        pk = store.claim_next("r", "A", 60).pk
        late = store.start_attempt(pk, "A", "model")
        assert store.rescue_run("r") == ["a"]
        assert store.claim_next("r", "B", 60).pk == pk
        current = store.start_attempt(pk, "B", "model")
        fenced = pytest.raises(TransitionRefused, match="executor B's claim now, not this executor's \\(A\\)")
        with fenced:
            store.set_step(pk, late.id, "tests", PhaseState.CI_RUNNING, fence="A")
        with fenced:
            store.fail_phase(pk, state=PhaseState.FAILED, kind="regression", message="m", fingerprint=None,
                             decision=None, fence="A")
        phase = store.phase("r", "a")
        assert (phase.state, phase.claimed_by, phase.failure_kind) == (PhaseState.EXECUTING, "B", "abandoned")  # the rescue's
        store.set_step(pk, current.id, "tests", PhaseState.CI_RUNNING, fence="B")  # the holder's own writes go on
        store.set_step(pk, current.id, "finalize", PhaseState.GATE, fence="B")
        with fenced:
            store.complete_phase(pk, COMMIT, {"verdict": "complete"}, fence="A")
        assert (store.phase("r", "a").state, store.phase("r", "a").commit) == (PhaseState.GATE, None)
        store.complete_phase(pk, COMMIT, {"verdict": "complete"}, fence="B")
        assert store.phase("r", "a").state == PhaseState.COMPLETE
