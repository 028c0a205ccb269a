"""Failure hardening: each pattern recognised from REAL tool output, and no false positives.

The samples come from actually running pytest / node on tiny broken projects, so a change
in how those tools word their errors breaks these tests rather than production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from autopack.edits import EditError, EditOp, apply_edits
from autopack.hardening import PATTERNS, Evidence, diagnose

UNPRIVILEGED = 65534  # nobody: root ignores file modes, so permission samples run as this user
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def junit_failures(path: Path) -> tuple[tuple[str, str], ...]:
    """(test id, message + text) of failed/errored testcases, as autopack's test runner reads them."""
    if not path.exists():
        return ()
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                detail = "\n".join(part for part in (child.get("message", ""), (child.text or "").strip()) if part)
                found.append((f"{case.get('classname')}::{case.get('name')}", detail))
    return tuple(found)


def run_pytest(tmp_path: Path, files: dict[str, str], *args: str, wrap: tuple[str, ...] = (),
               kind: str = "regression") -> Evidence:
    """Run pytest for real on a project made of ``files``; the evidence a failed attempt leaves."""
    project = write(tmp_path / "project", files)
    junit = tmp_path / "junit.xml"
    command = [*wrap, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--basetemp={tmp_path / 'basetemp'}", f"--junitxml={junit}", *args]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode != 0, done.stdout
    return Evidence(kind=kind, message=f"the test command exited {done.returncode}",
                    output_tail=done.stdout + done.stderr, failures=junit_failures(junit))


def run_node(script: str, *, cwd: Path, esm: bool = False, user: int | None = None) -> Evidence:
    command = ["node", *(["--input-type=module"] if esm else []), "-e", script]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, user=user)
    assert done.returncode != 0, done.stdout
    return Evidence(kind="regression", message=f"npm test exited {done.returncode}",
                    output_tail=done.stdout + done.stderr)


def test_missing_python_module_from_a_collection_error(tmp_path):
    files = {"tests/test_api.py": "import yamlish_not_installed\n\n\ndef test_x():\n    pass\n"}
    evidence = run_pytest(tmp_path, files, kind="collection_error")
    hint = diagnose(evidence)
    assert hint.pattern == "missing_python_module"
    assert "'yamlish_not_installed'" in hint.hint
    assert "ModuleNotFoundError: No module named 'yamlish_not_installed'" in hint.match
    # the JUnit failure message alone is enough (output tail capped away)
    only_junit = Evidence(kind="collection_error", message="collection error", failures=evidence.failures)
    assert diagnose(only_junit).pattern == "missing_python_module"


def test_missing_project_submodule_is_named(tmp_path):
    evidence = run_pytest(tmp_path, {
        "calc/__init__.py": "", "calc/ops.py": "def add(a, b):\n    return a + b\n",
        "tests/test_power.py": "from calc.power import power\n\n\ndef test_power():\n    assert power(2, 3) == 8\n",
    })
    hint = diagnose(evidence)
    assert (hint.pattern, "'calc.power'" in hint.hint) == ("missing_python_module", True)


@needs_node
@pytest.mark.parametrize("script, esm", [("require('left-padder')", False), ("import 'left-padder'", True)])
def test_missing_node_module_from_real_node_output(tmp_path, script, esm):
    evidence = run_node(script, cwd=tmp_path, esm=esm)
    hint = diagnose(evidence)
    assert hint.pattern == "missing_node_module"
    assert "'left-padder'" in hint.hint
    assert "Cannot find" in hint.match


def test_pytest_path_that_does_not_exist_from_the_working_directory(tmp_path):
    evidence = run_pytest(tmp_path, {"test_ok.py": "def test_ok():\n    pass\n"}, "tests/test_power.py")
    hint = diagnose(evidence)
    assert hint.pattern == "wrong_working_directory"  # not "no tests collected", which pytest also prints
    assert "'tests/test_power.py'" in hint.hint


def test_relative_data_file_opened_from_the_wrong_directory(tmp_path):
    evidence = run_pytest(tmp_path, {
        "pkg/__init__.py": "", "pkg/data/table.csv": "a,b\n",
        "pkg/load.py": "def load():\n    return open('data/table.csv').read()\n",
        "tests/test_load.py": "from pkg.load import load\n\n\ndef test_load():\n    assert load()\n",
    })
    hint = diagnose(evidence)
    assert hint.pattern == "wrong_working_directory"
    assert "'data/table.csv'" in hint.hint and "Path(__file__)" in hint.hint


def test_zero_tests_collected(tmp_path):
    evidence = run_pytest(tmp_path, {"tests/check_power.py": "def test_power():\n    pass\n"})
    assert "no tests ran" in evidence.output_tail
    hint = diagnose(evidence)
    assert hint.pattern == "no_tests_collected"
    assert "test_*.py" in hint.hint
    # autopack's own finalizer message for an empty report with pytest's exit code 5
    finalizer = Evidence(kind="regression", message="the test report is empty: no tests ran (exit code 5)")
    assert diagnose(finalizer).pattern == "no_tests_collected"


def test_scope_violation_from_a_real_rejected_edit(tmp_path):
    write(tmp_path, {"calc/ops.py": "x = 1\n", "setup.cfg": "[metadata]\n"})
    with pytest.raises(EditError) as rejected:
        apply_edits(tmp_path, [EditOp(tool="write_file", path="setup.cfg", content="changed\n")],
                    scope=["calc/ops.py", "tests/"])
    evidence = Evidence(kind="apply_error", message=str(rejected.value), apply_errors=rejected.value.reasons)
    hint = diagnose(evidence)
    assert hint.pattern == "scope_violation"
    assert "setup.cfg" in hint.hint and "calc/ops.py, tests/" in hint.hint


def test_permission_error_in_python(tmp_path):
    test = ("def test_write(tmp_path):\n    target = tmp_path / 'locked.txt'\n    target.write_text('x')\n"
            "    target.chmod(0o444)\n    target.write_text('y')\n")
    wrap: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root bypasses file modes unless it drops the DAC capabilities
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot produce a real PermissionError")
        caps = "-dac_override,-dac_read_search"
        wrap = ("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}")
    evidence = run_pytest(tmp_path, {"test_write.py": test}, wrap=wrap)
    hint = diagnose(evidence)
    assert hint.pattern == "permission_error"
    assert "locked.txt" in hint.hint and "tmp_path" in hint.hint


@needs_node
def test_permission_error_in_node(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    tmp_path.chmod(0o755)
    user = UNPRIVILEGED if os.geteuid() == 0 else None
    evidence = run_node(f"require('fs').writeFileSync('{locked}/out.txt', 'x')", cwd=tmp_path, user=user)
    hint = diagnose(evidence)
    assert hint.pattern == "permission_error"
    assert f"{locked}/out.txt" in hint.hint


@pytest.mark.parametrize("source, error", [
    ("def power(a, b)\n    return a ** b\n", "SyntaxError"),
    ("def power(a, b):\nreturn a ** b\n", "IndentationError"),
])
def test_syntax_error_in_written_code_names_file_and_line(tmp_path, source, error):
    evidence = run_pytest(tmp_path, {
        "calc/__init__.py": "", "calc/ops.py": source,
        "tests/test_ops.py": "from calc.ops import power\n\n\ndef test_power():\n    assert power(2, 3) == 8\n",
    })
    hint = diagnose(evidence)
    assert hint.pattern == "syntax_error"
    assert "calc/ops.py line " in hint.hint and error in hint.hint


def test_test_timeout(tmp_path):
    project = write(tmp_path / "project", {"test_slow.py": "import time\n\n\ndef test_slow():\n    time.sleep(60)\n"})
    with pytest.raises(subprocess.TimeoutExpired) as expired:
        subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "test_slow.py"],
                       cwd=project, capture_output=True, timeout=2)
    output = (expired.value.stdout or b"").decode()  # bytes: TimeoutExpired does not decode
    # the finalizer's reason for a timed-out test command, with what the command printed
    evidence = Evidence(kind="timeout", message="the test command timed out after 2 s", output_tail=output)
    hint = diagnose(evidence)
    assert hint.pattern == "test_timeout"
    assert "timed out after 2 s" in hint.hint
    assert diagnose(Evidence(kind="timeout", message="")).pattern == "test_timeout"
    assert diagnose(Evidence(kind="regression", message="1 new failure",
                             failures=(("tests/test_net.py::test_fetch", "Failed: Timeout >5.0s"),))).pattern \
        == "test_timeout"


def test_plain_assertion_failure_is_not_a_known_pattern(tmp_path):
    evidence = run_pytest(tmp_path, {
        "test_config.py": "import pytest\n\n\nclass Config:\n    timeout = 3\n\n\n"
                          "def test_timeout_default():\n    assert Config.timeout == 5\n\n\n"
                          "def test_division():\n    with pytest.raises(TimeoutError):\n        1 / 0\n",
    })
    assert len(evidence.failures) == 2
    assert diagnose(evidence) is None


def test_missing_absolute_path_is_not_a_working_directory_problem(tmp_path):
    evidence = run_pytest(tmp_path, {
        "test_read.py": f"def test_read():\n    open('{tmp_path}/absent/config.toml').read()\n"})
    assert "No such file or directory" in evidence.output_tail
    assert diagnose(evidence) is None


def test_every_pattern_is_named_once_and_has_a_hint_that_uses_its_match():
    names = [pattern.name for pattern in PATTERNS]
    assert sorted(names) == sorted(set(names)) == sorted([
        "missing_python_module", "missing_node_module", "wrong_working_directory", "no_tests_collected",
        "scope_violation", "permission_error", "syntax_error", "test_timeout",
        "tests_weakened", "tests_skipped", "acceptance_failed", "no_goal_evidence"])  # the last four: test_goal_evidence
    for pattern in PATTERNS:
        assert "{subject}" in pattern.hint or "{match}" in pattern.hint, pattern.name
