"""run_tests and parse_junit against real pytest subprocesses on tiny projects."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from autopack.errors import UsageError
from autopack.testcommand import is_pytest, pytest_node_id, scrub_env
from autopack.testrun import (
    NO_JUNIT,
    JUnitError,
    TestOutcome,
    TestReport,
    parse_junit,
    run_tests,
)

PYTEST = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider"

MIXED = '''
import pytest

def test_pass():
    pass

def test_fail():
    assert 1 == 2, "one is not two"

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

def test_fixture_error(broken):
    pass

def test_skip():
    pytest.skip("not today")

@pytest.mark.xfail
def test_xfail():
    assert False

@pytest.mark.xfail
def test_xpass():
    pass

@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown exploded")

def test_teardown_error(bad_teardown):
    pass

class TestMath:
    @pytest.mark.parametrize("a,b", [(1, 2), (3, 5)])
    def test_add(self, a, b):
        assert a + 1 == b
'''


def project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run(root: Path, command: str = PYTEST, **options) -> TestReport:
    options.setdefault("timeout_s", 60)
    return run_tests(command, root, log_path=root.parent / f"{root.name}.log",
                     junit_path=root.parent / f"{root.name}.xml", **options)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_outcomes_of_a_mixed_run(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", {"tests/test_mixed.py": MIXED})
    report = run(root)
    outcomes = {o.test_id: o.outcome for o in report.outcomes}
    assert outcomes == {
        "tests.test_mixed::test_pass": "passed",
        "tests.test_mixed::test_fail": "failed",
        "tests.test_mixed::test_fixture_error": "error",
        "tests.test_mixed::test_skip": "skipped",
        "tests.test_mixed::test_xfail": "skipped",
        "tests.test_mixed::test_xpass": "passed",
        "tests.test_mixed::test_teardown_error": "error",
        "tests.test_mixed.TestMath::test_add[1-2]": "passed",
        "tests.test_mixed.TestMath::test_add[3-5]": "failed",
    }
    assert report.exit_code == 1 and not report.timed_out and report.junit_error is None
    assert report.counts() == {"passed": 3, "failed": 2, "error": 2, "skipped": 2, "total": 9}
    by_id = report.by_id()
    assert "one is not two" in by_id["tests.test_mixed::test_fail"].message
    assert "fixture exploded" in by_id["tests.test_mixed::test_fixture_error"].message
    assert "teardown exploded" in by_id["tests.test_mixed::test_teardown_error"].message
    assert by_id["tests.test_mixed::test_pass"].file == "tests/test_mixed.py"
    assert report.collection_errors() == []
    assert "--junitxml=" in report.command and "junit_family=xunit1" in report.command
    assert "2 failed" in report.output_tail
    assert report.output_bytes > 0 and not report.output_truncated
    assert (tmp_path / "proj.log").read_bytes().endswith(report.output_tail.encode()[-200:])
    data = json.loads(json.dumps(report.to_dict(with_outcomes=True)))
    assert data["counts"]["total"] == 9
    assert "outcomes" not in report.to_dict()


def test_rerun_runs_only_selected_node_ids(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", {"tests/test_mixed.py": MIXED})
    first = run(root)
    failing = [o for o in first.outcomes if o.outcome in ("failed", "error")]
    node_ids = [pytest_node_id(o) for o in failing]
    assert "tests/test_mixed.py::TestMath::test_add[3-5]" in node_ids
    rerun = run(root, select=node_ids)
    assert {o.test_id for o in rerun.outcomes} == {o.test_id for o in failing}
    assert rerun.counts()["passed"] == 0


def test_pytest_node_id_without_file_or_unknown_class() -> None:
    assert pytest_node_id(TestOutcome("pkg.mod::test_x", "failed")) is None
    assert pytest_node_id(TestOutcome("other.mod::test_x", "failed", file="tests/test_a.py")) is None
    assert pytest_node_id(TestOutcome("tests.test_a.TestX.TestY::t[a.b]", "failed",
                                      file="tests/test_a.py")) == "tests/test_a.py::TestX::TestY::t[a.b]"


def test_collection_error_is_reported(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", {"tests/test_ok.py": "def test_ok():\n    pass\n",
                                       "tests/test_broken.py": "def test_x(:\n    pass\n"})
    report = run(root)
    assert report.collection_errors() == ["tests.test_broken"]
    broken = report.by_id()["tests.test_broken"]
    assert broken.outcome == "error" and "SyntaxError" in broken.message
    assert pytest_node_id(broken) == "tests/test_broken.py"
    assert report.by_id()["tests.test_ok::test_ok"].outcome == "passed"  # other modules still ran
    assert report.exit_code == 1


SESSION_STOPS = {
    "conftest imports a package with a syntax error": (
        {"pkg/__init__.py": "def broken(:\n    pass\n", "tests/conftest.py": "import pkg\n"}, "",
        4, "build::tests/conftest.py", ["ImportError while loading conftest", "SyntaxError: invalid syntax",
                                       'File "pkg/__init__.py", line 1']),
    "root conftest raises": (
        {"conftest.py": "raise RuntimeError('conftest exploded')\n"}, "", 4, "build::conftest.py",
        ["RuntimeError: conftest exploded"]),
    "unknown option in the ini file": (
        {"pytest.ini": "[pytest]\naddopts = --no-such-option\n"}, "", 4, "build::pytest",
        ["error: unrecognized arguments: --no-such-option"]),
    "plugin that cannot be imported": (
        {"conftest.py": "pytest_plugins = ['no_such_plugin']\n"}, "", 4, "build::pytest",
        ["Error importing plugin", "no_such_plugin"]),
    "test path that does not exist": ({}, " no_such_dir", 4, "build::pytest", ["not found: no_such_dir"]),
    "internal error before collection (no JUnit)": (
        {"conftest.py": "def pytest_sessionstart(session):\n    raise ValueError('hook broke')\n"}, "",
        3, "pytest::internal", ["ValueError: hook broke"]),
    "internal error after collection (pytest's JUnit)": (
        {"conftest.py": "def pytest_collection_modifyitems(items):\n    raise ValueError('hook broke')\n"}, "",
        3, "pytest::internal", ["ValueError: hook broke"]),
}


@pytest.mark.parametrize("case", list(SESSION_STOPS))
def test_a_pytest_session_that_stops_before_any_test_is_a_collection_error(tmp_path: Path, case: str) -> None:
    files, arguments, exit_code, error_id, needles = SESSION_STOPS[case]
    root = project(tmp_path / "proj", {"tests/test_ok.py": "def test_ok():\n    pass\n", **files})
    report = run(root, command=PYTEST + arguments)
    assert report.exit_code == exit_code
    assert report.junit_error is None
    assert report.collection_errors() == [error_id]
    [error] = report.outcomes
    assert error.outcome == "error"
    for needle in needles:
        assert needle in error.message, (needle, error.message)
    if "JUnit" not in case:  # read from the output: paths relative to the project, stable across worktrees
        assert str(root) not in error.message


def test_no_tests_is_an_empty_report(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", {"tests/helpers.py": "X = 1\n"})
    report = run(root)
    assert report.exit_code == 5
    assert report.outcomes == () and report.junit_error is None
    assert report.counts()["total"] == 0


def test_stale_junit_is_not_reused(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", {"tests/test_ok.py": "def test_ok():\n    pass\n"})
    assert run(root).counts()["passed"] == 1
    report = run(root, command=f"{PYTEST} --version")
    assert report.exit_code == 0
    assert report.junit_error == NO_JUNIT and report.outcomes == ()


def test_non_pytest_command_without_junit_xml(tmp_path: Path) -> None:
    report = run(tmp_path, command="echo hello")
    assert report.exit_code == 0 and report.output_tail == "hello\n"
    assert report.junit_error == f"{NO_JUNIT} (the test command is not pytest; set junit_xml)"


def test_non_pytest_command_reads_junit_xml_paths(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / "reports").mkdir(parents=True)
    case = '<testsuite><testcase classname="{c}" name="{n}"/></testsuite>'
    write_two = ("printf '%s' '" + case.format(c="a", n="one") + "' > reports/a.xml && "
                 "printf '%s' '" + case.format(c="b", n="two") + "' > reports/b.xml")
    (root / "reports" / "stale.xml").write_text(case.format(c="old", n="stale"))
    for location in ("reports", "reports/*.xml"):
        report = run(root, command=write_two, junit_xml=location)
        assert [o.test_id for o in report.outcomes] == ["a::one", "b::two"], location
    report = run(root, command="true", junit_xml="reports/a.xml")
    assert report.junit_error == NO_JUNIT
    with pytest.raises(UsageError, match="junit_xml"):
        run(root, command="true", junit_xml="../elsewhere.xml")


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    root = project(tmp_path / "proj", {"tests/test_slow.py": f'''
        import subprocess, time
        def test_slow():
            child = subprocess.Popen(["sleep", "1000"])
            open({str(pid_file)!r}, "w").write(str(child.pid))
            time.sleep(60)
        '''})
    report = run(root, timeout_s=4)
    assert report.timed_out and report.exit_code is None
    grandchild = int(pid_file.read_text())
    assert not alive(grandchild)


def test_stray_background_process_is_killed_after_exit(tmp_path: Path) -> None:
    report = run(tmp_path, command="sleep 1000 & echo $! > stray.pid; echo done", junit_xml="none.xml")
    assert not report.timed_out and report.exit_code == 0
    assert report.junit_error == NO_JUNIT
    assert not alive(int((tmp_path / "stray.pid").read_text()))


def test_keyboard_interrupt_kills_the_group_and_propagates(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    pid_file = root / "stray.pid"

    def interrupt_once_started(signum, frame):
        if pid_file.exists() and pid_file.read_text().strip():
            raise KeyboardInterrupt
        signal.setitimer(signal.ITIMER_REAL, 0.1)

    previous = signal.signal(signal.SIGALRM, interrupt_once_started)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            run(root, command="sleep 1000 & echo $! > stray.pid; wait", timeout_s=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not alive(int(pid_file.read_text()))


# What the test command must not see: secrets by name, and the channels to credentials.
SCRUBBED = ("FOO_API_KEY", "GITHUB_TOKEN", "db_password", "ANTHROPIC_BASE_URL", "AUTOPACK_DB", "MY_SECRET_THING",
            "SYSTEM_ACCESSTOKEN", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_GHA_CREDS_PATH", "CREDENTIALS_DIRECTORY", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_STORAGE_CONNECTION_STRING", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "GIT_ASKPASS",
            "SSH_ASKPASS", "SUDO_ASKPASS", "VSCODE_GIT_ASKPASS_MAIN", "VSCODE_GIT_IPC_HANDLE", "KRB5CCNAME",
            "KUBECONFIG", "DOCKER_AUTH_CONFIG", "NETRC", "CI_JOB_JWT_V2", "ACTIONS_ID_TOKEN_REQUEST_URL",
            "SSH_PRIVATE_KEY", "DEPLOY_KEY_PATH", "MYSQL_PWD", "PGPASSWD", "OP_SESSION_my", "BW_SESSION")
# What an ordinary test suite needs, and must keep.
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "PWD", "OLDPWD", "VIRTUAL_ENV", "PYTHONPATH", "CI",
        "TOKENIZERS_PARALLELISM", "PYTHON_KEYRING_BACKEND", "AWS_REGION", "AWS_DEFAULT_REGION", "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "DOCKER_HOST", "XDG_RUNTIME_DIR", "GNUPGHOME", "SSH_CONNECTION")


def test_secrets_and_credential_channels_are_scrubbed_from_the_environment(tmp_path: Path,
                                                                          make_git_project) -> None:
    root = make_git_project(project(tmp_path / "proj", {"tests/test_env.py": '''
        import json, os
        def test_env():
            json.dump(dict(os.environ), open("../seen_env.json", "w"))
        '''}))
    given = {name: f"value-of-{name}" for name in (*SCRUBBED, *KEPT) if name not in ("PWD", "OLDPWD")}  # the shell's
    given |= {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "PYTHONPATH": "",
              "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "CI_JOB_TOKEN": "allowed", "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock"}
    report = run(root, env=given, env_allow=["ci_job_token", "SSH_AUTH_SOCK"])
    assert report.counts()["passed"] == 1, report.output_tail
    seen = json.loads((tmp_path / "seen_env.json").read_text())
    assert sorted(set(SCRUBBED) & set(seen)) == ["SSH_AUTH_SOCK"]  # allowed back by env_allow
    assert seen["SSH_AUTH_SOCK"] == "/tmp/ssh-agent.sock" and seen["CI_JOB_TOKEN"] == "allowed"
    assert {name: seen.get(name) for name in given if name in KEPT} == {name: given[name] for name in given
                                                                       if name in KEPT}
    assert seen["PYTHONDONTWRITEBYTECODE"] == "1"


@pytest.mark.parametrize("name", SCRUBBED)
def test_scrub_env_removes(name: str) -> None:
    assert scrub_env({name: "x", "PATH": "/bin"}) == {"PATH": "/bin"}
    assert scrub_env({name: "x"}, allow=[name.lower()]) == {name: "x"}  # env_allow is the way back


@pytest.mark.parametrize("name", KEPT)
def test_scrub_env_keeps(name: str) -> None:
    assert scrub_env({name: "x"}) == {name: "x"}


def test_output_is_capped_in_the_log(tmp_path: Path) -> None:
    root = project(tmp_path / "proj", {"tests/test_loud.py": '''
        import sys
        def test_loud():
            for _ in range(50):
                sys.stdout.write("x" * 99_999 + "\\n")
        '''})
    report = run(root, command=f"{PYTEST} -s", output_cap_bytes=100_000)
    log = (tmp_path / "proj.log").read_bytes()
    assert report.output_truncated and report.output_bytes > 5_000_000
    assert len(log) <= 100_000 + 200
    assert log.rstrip().endswith(f"; {report.output_bytes} bytes in all]".encode())
    assert b"[autopack: output truncated after 100000 bytes" in log
    assert len(report.output_tail) <= 8192
    assert report.counts()["passed"] == 1


def test_malformed_junit_raises_and_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<testsuite><testcase name='x'>")
    with pytest.raises(JUnitError, match="malformed JUnit XML"):
        parse_junit([bad])
    wrong_root = tmp_path / "html.xml"
    wrong_root.write_text("<html/>")
    with pytest.raises(JUnitError, match="expected <testsuites> or <testsuite>"):
        parse_junit([wrong_root])
    root = tmp_path / "proj"
    root.mkdir()
    report = run(root, command="echo '<testsuite><oops' > out.xml", junit_xml="out.xml")
    assert report.junit_error is not None and report.junit_error.startswith("malformed JUnit XML")
    assert report.outcomes == ()


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<testsuite><testcase classname="c" name="&lol2;"/></testsuite>"""


@pytest.mark.parametrize("document,encoding", [
    (BILLION_LAUGHS, "utf-8"),
    ('<!DOCTYPE x SYSTEM "file:///etc/passwd"><testsuite/>', "utf-8"),
    (BILLION_LAUGHS.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>'), "utf-16"),
])
def test_dtd_and_entities_are_refused(tmp_path: Path, document: str, encoding: str) -> None:
    path = tmp_path / "evil.xml"
    path.write_bytes(document.encode(encoding))
    with pytest.raises(JUnitError, match="DOCTYPE or ENTITY"):
        parse_junit([path])


def test_oversized_junit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.xml"
    with open(path, "wb") as handle:
        handle.truncate(50 * 1024 * 1024 + 1)
    with pytest.raises(JUnitError, match="50 MB"):
        parse_junit([path])


def test_duplicates_merge_to_the_worst_outcome(tmp_path: Path) -> None:
    first = tmp_path / "a.xml"
    first.write_text('<testsuites><testsuite><testsuite>'
                     '<testcase classname="m" name="t" time="0.5"/>'
                     '<testcase classname="m" name="u"><skipped type="pytest.xfail"/></testcase>'
                     '</testsuite></testsuite></testsuites>')
    second = tmp_path / "b.xml"
    second.write_text('<testsuite><testcase classname="m" name="t" time="0.25">'
                      '<error message="failed on teardown">boom</error></testcase>'
                      '<testcase name="plain"><failure message="bad"/></testcase></testsuite>')
    outcomes = {o.test_id: o for o in parse_junit([first, second])}
    assert outcomes["m::t"].outcome == "error" and outcomes["m::t"].duration_s == 0.75
    assert "boom" in outcomes["m::t"].message
    assert outcomes["m::u"].outcome == "skipped"
    assert outcomes["plain"].outcome == "failed" and not outcomes["plain"].collection_error


def test_long_messages_are_capped(tmp_path: Path) -> None:
    path = tmp_path / "long.xml"
    body = "start " + "x" * 10_000 + " END-OF-TRACEBACK"
    path.write_text(f'<testsuite><testcase classname="m" name="t"><failure message="msg">{body}'
                    '</failure></testcase></testsuite>')
    message = parse_junit([path])[0].message
    assert len(message) <= 2000 and message.startswith("msg") and message.endswith("END-OF-TRACEBACK")


@pytest.mark.parametrize("command,expected", [
    ("pytest", True),
    ("pytest -q tests/", True),
    ("py.test -x", True),
    ("python -m pytest -q", True),
    ("python3 -m pytest", True),
    ("python3.11 -m pytest", True),
    ("/tmp/venv/bin/python -m pytest", True),
    (".venv/bin/pytest -q", True),
    ("uv run pytest -q", True),
    ("uv run python -m pytest", True),
    ("PYTHONPATH=src pytest", True),
    ("python -m pytest -q 2>&1", True),
    ("make test", False),
    ("python -m unittest", False),
    ("pytest -q && echo done", False),
    ("cd sub; pytest", False),
    ("pytest | tee out.txt", False),
    ("npm test", False),
    ("pytest 'unterminated", False),
])
def test_is_pytest(command: str, expected: bool) -> None:
    assert is_pytest(command) is expected
