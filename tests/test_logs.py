"""`autopack logs`: every test run of a run, and its whole log or JUnit XML, from this machine's
files where it ran the tests, else from the store (contract 6: what other machines need lives in
the store). The calc example is run once with the real CLI; "another machine" is the same store
with the state directory's logs and reports gone or replaced.
"""

from __future__ import annotations

import json
import shutil
import sys
import zlib
from pathlib import Path

import pytest

from autopack.report import logs
from autopack.store import open_reader, open_store
from autopack.test_logs import STORED_LOG_BYTES, files_to_store, read_own_file
from autopack.testrun import run_tests

RUN = "calc-demo"


@pytest.fixture(scope="module")
def calc(tmp_path_factory, ran_calc_example) -> Path:
    return ran_calc_example(tmp_path_factory.mktemp("logs"))


@pytest.fixture
def elsewhere(calc: Path, tmp_path: Path):
    """The calc run as another machine sees it: the state directory's logs and reports are not there."""
    runs = calc / ".autopack" / "runs"
    away = tmp_path / "runs"
    shutil.move(runs, away)
    yield away / RUN
    shutil.rmtree(runs, ignore_errors=True)
    shutil.move(away, runs)


def listed(autopack, project: Path) -> list[dict]:
    done = autopack("logs", RUN, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["test_runs"]


def test_the_list_names_every_test_run_of_the_run_and_where_its_log_is(calc, autopack):
    found = listed(autopack, calc)
    assert [(e["phase"], e["attempt"], e["kind"]) for e in found] == [
        ("add-power", 1, "baseline"), ("add-power", 1, "baseline_rerun"), ("add-power", 1, "attempt"),
        ("add-power", 1, "f2p"), ("add-modulo", 1, "attempt"), ("add-modulo", 1, "rerun"),
        ("add-modulo", 2, "attempt"), ("add-modulo", 2, "f2p"), ("document-operations", 1, "attempt")]
    assert {(e["log"], e["junit"]) for e in found} == {("here", "stored")}
    first = found[0]
    assert first["counts"] == {"passed": 7, "failed": 1, "errors": 0, "skipped": 0, "total": 8}
    done = autopack("logs", RUN, cwd=calc)
    assert done.returncode == 0 and "baseline_rerun" in done.stdout, done.stderr
    assert f"autopack logs {RUN} PHASE" in done.stdout


def test_a_phase_s_log_is_printed_whole_from_this_machine(calc, autopack):
    [entry] = [e for e in listed(autopack, calc) if (e["phase"], e["attempt"], e["kind"]) == ("add-modulo", 1, "attempt")]
    done = autopack("logs", RUN, "add-modulo", "--attempt", "1", "--kind", "attempt", cwd=calc)
    assert done.returncode == 0, done.stderr
    assert done.stdout == Path(entry["log_path"]).read_text()
    assert "FAILED tests/test_ops.py::test_divide" in done.stdout
    # without --attempt: the last attempt, every test run of it under a header
    done = autopack("logs", RUN, "add-modulo", cwd=calc)
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("==> ")]
    assert [h.split(":")[0] for h in headers] == ["==> attempt 2, attempt", "==> attempt 2, f2p"]
    assert f"from {calc}/.autopack/runs/{RUN}/logs/attempt-" in headers[0]


def test_on_another_machine_the_log_and_the_junit_xml_come_from_the_store(calc, autopack, elsewhere):
    here = {(e["phase"], e["attempt"], e["kind"]): e for e in listed(autopack, calc)}
    assert {e["log"] for e in here.values()} == {"stored"}
    entry = here[("add-modulo", 1, "attempt")]
    original = elsewhere / "logs" / Path(entry["log_path"]).name
    done = autopack("logs", RUN, "add-modulo", "--attempt", "1", "--kind", "attempt", cwd=calc)
    assert done.returncode == 0, done.stderr
    assert done.stdout == original.read_text()
    done = autopack("logs", RUN, "add-modulo", "--attempt", "1", "--kind", "attempt", "--junit", cwd=calc)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (elsewhere / "junit" / original.with_suffix(".xml").name).read_text()
    assert 'failures="2"' in done.stdout and "test_divide" in done.stdout
    done = autopack("logs", RUN, "add-power", cwd=calc)
    assert done.returncode == 0 and "; from the store) <==" in done.stdout, done.stderr


def test_a_local_file_that_is_not_the_recorded_log_is_not_shown(calc, autopack, elsewhere):
    """A machine with a file at the recorded path (another store's run of the same name, say)."""
    entry = next(e for e in listed(autopack, calc) if e["kind"] == "baseline")
    local = Path(entry["log_path"])
    local.parent.mkdir(parents=True)
    local.write_text("some other run's log\n")
    done = autopack("logs", RUN, "add-power", "--kind", "baseline", cwd=calc)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (elsewhere / "logs" / local.name).read_text()


@pytest.mark.parametrize("args, message", [
    (["--attempt", "1"], "--attempt 1 needs a PHASE"),
    (["--kind", "f2p"], "--kind needs a PHASE or --land"),
    (["--land"], f"run '{RUN}' has no land gate test runs"),
    (["add-power", "--land"], "--land and PHASE 'add-power' name different test runs"),
    (["add-power", "--kind", "gate"], "--kind gate: attempt 1 of phase 'add-power' has test runs of kind "
                                      "attempt, baseline, baseline_rerun, f2p"),
    (["add-power", "--attempt", "5"], "phase 'add-power' of run 'calc-demo' has no test runs in attempt 5"),
    (["no-such-phase"], f"phase 'no-such-phase' of run '{RUN}' has no test runs; `autopack logs {RUN}` lists"),
    (["add-power", "--json"], "--json lists the test runs"),
    (["add-power", "--junit"], "more than one"),
])
def test_a_choice_that_names_no_test_run_is_one_line_and_exit_2(calc, autopack, args, message):
    done = autopack("logs", RUN, *args, cwd=calc)
    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_an_unknown_run_is_exit_2(calc, autopack):
    done = autopack("logs", "nope", cwd=calc)
    assert done.returncode == 2 and "no run 'nope'" in done.stderr


def test_a_log_the_store_cannot_hold_whole_is_its_head_and_the_output_s_end(tmp_path):
    """A real suite printing 1.5 MB: the store keeps the first MiB; `logs` elsewhere adds the output's
    end, which the store keeps too."""
    script = tmp_path / "noisy.py"
    script.write_text("import sys\nfor n in range(75_000):\n    print(f'line {n:06d} of the suite')\n"
                      "print('THE END')\n")
    log, junit = tmp_path / "logs" / "attempt-1-attempt.log", tmp_path / "junit" / "attempt-1-attempt.xml"
    report = run_tests(f"{sys.executable} {script}", tmp_path, timeout_s=60, log_path=log, junit_path=junit)
    files = files_to_store(log, junit)
    assert files.log_bytes == log.stat().st_size > STORED_LOG_BYTES and files.junit is None
    assert zlib.decompress(files.log) == log.read_bytes()[:STORED_LOG_BYTES]
    db = tmp_path / "autopack.db"
    with open_store(db) as store:
        run_id = _record_run(store, tmp_path)
        store.record_test_run(run_id, None, "land", None, report, log, files)
    log.unlink()
    with open_reader(db) as reader:
        [entry] = logs.test_runs(reader, run_id)
        text, where = logs.log_text(reader, entry)
    assert (entry["log"], entry["junit"], where) == ("stored, cut", "none", "the store")
    assert text.startswith("line 000000 of the suite\n") and text.endswith("THE END\n")
    assert f"the store keeps the log's first {STORED_LOG_BYTES:,} of {files.log_bytes:,} bytes" in text


def test_a_report_or_log_the_suite_made_a_symlink_is_not_copied_into_the_store(tmp_path):
    """The suite writes where autopack looks for its report; a symlink there must not carry another
    file (a key, a credential) into a store other machines read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private key\n")
    command = f'ln -s {secret} "$AUTOPACK_JUNIT_FILE"; echo ran'
    log, junit = tmp_path / "logs" / "s.log", tmp_path / "junit" / "s.xml"
    run_tests(command, tmp_path, timeout_s=60, log_path=log, junit_path=junit)
    assert junit.is_symlink()
    files = files_to_store(log, junit)
    assert files.junit is None and zlib.decompress(files.log) == b"ran\n"
    log.unlink()
    log.symlink_to(secret)
    assert read_own_file(log) == (None, 0)
    assert files_to_store(log, junit) is None


def test_a_project_junit_file_is_kept_beside_the_log_and_none_outside_the_worktree_is_touched(tmp_path):
    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    xml = '<testsuite name="s" tests="1"><testcase classname="a" name="t"/></testsuite>'
    log, junit = tmp_path / "logs" / "s.log", tmp_path / "junit" / "s.xml"
    report = run_tests(f"printf '{xml}' > reports/out.xml", project, timeout_s=60, log_path=log,
                       junit_path=junit, junit_xml="reports/out.xml")
    assert [o.test_id for o in report.outcomes] == ["a::t"] and junit.read_text() == xml
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "out.xml").write_text(xml)
    shutil.rmtree(project / "reports")
    (project / "reports").symlink_to(outside)
    report = run_tests("true", project, timeout_s=60, log_path=log, junit_path=junit, junit_xml="reports/out.xml")
    assert (report.outcomes, report.junit_error) == ((), "no JUnit XML was written")
    assert (outside / "out.xml").read_text() == xml and not junit.exists()  # not deleted as stale, not read


def test_a_project_writing_several_junit_files_has_them_kept_as_one_document(tmp_path):
    """One report per package or class (Maven's surefire-reports, go-junit-report per package): all of
    them are kept, merged, where the store's copy is taken from; what is not JUnit is left out."""
    from autopack.junit import parse_junit

    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    one = '<testsuite name="a" tests="1"><testcase classname="a" name="t"/></testsuite>'
    two = ('<testsuites><testsuite name="b" tests="2"><testcase classname="b" name="u"/>'
           '<testcase classname="b" name="v"><failure message="boom">trace</failure></testcase></testsuite></testsuites>')
    log, junit = tmp_path / "logs" / "s.log", tmp_path / "junit" / "s.xml"
    report = run_tests(f"printf '{one}' > reports/1.xml && printf '{two}' > reports/2.xml && printf '<html/>' > reports/3.xml",
                       project, timeout_s=60, log_path=log, junit_path=junit, junit_xml="reports")
    assert report.junit_error and "reports/3.xml" in report.junit_error  # the malformed one is still reported
    kept = parse_junit([junit])
    assert [(o.test_id, o.outcome, o.message) for o in kept] == [
        ("a::t", "passed", ""), ("b::u", "passed", ""), ("b::v", "failed", "boom\ntrace")]
    assert files_to_store(log, junit).junit is not None


def _record_run(store, root: Path) -> str:
    """A run in the store to hang test runs on (its plan is not carried out)."""
    from autopack.plan import plan_from_dict

    plan = plan_from_dict({"run": {"id": "noisy", "goal": "g"}, "phases": [{"id": "p", "goal": "g"}]},
                          root / "plan.toml")
    return store.create_run(plan=plan, repo_root=root, subdir="", base_commit="0" * 40, branch="autopack/noisy",
                            worktree=root / "noisy").id
