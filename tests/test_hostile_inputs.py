"""Hostile input corpus: every file under tests/hostile/ (plus a few generated at collection time).

Each case goes through the real CLI (a forked child, tests/hostile/forkcli.py) and must
end the documented way:

- plans, cassettes and settings that are invalid: exit 2 with exactly one stderr line
  (``autopack: error: ...`` naming the problem), no traceback, and every byte of the
  workbench (database included) unchanged;
- databases that are corrupt, foreign, from a newer autopack or unwritable: exit 4 with one
  line, the file unchanged (a database path that is a directory: exit 2);
- LLM answers (served from a cassette) that are malformed or unsafe: the run finishes (exit 1)
  with the phase failed with the kind the file name starts with, nothing applied, no commit,
  and nothing written outside the worktree;
- JUnit XML (written by a non-pytest test command) that is malformed, huge or hostile: the
  attempt fails as ``report_invalid`` (or, for odd but valid reports, completes), memory
  and time bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
import time
from pathlib import Path
from typing import Callable

import pytest

from drainkit import PhaseScript, Workbench, builder_line
from conftest import git
from hostile import forkcli

HOSTILE = Path(__file__).resolve().parent / "hostile"
SCRATCH_PWNED = Path("/tmp/autopack-hostile-pwned")


def files_of(kind: str, suffix: str) -> list[Path]:
    return sorted((HOSTILE / kind).glob(f"*{suffix}"))


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, params).fetchall()


def expectation(text: str) -> str | None:
    """The substring a case's one-line error must contain: its first line, ``# expect: ...``."""
    first = text.splitlines()[0] if text else ""
    return first.removeprefix("# expect:").strip() if first.startswith("# expect:") else None


# --- generated cases (binary, huge or deep: produced here rather than checked in) ---------

PLAN_HEAD = ('[run]\nid = "hostile"\ngoal = "g"\nrepo = "../repo"\ncassette = "answer.jsonl"\n\n'
             '[[phases]]\nid = "a"\ngoal = "Write out/a.txt"\n')
GENERATED_PLANS: dict[str, Callable[[], bytes]] = {
    "non-utf8-latin1": lambda: PLAN_HEAD.replace('goal = "g"', 'goal = "caf\xe9"').encode("latin-1"),
    "nul-byte": lambda: PLAN_HEAD.encode().replace(b'goal = "g"', b'goal = "g\x00"'),
    "utf16": lambda: PLAN_HEAD.encode("utf-16"),
    "deeply-nested-array": lambda: (PLAN_HEAD + "scope = " + "[" * 50_000 + "]" * 50_000 + "\n").encode(),
    "deeply-nested-inline-tables": lambda: (PLAN_HEAD.replace('goal = "g"\n', 'goal = "g"\nflags = ' + "{a = " * 50_000
                                                              + "1" + "}" * 50_000 + "\n", 1)).encode(),
    "binary-garbage": lambda: bytes(range(256)) * 64,
    "run-id-100k-chars": lambda: ("# expect: run.id: 'aaaa\n" + PLAN_HEAD.replace('id = "hostile"', f'id = "{"a" * 100_000}"')
                                  ).encode(),
    "depends-on-100k-chars": lambda: ("# expect: (100000 chars)\n" + PLAN_HEAD
                                      + f'depends_on = ["{"b" * 100_000}"]\n').encode(),
}
GENERATED_CASSETTES: dict[str, Callable[[], bytes]] = {
    "non-utf8": lambda: b'{"role": "builder", "phase": "caf\xe9", "attempt": 1}\n',
    "deeply-nested-json": lambda: (b"[" * 200_000) + (b"]" * 200_000) + b"\n",
    "thirty-megabyte-line": lambda: b'{"role": "builder", "phase": "' + b"a" * 30_000_000 + b'"\n',
    "binary-garbage": lambda: bytes(range(256)) * 64,
}


def big_answer(content: str) -> dict:
    return {"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
            "content": [{"type": "tool_use", "id": "t", "name": "write_file",
                         "input": {"path": "out/a.txt", "content": content}}],
            "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}


def many_edits(n: int) -> dict:
    body = big_answer("")
    body["content"] = [{"type": "tool_use", "id": f"t{i}", "name": "write_file",
                        "input": {"path": f"out/f{i}.txt", "content": f"{i}\n"}} for i in range(n)]
    return body


GENERATED_ANSWERS: dict[str, Callable[[], object]] = {
    "apply_error--ten-megabyte-content": lambda: big_answer("x" * 10_000_000),
    "apply_error--five-thousand-edits-outside-scope": lambda: many_edits(5000),
    "apply_error--nul-bytes-in-many-paths": lambda: {**many_edits(50), "content": [
        {"type": "tool_use", "id": f"t{i}", "name": "write_file",
         "input": {"path": f"out/a.txt{chr(0) * i}", "content": "x"}} for i in range(1, 51)]},
}
# The test command for a JUnit case: writes the named file (or what a generator makes) as report.xml.
EMIT_PY = '''\
import shutil, sys
case = sys.argv[1]
if case == "--missing":
    sys.exit(0)
if case.startswith("--generate="):
    kind = case.split("=", 1)[1]
    with open("report.xml", "wb") as out:
        if kind == "over-50mb":
            out.write(b'<testsuite name="s">')
            chunk = b'<testcase classname="t" name="x"/>' * 1000
            for _ in range(51 * 1024 * 1024 // len(chunk) + 1):
                out.write(chunk)
            out.write(b"</testsuite>")
        elif kind == "ten-megabyte-failure-message":
            out.write(b'<testsuite name="s"><testcase classname="check" name="sanity"/>'
                      b'<testcase classname="out" name="a.txt"/><testcase classname="t" name="big">'
                      b'<failure message="boom">' + b"A" * 10_000_000 + b'</failure></testcase></testsuite>')
            sys.exit(1)  # the failing test fails in the baseline too: allowed
        elif kind == "deeply-nested":
            out.write(b"<testsuites>" + b"<testsuite>" * 100_000 + b"</testsuite>" * 100_000 + b"</testsuites>")
        elif kind == "utf16-with-doctype":
            out.write('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE t [<!ENTITY x "y">]>'
                      '<testsuite name="s"><testcase classname="t" name="&x;"/></testsuite>'.encode("utf-16"))
        elif kind == "nul-byte":
            out.write(b'<testsuite name="s"><testcase classname="t" name="a\\x00b"/></testsuite>')
        elif kind == "invalid-utf8":
            out.write(b'<testsuite name="s"><testcase classname="t" name="caf\\xe9"/></testsuite>')
    sys.exit(0)
shutil.copyfile(case, "report.xml")
'''
GENERATED_JUNIT = {
    "report_invalid--missing": "--missing",
    "report_invalid--over-50mb": "--generate=over-50mb",
    "report_invalid--deeply-nested-no-testcases": "--generate=deeply-nested",
    "report_invalid--utf16-with-doctype": "--generate=utf16-with-doctype",
    "report_invalid--nul-byte": "--generate=nul-byte",
    "report_invalid--invalid-utf8": "--generate=invalid-utf8",
    "complete--ten-megabyte-failure-message": "--generate=ten-megabyte-failure-message",
}


# --- the workbench and its checks ---------------------------------------------------------


class Bench:
    """One drainkit workbench shared by the module: a recorded, complete run in its database."""

    def __init__(self, root: Path, logs: Path):
        self.wb = Workbench(root)
        self.logs = logs
        self.wb.queue("existing", [PhaseScript("a")])
        assert self.cli("run", "--run-id", "existing").code == 0
        ok = builder_line("a", 1, "out/a.txt", "fine\n")
        (self.wb.plans / "answer.jsonl").write_text(json.dumps(ok) + "\n")
        (root / "emit.py").write_text(EMIT_PY)
        self.runs = 0

    def cli(self, *args: str, cwd: Path | None = None, env: dict | None = None,
            prepare: Callable[[], None] | None = None, timeout: float | None = None) -> forkcli.Finished:
        """Run autopack; with ``timeout``, a command still running after it is killed and fails the test."""
        child = forkcli.spawn(args, cwd=cwd or self.wb.root, env={**self.wb.env, **(env or {})}, logs=self.logs,
                              prepare=prepare)
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is not None and not child.poll():
            if time.monotonic() > deadline:
                child.kill()
                child.wait()
                pytest.fail(f"autopack {' '.join(args)[:200]} hung: killed after {timeout} s")
            time.sleep(0.02)
        return child.wait()

    def snapshot(self) -> dict[str, str]:
        """Every file under the workbench (database, repository, plans, worktrees) by content hash.

        SQLite's -shm index is left out, and an empty -wal counts as none: a reader may create
        both. Any write shows, either in the database file or as frames in its -wal.
        """
        found = {}
        for directory, _, names in os.walk(self.wb.root):
            for name in names:
                path = Path(directory, name)
                if name.endswith("-shm") or (name.endswith("-wal") and path.stat().st_size == 0):
                    continue
                info = path.lstat()
                if name.endswith((".db", "-wal")):  # the database: by content
                    found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:  # anything else: a write changes its size or modification time
                    found[str(path)] = f"{info.st_mode:o} {info.st_size} {info.st_mtime_ns}"
        return found

    def expect_error(self, code: int, must_contain: str | None, *args: str, **kwargs: object) -> str:
        """Run a command that must fail with ``code`` and one stderr line, changing nothing."""
        before = self.snapshot()
        done = self.cli(*args, **kwargs)
        after = self.snapshot()
        assert "Traceback" not in done.output, done.output
        assert done.code == code, f"exit {done.code}, expected {code}:\n{done.output}"
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("autopack: error: "), done.stderr
        if must_contain:
            assert must_contain.lower() in lines[0].lower(), lines[0]
        changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
        assert changed == [], f"the command changed {changed}"
        return lines[0]

    def new_run(self, plan_lines: str, cassette_lines: list[dict]) -> tuple[str, Path]:
        self.runs += 1
        run_id = f"case{self.runs:03d}"
        plan = self.wb.plans / f"{run_id}.toml"
        if "test_command" not in plan_lines:
            plan_lines += '\ntest_command = "python check.py"\njunit_xml = "report.xml"'
        plan.write_text(f'[run]\nid = "{run_id}"\ngoal = "Write out/a.txt"\nrepo = "../repo"\n'
                        f'cassette = "{run_id}.jsonl"\nbuilder = "single"\n{plan_lines}\n'
                        '[[phases]]\nid = "a"\ngoal = "Write out/a.txt"\nscope = ["out/a.txt"]\n'
                        'deliverables = ["out/a.txt"]\nmax_attempts = 1\nrequire_f2p = false\n')
        (self.wb.plans / f"{run_id}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in cassette_lines))
        return run_id, plan

    def outside_state(self) -> dict[str, str]:
        """What no run may change: the checkout, the plans, the home, the scratch file."""
        snap = {p: h for p, h in self.snapshot().items()
                if not p.startswith((str(self.wb.db.parent), str(self.wb.repo / ".git")))}
        snap["main HEAD"] = git(self.wb.repo, "rev-parse", "HEAD", env=self.wb.env)
        snap["scratch"] = str(SCRATCH_PWNED.exists())
        return snap

    def phase(self, run_id: str) -> dict:
        return self.wb.status(run_id)["phases"][0]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    SCRATCH_PWNED.unlink(missing_ok=True)
    return Bench(tmp_path_factory.mktemp("bench"), tmp_path_factory.mktemp("logs"))


# --- plans ---------------------------------------------------------------------------------


# tomllib recurses per nesting level: plan.py and config.py turn its RecursionError into their
# one-line "<file>: invalid TOML" error (the deeply-nested cases).
PLAN_CASES = files_of("plans", ".toml") + sorted(GENERATED_PLANS)


@pytest.mark.parametrize("case", PLAN_CASES, ids=lambda c: getattr(c, "stem", c))
def test_hostile_plan_is_refused_in_one_line_and_changes_nothing(bench: Bench, case: Path | str) -> None:
    if isinstance(case, Path):
        data, name = case.read_bytes(), case.stem
    else:
        data, name = GENERATED_PLANS[case](), case
    target = bench.wb.plans / f"plan-{name}.toml"
    target.write_bytes(data)
    line = bench.expect_error(2, expectation(data.decode("utf-8", "replace")), "run", str(target))
    assert str(target) in line or "run.repo" in line
    assert len(line) < 1000, line[:300]


def test_a_non_finite_number_that_got_past_validation_is_never_written_to_the_store(bench: Bench) -> None:
    """The store's JSON is strict: one bad value is refused and rolled back, instead of being written
    as JSON that SQLite calls malformed for every later reader of the store (status, drain)."""
    from dataclasses import replace

    from autopack.config import load_settings
    from autopack.launch import check_new_run, record_run
    from autopack.plan import load_plan

    plan = load_plan(bench.wb.add_run("poison", [PhaseScript("a")]))
    poisoned = replace(plan, run=replace(plan.run, flags={"x": float("nan")}))
    settings = load_settings(bench.wb.root, environ=bench.wb.env)
    with bench.wb.open_store() as store:
        with pytest.raises(Exception, match="not JSON compliant"):
            record_run(store, poisoned, check_new_run(settings, poisoned), settings)
        assert store.get_run("poison") is None
    for command in (["drain", "--dry-run"], ["status"], ["status", "existing"]):
        done = bench.cli(*command)
        assert done.code == 0, done.output


# --- FIFOs, directories and devices where a file belongs ------------------------------------

HANG_S = 60  # each case answers in about a second; before, a FIFO without a writer hung forever


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_a_plan_that_is_a_fifo_is_refused_instead_of_hanging(bench: Bench) -> None:
    plan = fifo(bench.wb.plans / "plan-fifo.toml")
    bench.expect_error(2, f"{plan}: cannot read the file: is a named pipe (FIFO), not a regular file",
                       "run", str(plan), timeout=HANG_S)
    bench.expect_error(2, "is a character device", "run", "/dev/zero", timeout=HANG_S)


def test_a_cassette_that_is_a_fifo_is_refused_instead_of_hanging(bench: Bench) -> None:
    cassette = fifo(bench.wb.plans / "cassette-fifo.jsonl")
    _, plan = bench.new_run("", [])
    bench.expect_error(2, "named pipe", "run", str(plan), "--cassette", str(cassette), timeout=HANG_S)


@pytest.mark.parametrize("name", ["autopack.toml", "pyproject.toml"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_settings_file_that_is_not_a_regular_file_is_refused_not_ignored(bench: Bench, name: str,
                                                                           kind: str) -> None:
    directory = bench.wb.root / f"cfg-{kind}-{name}"
    directory.mkdir()
    settings = fifo(directory / name) if kind == "fifo" else directory / name
    if kind == "directory":
        settings.mkdir()
    what = "is a named pipe (FIFO)" if kind == "fifo" else "is a directory"
    bench.expect_error(2, f"{settings}: {what}", "status", cwd=directory, timeout=HANG_S)


def test_record_into_a_fifo_is_refused(bench: Bench) -> None:
    plan = bench.wb.plans / "live-plan.toml"
    plan.write_text('[run]\nid = "live-record"\ngoal = "g"\nrepo = "../repo"\n\n'
                    '[[phases]]\nid = "a"\ngoal = "Write out/a.txt"\n')
    target = fifo(bench.wb.plans / "record-fifo.jsonl")
    bench.expect_error(2, "named pipe", "run", str(plan), "--record", str(target), timeout=HANG_S)


def test_an_output_fifo_nobody_reads_is_an_error_and_one_somebody_reads_gets_the_report(bench: Bench) -> None:
    import threading

    nowhere = fifo(bench.wb.root / "junit-fifo.xml")
    empty_db = ["--db", str(bench.wb.root / "no-such-state" / "autopack.db")]
    bench.expect_error(2, "that no process is reading", "drain", *empty_db, "--junit-xml", str(nowhere),
                       timeout=HANG_S)
    bench.wb.queue("fifo-pair", [PhaseScript("a")])
    bench.expect_error(2, "that no process is reading", "ab-test", "--pair", "existing:fifo-pair",
                       "--allow-mismatch", "--json", str(nowhere), timeout=HANG_S)

    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(nowhere.read_bytes()), daemon=True)
    reader.start()
    done = bench.cli("drain", *empty_db, "--junit-xml", str(nowhere), timeout=HANG_S)
    reader.join(HANG_S)
    assert done.code == 0, done.output
    assert received and b"<testsuites" in received[0]


# --- cassettes -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", files_of("cassettes", ".jsonl") + sorted(GENERATED_CASSETTES),
                         ids=lambda c: getattr(c, "stem", c))
def test_hostile_cassette_is_refused_before_anything_is_recorded(bench: Bench, case: Path | str) -> None:
    data = case.read_bytes() if isinstance(case, Path) else GENERATED_CASSETTES[case]()
    cassette = bench.wb.plans / "hostile-cassette.jsonl"
    cassette.write_bytes(data)
    _, plan = bench.new_run("", [])
    line = bench.expect_error(2, None, "run", str(plan), "--cassette", str(cassette))
    assert str(cassette) in line and len(line) < 2000
    cassette.unlink()


# --- LLM answers ---------------------------------------------------------------------------


def cassette_lines(answer: object) -> list[dict]:
    """An answer file: a Messages body (served with 200), a {status, body} response, or a list of them."""
    answers = answer if isinstance(answer, list) else [answer]
    lines = []
    for item in answers:
        response = item if isinstance(item, dict) and "status" in item else {"status": 200, "body": item}
        lines.append({"role": "builder", "phase": "a", "attempt": 1, "response": {"headers": {}, **response}})
    return lines


# The SDK builds a Message from any JSON without validating it: llm/client.py's message_problem
# checks every answer's shape where it enters (the ledger transport), so a body that is not a
# Messages API message (a text block without text, usage out of range or negative, an integer
# stop_reason, HTTP 204, ...) fails the attempt as malformed, with its usage recorded clamped.
ANSWER_CASES = list(files_of("answers", ".json")) + sorted(GENERATED_ANSWERS)
LEDGER_TOTALS = ("SELECT coalesce(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0), "
                 "coalesce(sum(cost_usd), 0) FROM llm_calls")


@pytest.mark.parametrize("case", ANSWER_CASES, ids=lambda c: getattr(c, "stem", c))
def test_hostile_answer_fails_the_attempt_and_applies_nothing(bench: Bench, case: Path | str) -> None:
    name = case.stem if isinstance(case, Path) else case
    answer = json.loads(case.read_text()) if isinstance(case, Path) else GENERATED_ANSWERS[case]()
    kind = name.split("--")[0]
    run_id, plan = bench.new_run("", cassette_lines(answer))
    before = bench.outside_state()
    [ledger_before] = query(bench.wb.db, LEDGER_TOTALS)
    done = bench.cli("run", str(plan))
    assert "Traceback" not in done.output, done.output
    assert done.code == 1, done.output
    assert done.stderr == "", done.stderr
    calls = query(bench.wb.db, "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                  "coalesce(cost_usd, 0) FROM llm_calls WHERE run_id = ?", run_id)
    assert calls, "every answer is a ledger row"
    assert all(0 <= count <= 10**9 for call in calls for count in call[:4]) and all(c[4] >= 0 for c in calls), calls
    [ledger_after] = query(bench.wb.db, LEDGER_TOTALS)
    assert all(after >= before for after, before in zip(ledger_after, ledger_before)), (ledger_before, ledger_after)
    phase = bench.phase(run_id)
    assert (phase["state"], phase["last_failure"]["kind"]) == ("failed", kind), phase["last_failure"]
    message = phase["last_failure"]["message"]
    assert "\n" not in message and len(message) < 5000, message[:300]
    assert phase["commit"] is None
    assert git(bench.wb.repo, "rev-list", "--count", f"main..autopack/{run_id}", env=bench.wb.env) == "0"
    worktree = bench.wb.db.parent / "worktrees" / run_id
    assert git(worktree, "status", "--porcelain", "--untracked-files=all", env=bench.wb.env) == ""
    assert not (worktree / "out" / "a.txt").exists()
    assert bench.outside_state() == before


@pytest.mark.parametrize("path, reason", [
    ("out/" + "d/" * 3000 + "a.txt", "the path is too long: "),
    ("out/" + "n" * 300 + ".txt", "a name in the path is 304 bytes; names may have at most 232 bytes here"),
])
def test_a_path_too_long_for_the_file_system_fails_the_attempt_as_apply_error(bench: Bench, path: str,
                                                                               reason: str) -> None:
    """ENAMETOOLONG is the edit's fault (an apply_error naming the limit), not "free space" (exit 4)."""
    answer = big_answer("x")
    answer["content"][0]["input"]["path"] = path
    run_id, plan = bench.new_run("", cassette_lines(answer))
    plan.write_text(plan.read_text().replace('scope = ["out/a.txt"]', 'scope = ["out/"]'))
    done = bench.cli("run", str(plan))
    assert (done.code, done.stderr) == (1, ""), done.output
    failure = bench.phase(run_id)["last_failure"]
    assert failure["kind"] == "apply_error" and reason in failure["message"], failure
    assert len(failure["message"]) < 1000


# --- JUnit XML -----------------------------------------------------------------------------


JUNIT_CASES = [(case.stem, str(case)) for case in files_of("junit", ".xml")] + sorted(GENERATED_JUNIT.items())


@pytest.mark.parametrize("name, source", JUNIT_CASES, ids=[name for name, _ in JUNIT_CASES])
def test_hostile_junit_report_is_judged_safely(bench: Bench, name: str, source: str) -> None:
    expected = name.split("--")[0]
    emit = bench.wb.root / "emit.py"
    ok = builder_line("a", 1, "out/a.txt", "fine\n")
    run_id, plan = bench.new_run(f'test_command = "python {emit} {source}"\njunit_xml = "report.xml"', [ok])
    peak = forkcli.PeakRss()
    done = bench.cli("run", str(plan), prepare=peak.arm)
    assert "Traceback" not in done.output, done.output
    phase = bench.phase(run_id)
    if expected == "complete":
        assert done.code == 0 and phase["state"] == "complete", done.output
    else:
        assert done.code == 1, done.output
        assert (phase["state"], phase["last_failure"]["kind"]) == ("failed", expected), phase["last_failure"]
    growth = peak.read()
    assert growth < 300 * 1024, f"autopack's resident memory grew by {growth} KiB"
    with bench.wb.open_store() as store:
        for suite in store.phases(run_id):
            for attempt in store.attempts(suite.pk):
                assert len(json.dumps(attempt.decision or {})) < 200_000


# --- settings ------------------------------------------------------------------------------


GENERATED_SETTINGS = {
    "non-utf8": b'builder_model = "caf\xe9"\n',
    "deeply-nested-array": b"env_allow = " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
}
SETTINGS_CASES = files_of("config", ".toml") + sorted(GENERATED_SETTINGS)


@pytest.mark.parametrize("case", SETTINGS_CASES, ids=lambda c: getattr(c, "stem", c))
def test_hostile_settings_file_is_refused_in_one_line(bench: Bench, case: Path | str) -> None:
    data = case.read_bytes() if isinstance(case, Path) else GENERATED_SETTINGS[case]
    case = case if isinstance(case, Path) else Path(f"{case}.toml")
    directory = bench.wb.root / f"cfg-{case.stem}"
    directory.mkdir()
    target = directory / ("pyproject.toml" if case.stem.startswith("pyproject--") else "autopack.toml")
    target.write_bytes(data)
    must = expectation(data.decode("utf-8", "replace"))
    line = bench.expect_error(2, must, "status", cwd=directory)
    assert str(target) in line


ENV_CASES = json.loads((HOSTILE / "config" / "env-cases.json").read_text()) | {
    "prices-100k-chars": [{"AUTOPACK_PRICES": "x" * 100_000}, "AUTOPACK_PRICES: 'xxx"],
    "max-attempts-100k-digits": [{"AUTOPACK_MAX_ATTEMPTS": "9" * 100_000}, "(100000 chars) is not an integer"],
}


@pytest.mark.parametrize("name", sorted(ENV_CASES))
def test_hostile_environment_setting_is_refused_in_one_line(bench: Bench, name: str) -> None:
    variables, must = ENV_CASES[name]
    line = bench.expect_error(2, must, "status", env=variables)
    assert len(line) < 1000, line[:300]


# --- command-line values -------------------------------------------------------------------

HUGE = str(10**20)
LONG_ID = "a" * 100_000
# Every numeric option has a range and every id option refuses an empty value (an unset CI
# variable: `--run-id "$RUN"`), so none of these reaches SQLite, a timedelta or "drain everything".
OPTION_CASES = {
    "status-limit-huge": (["status", "--limit", HUGE], "--limit"),
    "status-limit-negative": (["status", "--limit", "-1"], "--limit"),
    "status-waiting-after-inf": (["status", "--waiting-after", "inf"], "--waiting-after"),
    "status-waiting-after-1e308": (["status", "--waiting-after", "1e308"], "--waiting-after"),
    "status-waiting-after-nan": (["status", "--waiting-after", "nan"], "--waiting-after"),
    "drain-batch-size-huge": (["drain", "--batch-size", HUGE], "--batch-size"),
    "drain-zero-yield-huge": (["drain", "--max-consecutive-zero-yield", HUGE], "--max-consecutive-zero-yield"),
    "drain-max-minutes-nan": (["drain", "--max-minutes", "nan"], "--max-minutes"),
    "drain-max-minutes-huge": (["drain", "--max-minutes", "1e308"], "--max-minutes"),
    "drain-max-cost-inf": (["drain", "--max-cost", "inf"], "--max-cost"),
    "drain-workers-huge": (["drain", "--workers", "100000"], "--workers"),
    "run-max-cost-nan": (["run", "--run-id", "existing", "--max-cost", "nan"], "--max-cost"),
    "ab-test-seed-huge": (["ab-test", "--pair", "existing:existing", "--seed", str(10**30)], "--seed"),
    "ab-test-resamples-huge": (["ab-test", "--pair", "existing:existing", "--resamples", HUGE], "--resamples"),
    "drain-run-id-empty": (["drain", "--run-id", ""], "--run-id"),
    "drain-run-id-blank": (["drain", "--run-id", "  "], "--run-id"),
    "drain-dry-run-run-id-empty": (["drain", "--dry-run", "--run-id", ""], "--run-id"),
    "drain-one-phase-id-empty": (["drain-one", "--run-id", "existing", "--phase-id", ""], "--phase-id"),
    "run-run-id-empty": (["run", "--run-id", ""], "--run-id"),
    "status-stats-run-id-empty": (["status", "--stats", "--run-id", ""], "--run-id"),
    "ab-test-control-empty": (["ab-test", "--control", "", "--treatment", "existing"], "--control"),
    "ab-test-control-empty-item": (["ab-test", "--control", "existing,", "--treatment", "existing,existing"],
                                   "--control"),
    "ab-test-pair-empty-side": (["ab-test", "--pair", ":existing"], "--pair"),
    "status-run-id-100k-chars": (["status", LONG_ID], "(100000 chars)"),
    "drain-run-id-100k-chars": (["drain", "--run-id", LONG_ID], "(100000 chars)"),
    "drain-one-phase-id-100k-chars": (["drain-one", "--run-id", "existing", "--phase-id", LONG_ID],
                                      "(100000 chars)"),
}


SIX_KB = "/tmp/" + "d/" * 3000 + "x"  # longer than PATH_MAX: no such file can exist
PATH_CASES = {
    "plan": ["run", SIX_KB],
    "cassette": ["run", "--run-id", "existing", "--cassette", SIX_KB],
    "db": ["status", "--db", SIX_KB],
    "db-of-a-drain": ["drain", "--db", SIX_KB],
    "junit-xml": ["drain", "--db", "/tmp/autopack-no-such-dir/autopack.db", "--junit-xml", SIX_KB],
    "init": ["init", SIX_KB],
    "ab-test-json": ["ab-test", "--pair", "existing:long-path-pair", "--allow-mismatch", "--json", SIX_KB],
}


@pytest.mark.parametrize("name", sorted(PATH_CASES))
def test_a_path_too_long_to_exist_is_named_so_in_a_short_line(bench: Bench, name: str) -> None:
    if name == "ab-test-json":
        bench.wb.queue("long-path-pair", [PhaseScript("a")])
    line = bench.expect_error(2, "File name too long", *PATH_CASES[name])
    assert "(6006 chars)" in line and len(line) < 1000, line[:300]


@pytest.mark.parametrize("name", sorted(OPTION_CASES))
def test_hostile_option_value_is_a_one_line_usage_error(bench: Bench, name: str) -> None:
    args, must = OPTION_CASES[name]
    line = bench.expect_error(2, must, *args)
    assert line.endswith("--help)") and len(line) < 1000, line[:300]


def test_a_deeply_nested_json_setting_is_refused_in_one_line_naming_it(bench: Bench) -> None:
    """The JSON parser recurses per level: its RecursionError is the setting's error, not autopack's bug."""
    bench.expect_error(2, "AUTOPACK_PRICES", "status", env={"AUTOPACK_PRICES": "[" * 50_000 + "]" * 50_000})


# --- databases -----------------------------------------------------------------------------


def valid_db(bench: Bench) -> bytes:
    with closing(sqlite3.connect(bench.wb.db, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return bench.wb.db.read_bytes()


def make_db(kind: str, bench: Bench, path: Path) -> None:
    if kind == "random-bytes":
        path.write_bytes(os.urandom(64 * 1024))
    elif kind == "text-file":
        path.write_text("this is not a database\n")
    elif kind == "truncated":
        path.write_bytes(valid_db(bench)[:3000])
    elif kind == "header-only-garbage":
        path.write_bytes(valid_db(bench)[:100] + os.urandom(8192))
    elif kind == "foreign-schema":
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, password TEXT)")
    elif kind in ("from-a-newer-autopack", "needs-migrating"):
        path.write_bytes(valid_db(bench))
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            if kind == "from-a-newer-autopack":
                conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_future', '2030-01-01')")
            else:
                conn.execute("DELETE FROM _migrations WHERE name = (SELECT max(name) FROM _migrations)")
    elif kind == "a-directory":
        path.mkdir()
    else:
        raise AssertionError(kind)


DB_CASES = ["random-bytes", "text-file", "truncated", "header-only-garbage", "foreign-schema",
            "from-a-newer-autopack", "needs-migrating", "a-directory"]
DB_MESSAGES = {"foreign-schema": "not an autopack database", "from-a-newer-autopack": "newer autopack",
               "needs-migrating": "autopack migrate", "a-directory": "a directory, not a regular file"}
DB_EXIT_CODES = {"a-directory": 2}  # a path that is not a file is bad usage; the rest exit 4


@pytest.mark.parametrize("command", ["status", "drain"])
@pytest.mark.parametrize("kind", DB_CASES)
def test_broken_database_exits_4_in_one_line_and_is_left_alone(bench: Bench, kind: str, command: str) -> None:
    path = bench.wb.root / "dbs" / f"{kind}-{command}.db"
    path.parent.mkdir(exist_ok=True)
    make_db(kind, bench, path)
    bench.expect_error(DB_EXIT_CODES.get(kind, 4), DB_MESSAGES.get(kind), command, "--db", str(path))


def read_only(path: Path) -> Callable[[], None]:
    """Make ``path`` unwritable, even for root (chattr +i); returns the undo."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a file read-only")
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    mode = path.stat().st_mode
    path.chmod(mode & 0o555)
    return lambda: path.chmod(mode)


@pytest.mark.parametrize("what", ["file", "directory"])
def test_read_only_database_exits_4_in_one_line_and_is_left_alone(bench: Bench, what: str) -> None:
    state = bench.wb.root / f"ro-{what}"
    state.mkdir()
    db = state / "autopack.db"
    db.write_bytes(valid_db(bench))
    _, plan = bench.new_run("", [])
    undo = read_only(db if what == "file" else state)
    try:
        if what == "file":  # reads work; the first write is refused
            assert bench.cli("status", "--db", str(db)).code == 0
        else:  # SQLite cannot even read a WAL database without creating its -shm file beside it
            bench.expect_error(4, "make its directory writable", "status", "--db", str(db))
        line = bench.expect_error(4, str(db), "run", str(plan), "--queue-only", "--db", str(db))
        assert len(line) < 400
    finally:
        undo()


def test_a_database_locked_by_another_process_is_waited_for(bench: Bench) -> None:
    """A writer holding BEGIN EXCLUSIVE for a while: autopack waits (busy timeout) and succeeds."""
    _, plan = bench.new_run("", [])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\ntime.sleep(1.5)\nc.execute('COMMIT')\n", str(bench.wb.db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        done = bench.cli("run", str(plan), "--queue-only")
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert done.code == 0, done.output
    assert "database is locked" not in done.output and "Traceback" not in done.output
    assert waited > 0.5  # it waited for the lock rather than failing


def test_a_garbage_wal_file_is_ignored(bench: Bench) -> None:
    db = bench.wb.root / "walcase" / "autopack.db"
    db.parent.mkdir()
    db.write_bytes(valid_db(bench))
    Path(f"{db}-wal").write_bytes(os.urandom(32 * 1024))
    done = bench.cli("status", "existing", "--json", "--db", str(db))
    assert done.code == 0, done.output
    assert json.loads(done.stdout)["run"]["state"] == "complete"
