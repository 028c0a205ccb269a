"""The agent's tools on a real git worktree: what they serve, what they refuse, their caps and determinism."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentkit import make_shop
from autopack.engine.reads import ReadLimits
from autopack.engine.tools import AGENT_TOOL_DEFINITIONS, ToolLimits, tools_for
from autopack.redact import Redactor
from autopack.testrun import TestOutcome, TestReport
from autopack.workspace import Workspace
from conftest import cli_env, git


@pytest.fixture
def project(tmp_path) -> Path:
    env = cli_env(tmp_path / "home")
    return make_shop(tmp_path, env)


def toolbox(project: Path, scope=("shop/", "tests/"), run_tests=None, limits: ToolLimits | None = None,
            redact=str, state_dir=None, selectable=True):
    workspace = Workspace(project, project, "main")
    return tools_for(project, workspace.project_files, list(scope) if scope is not None else None,
                     limits=limits or ToolLimits(), run_tests=run_tests or (lambda select: None),
                     selectable=selectable, state_dir=state_dir, redact=redact)


def report(*outcomes: TestOutcome, exit_code: int = 1, tail: str = "") -> TestReport:
    return TestReport(command="pytest", exit_code=exit_code, timed_out=False, duration_s=1.234,
                      outcomes=outcomes, output_tail=tail, output_bytes=len(tail), output_truncated=False,
                      junit_error=None)


def test_the_tool_definitions_are_those_of_contract_2b():
    assert [tool["name"] for tool in AGENT_TOOL_DEFINITIONS] == [
        "list_files", "read_file", "search", "write_file", "edit_file", "delete_file", "run_tests", "finish"]
    assert all(tool["input_schema"]["additionalProperties"] is False for tool in AGENT_TOOL_DEFINITIONS)


def test_list_files_shows_tracked_and_new_files_not_ignored_sorted_with_sizes(project):
    (project / "shop" / "new.py").write_text("x = 1\n")
    (project / "shop" / "__pycache__").mkdir()
    (project / "shop" / "__pycache__" / "cart.cpython-311.pyc").write_bytes(b"\0")
    (project / "tests" / "test_cart.py").unlink()
    result = toolbox(project).execute("list_files", {})
    assert not result.is_error
    assert result.text.splitlines() == [
        "6 files:", ".gitignore (28 bytes)", "README.md (29 bytes)", "pytest.ini (39 bytes)",
        "shop/__init__.py (0 bytes)", "shop/cart.py (173 bytes)", "shop/new.py (6 bytes)"]
    assert toolbox(project).execute("list_files", {"path": "shop", "glob": "c*.py"}).text.splitlines() == [
        "1 file under shop matching c*.py:", "shop/cart.py (173 bytes)"]


def test_list_files_is_capped(project):
    for n in range(12):
        (project / "tests" / f"data_{n:02d}.txt").write_text("x")
    tools = toolbox(project, limits=ToolLimits(ReadLimits(list_max_entries=5)))
    lines = tools.execute("list_files", {"path": "tests/"}).text.splitlines()
    assert lines[0] == "13 files under tests/:" and len(lines) == 7
    assert lines[-1] == "[8 more not listed; narrow it with path or glob]"


def test_read_file_numbers_lines_and_is_capped_by_lines_and_bytes(project):
    (project / "shop" / "long.py").write_text("".join(f"line_{n} = {n}\n" for n in range(1, 101)))
    tools = toolbox(project, limits=ToolLimits(ReadLimits(read_max_lines=10, read_max_bytes=1000)))
    text = tools.execute("read_file", {"path": "shop/long.py", "start_line": 5}).text
    assert text.splitlines()[:2] == ["shop/long.py: lines 5-14 of 100", "     5\tline_5 = 5"]
    assert text.splitlines()[-1] == "[lines 15-100 not shown; read on with start_line=15]"
    small = toolbox(project, limits=ToolLimits(ReadLimits(read_max_lines=100, read_max_bytes=60)))
    assert small.execute("read_file", {"path": "shop/long.py"}).text.splitlines()[0] == "shop/long.py: lines 1-3 of 100"
    whole = toolbox(project).execute("read_file", {"path": "shop/cart.py", "end_line": 2}).text
    assert whole == 'shop/cart.py: lines 1-2 of 6\n     1\t"""A shopping cart."""\n     2\t'  # as asked: no "read on"


@pytest.mark.parametrize("path, reason", [
    (".git/config", "protected '.git'"),
    ("shop/../../x", "'..'"),
    ("../x", "'..'"),
    ("/etc/passwd", "absolute"),
    ("leak.txt", "outside the project"),
    ("into_git", "into .git"),
    (".autopack/autopack.db", "protected '.autopack'"),
])
def test_reads_of_git_outside_paths_and_symlinks_out_are_refused_as_results(project, tmp_path, path, reason):
    (tmp_path / "secret.txt").write_text("SECRET-CONTENT")
    os.symlink(tmp_path / "secret.txt", project / "leak.txt")
    os.symlink(project / ".git" / "config", project / "into_git")
    tools = toolbox(project)
    for call, arguments in (("read_file", {"path": path}), ("search", {"pattern": "SECRET|core", "path": path}),
                            ("list_files", {"path": path})):
        result = tools.execute(call, arguments)
        if call == "list_files" and path in ("leak.txt", "into_git"):
            continue  # a listing names the link (it is in the tree) without following it
        assert result.is_error, (call, result)
        assert reason in result.text and "SECRET-CONTENT" not in result.text and "[core]" not in result.text


def test_search_finds_lines_in_path_order_caps_and_takes_invalid_regex_as_text(project):
    (project / "shop" / "more.py").write_text("def total_more():\n    return total([])  # total\n")
    tools = toolbox(project, limits=ToolLimits(ReadLimits(search_max_matches=2)))
    text = tools.execute("search", {"pattern": r"total\(", "glob": "*.py"}).text
    assert text.splitlines() == ["2+ matches in 4 files:", "shop/cart.py:4: def total(items):",
                                 "shop/more.py:2:     return total([])  # total",
                                 "[stopped at 2 matches; narrow the pattern, path or glob]"]
    literal = toolbox(project).execute("search", {"pattern": "total(", "glob": "*.py"}).text
    assert literal.startswith("(not a valid regular expression")
    assert "tests/test_cart.py:5:     assert total([(2, 3), (1, 1)]) == 7" in literal


def test_a_pathological_pattern_times_out_as_an_error_result(project):
    (project / "shop" / "aaa.txt").write_text("a" * 40 + "!\n")
    tools = toolbox(project, limits=ToolLimits(ReadLimits(search_timeout_s=0.3)))
    result = tools.execute("search", {"pattern": r"(a+)+$"})
    assert result.is_error and "longer than 0.3 s" in result.text


def test_results_are_deterministic_for_a_tree(project):
    calls = [("list_files", {}), ("read_file", {"path": "shop/cart.py"}), ("search", {"pattern": "def"})]
    first = [toolbox(project).execute(name, args) for name, args in calls]
    os.utime(project / "shop" / "cart.py", (1, 1))
    assert [toolbox(project).execute(name, args) for name, args in calls] == first


def test_an_edit_outside_scope_is_an_error_result_and_changes_nothing(project):
    tools = toolbox(project, scope=("shop/cart.py",))
    refused = tools.execute("write_file", {"path": "README.md", "content": "gone\n"})
    assert refused.is_error and "outside the phase scope (shop/cart.py)" in refused.text
    assert (project / "README.md").read_text() == "# shop\n\nA cart with total().\n" and tools.edits == 0
    applied = tools.execute("edit_file", {"path": "shop/cart.py", "old": "A shopping cart.", "new": "A cart."})
    assert (applied.is_error, applied.text) == (False, "edited shop/cart.py (164 bytes written)")
    again = tools.execute("edit_file", {"path": "shop/cart.py", "old": "A shopping cart.", "new": "A cart."})
    assert again.is_error and "matches 0 times" in again.text
    assert tools.edits == 1 and tools.apply_stats()["files_touched"] == ["shop/cart.py"]


def test_malformed_calls_and_unknown_tools_are_error_results(project):
    tools = toolbox(project)
    assert tools.execute("run_shell", {"cmd": "rm -rf /"}).is_error
    assert "missing field 'content'" in tools.execute("write_file", {"path": "shop/x.py"}).text
    assert "unexpected field 'mode'" in tools.execute("read_file", {"path": "shop/cart.py", "mode": "r"}).text
    assert "start_line must be" in tools.execute("read_file", {"path": "shop/cart.py", "start_line": 0}).text
    assert tools.execute("read_file", "shop/cart.py").is_error


def test_run_tests_output_is_capped_and_scrubbed_and_the_runs_are_limited(project, monkeypatch):
    secret = "sk-test-4f9a8b7c6d5e"
    environ = {"MY_SERVICE_TOKEN": secret, "PATH": "/usr/bin"}
    failing = tuple(TestOutcome(test_id=f"tests.test_cart::test_{n}", outcome="failed", file="tests/test_cart.py",
                                message=f"AssertionError: {secret} sk-ant-api03-abcdefghijkl " + "x" * 2000)
                    for n in range(30))
    selected = []

    def run_tests(select):
        selected.append(select)
        return report(*failing)

    tools = toolbox(project, run_tests=run_tests, redact=Redactor.from_environ(environ),
                    limits=ToolLimits(result_max_bytes=6000, max_test_runs=2))
    result = tools.execute("run_tests", {"tests": ["tests/test_cart.py::test_total"]})
    assert not result.is_error and selected == [("tests/test_cart.py::test_total",)]
    assert result.text.startswith("test run 1 of 2 (1 named test): exit code 1\n30 tests: 0 passed, 30 failed")
    assert secret not in result.text and "sk-ant-api03" not in result.text and "[redacted]" in result.text
    assert len(result.text.encode()) <= 6000 and result.text.endswith("more not shown]")
    assert "1.234" not in result.text  # no durations: the same tree gives the same result
    assert not tools.execute("run_tests", {}).is_error
    refused = tools.execute("run_tests", {})
    assert refused.is_error and "2 test runs are used up" in refused.text and len(selected) == 2


@pytest.mark.parametrize("tests, reason", [
    (["--junitxml=/tmp/x"], "would be an option"), (["../other/test_x.py"], "'..'"), ("tests/", "a list"),
    (["/abs/test.py::t"], "absolute"),
])
def test_run_tests_refuses_ids_that_are_not_test_ids(project, tests, reason):
    tools = toolbox(project, run_tests=lambda select: pytest.fail("must not run"))
    result = tools.execute("run_tests", {"tests": tests})
    assert result.is_error and reason in result.text


def test_named_tests_need_pytest(project):
    tools = toolbox(project, run_tests=lambda select: report(exit_code=0), selectable=False)
    assert "not pytest" in tools.execute("run_tests", {"tests": ["t"]}).text
    assert not tools.execute("run_tests", {}).is_error


def test_a_run_without_per_test_results_shows_the_end_of_its_output(project):
    tools = toolbox(project, run_tests=lambda select: report(tail="ImportError: no module named shop.x\n"))
    text = tools.execute("run_tests", {}).text
    assert text.endswith("end of the output:\nImportError: no module named shop.x")


def test_the_state_dir_inside_the_project_is_not_served(project):
    state = project / "state"
    state.mkdir()
    (state / "autopack.db").write_text("db")
    git(project, "add", "-A", env=cli_env(project.parent / "home"))
    result = toolbox(project, state_dir=state).execute("read_file", {"path": "state/autopack.db"})
    assert result.is_error and "autopack's state" in result.text


def test_plan_limits_override_the_settings_and_zero_test_runs_turns_run_tests_off(project):
    from types import SimpleNamespace

    settings = SimpleNamespace(agent_read_max_lines=10, agent_read_max_bytes=2000, agent_list_max_entries=3,
                               agent_search_max_matches=4, agent_result_max_bytes=5000, agent_max_test_runs=5)
    assert ToolLimits.from_settings(settings, {}).max_test_runs == 5
    limits = ToolLimits.from_settings(settings, {"agent_max_test_runs": 0})
    assert (limits.max_test_runs, limits.reads.list_max_entries, limits.result_max_bytes) == (0, 3, 5000)
    tools = toolbox(project, run_tests=lambda select: pytest.fail("must not run"), limits=limits)
    refused = tools.execute("run_tests", {})
    assert refused.is_error and "it is off for this run" in refused.text


def test_redaction_covers_credentials_but_not_autopacks_own_settings():
    redact = Redactor.from_environ({"GITHUB_TOKEN": "ghp_abcdefghij", "AUTOPACK_BUILDER_MODEL": "claude-sonnet-5-5",
                                    "AUTOPACK_DEPLOY_TOKEN": "deploy-123456789", "DB_PASSWORD": "hunter2hunter2",
                                    "ANTHROPIC_API_KEY": "short", "HOME": "/home/someone"})
    text = ("ghp_abcdefghij claude-sonnet-5-5 deploy-123456789 hunter2hunter2 short /home/someone "
            "sk-ant-api03-xyzxyzxyzxyz")
    assert redact(text) == "[redacted] claude-sonnet-5-5 [redacted] [redacted] short /home/someone [redacted]"
    assert redact.value({"k": ["hunter2hunter2", 3]}) == {"k": ["[redacted]", 3]}
