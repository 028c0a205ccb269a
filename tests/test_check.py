"""`autopack check` through the real CLI: what it finds, the fix for each gap, its exit code and JSON."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from conftest import git
from test_sandbox import logging_bwrap, usable_bwrap

SECRET = "sk-ant-api03-check-never-prints-this"
NAMES = ["git", "repository", "test_command", "sandbox", "store", "api_key"]


def check(autopack, cwd: Path, *args: str, env=None) -> tuple[int, dict]:
    done = autopack("check", *args, "--json", cwd=cwd, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict) -> dict[str, dict]:
    return {finding["name"]: finding for finding in report["checks"]}


def test_the_example_is_ready_and_the_json_is_stable(calc_project, autopack):
    code, report = check(autopack, calc_project, "plan.toml")
    assert code == 0 and report["schema"] == 1 and report["ready"] is True
    found = by_name(report)
    assert [name for name in found if not name.startswith("model ")] == NAMES  # the order of the screen
    assert all(set(f) == {"name", "status", "detail", "fix", "data"} for f in report["checks"])
    assert all(f["status"] == "ok" and f["fix"] is None for f in report["checks"]), report
    assert found["repository"]["data"]["commit"] == git(calc_project, "rev-parse", "HEAD")
    assert found["test_command"]["data"]["command"] == "python -m pytest -q"
    store = found["store"]["data"]
    assert (store["kind"], store["path"], store["applied"], store["unknown"]) == (
        "sqlite", str(calc_project / ".autopack" / "autopack.db"), 0, [])
    assert found["api_key"]["data"] == {"present": False, "cassette": True}
    assert found["model claude-sonnet-5-5"]["data"]["prices_per_mtok"]["input"] == 3.0
    assert not (calc_project / ".autopack").exists()  # check records nothing


def test_the_text_screen_says_ready_and_never_prints_the_key(calc_project, autopack, base_env):
    env = {**base_env, "ANTHROPIC_API_KEY": SECRET, "COLUMNS": "160"}
    done = autopack("check", cwd=calc_project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ANTHROPIC_API_KEY is set (not shown)" in done.stdout and "ready: a run can start here" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    json_done = autopack("check", "--json", cwd=calc_project, env=env)
    assert SECRET not in json_done.stdout and json.loads(json_done.stdout)["ready"] is True


def test_no_key_without_a_cassette_is_a_problem_with_its_fix(calc_project, autopack):
    code, report = check(autopack, calc_project)
    assert code == 4 and report["ready"] is False
    key = by_name(report)["api_key"]
    assert key["status"] == "problem" and "export ANTHROPIC_API_KEY" in key["fix"]
    done = autopack("check", cwd=calc_project)
    assert done.returncode == 4 and "FAIL" in done.stdout and "not ready" in done.stdout


def test_outside_a_repository(tmp_path, autopack):
    code, report = check(autopack, tmp_path)
    assert code == 4
    found = by_name(report)
    assert found["repository"]["status"] == "problem" and "not inside a git repository" in found["repository"]["detail"]
    assert found["test_command"]["status"] == "problem"


def test_run_tests_runs_the_suite_in_a_scratch_worktree(calc_project, autopack, base_env, tmp_path):
    wrapper = logging_bwrap(tmp_path / "wrapper", usable_bwrap())
    env = {**base_env, "AUTOPACK_SANDBOX_BWRAP": str(wrapper)}
    before = git(calc_project, "worktree", "list")
    for args in ([], ["--sandbox", "bwrap"]):
        code, report = check(autopack, calc_project, "plan.toml", "--run-tests", *args, env=env)
        suite = by_name(report)["suite"]
        assert code == 0 and suite["status"] == "ok", suite
        assert suite["data"]["counts"] == {"passed": 7, "failed": 1, "error": 0, "skipped": 0, "total": 8}
        assert suite["data"]["sandboxed"] is bool(args)
        sandbox = by_name(report)["sandbox"]
        if args and os.getuid() == 0:
            assert sandbox["status"] == "warning" and "as root" in sandbox["detail"] and sandbox["fix"]
        elif args:
            assert sandbox["status"] == "ok" and sandbox["detail"].startswith("bwrap (")
    suites = [call for call in (wrapper.parent / "calls").read_text().splitlines() if "/bin/sh -c" in call]
    assert len(suites) == 1 and "--unshare-all" in suites[0]  # the sandboxed check's suite, and only that one
    assert git(calc_project, "worktree", "list") == before
    assert git(calc_project, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_suite_without_per_test_results_is_a_problem(calc_project, autopack):
    plan = calc_project / "plan.toml"
    plan.write_text(plan.read_text().replace('test_command = "python -m pytest -q"', 'test_command = "true"'))
    git(calc_project, "commit", "-qam", "a command without reports")
    code, report = check(autopack, calc_project, "plan.toml", "--run-tests")
    suite = by_name(report)["suite"]
    assert code == 4 and suite["status"] == "problem" and "no per-test results" in suite["detail"]
    assert "junit_xml" in suite["fix"]


def test_a_missing_toolchain_is_named(calc_project, autopack):
    plan = calc_project / "plan.toml"
    plan.write_text(plan.read_text().replace('test_command = "python -m pytest -q"',
                                             'test_command = "FOO=1 no-such-runner --all"'))
    code, report = check(autopack, calc_project, "plan.toml")
    test = by_name(report)["test_command"]
    assert code == 4 and test["status"] == "problem" and "'no-such-runner' is not on PATH" in test["detail"]


def test_an_unusable_sandbox_is_a_problem_with_its_fix(calc_project, autopack, base_env, tmp_path):
    env = {**base_env, "AUTOPACK_SANDBOX_BWRAP": str(tmp_path / "missing" / "bwrap")}
    code, report = check(autopack, calc_project, "plan.toml", "--sandbox", "bwrap", env=env)
    sandbox = by_name(report)["sandbox"]
    assert code == 4 and sandbox["status"] == "problem"
    assert "no bubblewrap executable" in sandbox["detail"] and "apt-get install bubblewrap" in sandbox["fix"]
    code, report = check(autopack, calc_project, "plan.toml", env=env)  # sandbox = "none": says so, runs
    sandbox = by_name(report)["sandbox"]
    assert code == 0 and sandbox["status"] == "ok" and "bubblewrap cannot confine them here" in sandbox["detail"]


def test_a_database_that_needs_migrating(calc_project, autopack):
    done = autopack("migrate", cwd=calc_project)
    assert done.returncode == 0, done.stderr
    code, report = check(autopack, calc_project, "plan.toml")
    assert code == 0 and "schema current" in by_name(report)["store"]["detail"]
    db = calc_project / ".autopack" / "autopack.db"
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT name FROM _migrations ORDER BY rowid DESC LIMIT 1").fetchone()[0]
        conn.execute("DELETE FROM _migrations WHERE name = ?", (last,))
    code, report = check(autopack, calc_project, "plan.toml")
    store = by_name(report)["store"]
    assert code == 4 and store["status"] == "problem" and store["data"]["pending"] == [last]
    assert store["fix"].startswith("autopack migrate --db")


def test_deprecated_and_unpriced_models_are_warnings(calc_project, autopack, base_env):
    from anthropic._data import DEPRECATED_MODELS

    deprecated = next(iter(DEPRECATED_MODELS))
    env = {**base_env, "AUTOPACK_DOCTOR_MODEL": deprecated, "AUTOPACK_ESCALATION_MODEL": "my-own-model"}
    code, report = check(autopack, calc_project, "plan.toml", env=env)
    assert code == 0 and report["ready"] is True
    found = by_name(report)
    old, unpriced = found[f"model {deprecated}"], found["model my-own-model"]
    assert old["status"] == "warning" and "end-of-life" in old["detail"] and old["data"]["deprecated"] is True
    assert unpriced["status"] == "warning" and 'prices."my-own-model"' in unpriced["fix"]


def test_a_postgresql_store_reports_the_server_and_its_schema_or_the_fix(calc_project, autopack, pg_url):
    code, report = check(autopack, calc_project, "plan.toml", "--db", pg_url)
    store = by_name(report)["store"]
    assert code == 0 and store["status"] == "ok" and store["data"]["kind"] == "postgresql", store
    assert store["detail"].startswith(f"PostgreSQL {store['data']['server_version']} at {pg_url}: no schema yet")
    assert autopack("migrate", "--db", pg_url, cwd=calc_project).returncode == 0
    code, report = check(autopack, calc_project, "plan.toml", "--db", pg_url)
    from autopack.store.migrations import MIGRATIONS

    assert code == 0 and f"schema current ({len(MIGRATIONS)} migrations)" in by_name(report)["store"]["detail"]
    unreachable = "postgresql://u:pw@/x?host=/nonexistent"
    code, report = check(autopack, calc_project, "plan.toml", "--db", unreachable)
    store = by_name(report)["store"]
    assert code == 4 and store["status"] == "problem" and "pw" not in json.dumps(report)
    assert "cannot use the PostgreSQL server" in store["detail"] and store["fix"].startswith("start the server")
