"""sandbox = "bwrap": test commands under a real bubblewrap, in a real checkout, worktree and state directory.

Each confinement test runs a probe test suite through ``run_tests`` and checks what it could do;
where the claim is "the sandbox prevents it", the same probe is also run unconfined to show that
it would have succeeded there. Where bwrap cannot build a sandbox these tests skip with the reason
(and fail under AUTOPACK_CI=1, whose .ci/run installs bubblewrap).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from autopack.errors import ConfigError, PlanError
from autopack.sandbox import Sandbox, SandboxUnavailable, effective_mode, explain, preflight
from autopack.testrun import run_tests
from conftest import EXAMPLE, git, rows

PYTEST = f"{shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider"
SECRET = "sk-ant-api03-sandbox-probe-secret"


def usable_bwrap() -> str:
    """bwrap's path; skip (fail under AUTOPACK_CI=1) where it cannot build a sandbox here."""
    try:
        return preflight()
    except SandboxUnavailable as exc:
        if os.environ.get("AUTOPACK_CI") == "1":
            pytest.fail(f"AUTOPACK_CI=1 requires the sandbox tests (.ci/run installs bubblewrap): {exc}")
        pytest.skip(str(exc))


class Layout:
    """A user's checkout with autopack's state directory in it and a run's worktree in that (the defaults)."""

    def __init__(self, root: Path):
        self.checkout = root / "repo"
        self.checkout.mkdir()
        (self.checkout / "README.md").write_text("the user's checkout\n")
        git(self.checkout, "init", "-q", "-b", "main")
        git(self.checkout, "add", "-A")
        git(self.checkout, "commit", "-q", "-m", "initial")
        self.state = self.checkout / ".autopack"
        self.state.mkdir()
        (self.state / "autopack.db").write_bytes(b"SQLite format 3\0")
        self.worktree = self.state / "worktrees" / "r"
        git(self.checkout, "worktree", "add", "-q", "-b", "autopack/r", str(self.worktree))
        self.artifacts = self.state / "runs" / "r"

    def sandbox(self, **options) -> Sandbox:
        return Sandbox(bwrap=usable_bwrap(), hidden=(self.state,), **options)

    def suite(self, probe: str, sandbox: Sandbox | None, command: str = PYTEST, **options):
        (self.worktree / "test_probe.py").write_text(textwrap.dedent(probe))
        return run_tests(command, self.worktree, timeout_s=options.pop("timeout_s", 120),
                         log_path=self.artifacts / "logs" / "probe.log",
                         junit_path=self.artifacts / "junit" / "probe.xml", sandbox=sandbox, **options)


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(tmp_path)


def outcomes(report) -> dict[str, str]:
    return {outcome.test_id.rpartition("::")[2]: outcome.outcome for outcome in report.outcomes}


def messages(report) -> str:
    return " | ".join(outcome.message or "" for outcome in report.outcomes)


def test_a_server_listening_on_localhost_cannot_be_reached(layout):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = f"""
            import socket

            def test_connect():
                socket.create_connection(("127.0.0.1", {port}), timeout=10).close()
            """
        confined = layout.suite(probe, layout.sandbox())
        assert outcomes(confined) == {"test_connect": "failed"}, confined.output_tail
        assert "ConnectionRefusedError" in messages(confined) or "Network is unreachable" in messages(confined)
        assert outcomes(layout.suite(probe, None)) == {"test_connect": "passed"}
        networked = layout.suite(probe, layout.sandbox(network=True))  # sandbox_network = true
        assert outcomes(networked) == {"test_connect": "passed"}, networked.output_tail


def test_writes_outside_the_worktree_fail_and_change_nothing(layout, tmp_path):
    ssh_probe = Path.home() / ".ssh" / f"autopack-probe-{uuid.uuid4().hex}"  # the REAL home: the sandbox hides it
    targets = {"ssh": ssh_probe, "checkout": layout.checkout / "README.md", "new_in_checkout": layout.checkout / "x",
               "state": layout.state / "autopack.db", "new_in_state": layout.state / "x",
               "git": layout.checkout / ".git" / "config", "worktree_git_file": layout.worktree / ".git",
               "worktree_index": layout.checkout / ".git" / "worktrees" / "r" / "index"}
    probe = f"""
        import errno, os, pytest

        TARGETS = {json.dumps({name: str(path) for name, path in targets.items()})}

        @pytest.mark.parametrize("name", sorted(TARGETS))
        def test_write(name):
            path = TARGETS[name]
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a") as handle:
                handle.write("written by the suite")

        def test_the_state_directory_is_empty():
            assert sorted(os.listdir({str(layout.state)!r})) == ["runs", "worktrees"]  # mount points only

        def test_the_worktree_is_writable():
            with open("made-by-the-suite", "w") as handle:
                handle.write("ok")
        """
    before = snapshot(tmp_path, layout)
    try:
        report = layout.suite(probe, layout.sandbox())
        results = outcomes(report)
        assert results.pop("test_the_worktree_is_writable") == "passed", report.output_tail
        assert results.pop("test_the_state_directory_is_empty") == "passed", messages(report)
        assert set(results.values()) == {"failed"}, messages(report)
        for outcome in report.outcomes:
            if "test_write" in outcome.test_id:
                assert "Read-only file system" in outcome.message or "Permission denied" in outcome.message, outcome
        assert (layout.worktree / "made-by-the-suite").read_text() == "ok"
        assert not ssh_probe.exists()
        assert snapshot(tmp_path, layout) == before
    finally:
        ssh_probe.unlink(missing_ok=True)


def snapshot(root: Path, layout: Layout) -> dict[str, bytes]:
    """Every file under ``root`` but the worktree and the run's reports, with its content."""
    skip = (layout.worktree, layout.artifacts)
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and not any(path.is_relative_to(s) for s in skip)}


def test_the_suite_sees_no_api_key_anywhere(layout, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    probe = f"""
        import os

        def test_no_key():
            assert "ANTHROPIC_API_KEY" not in os.environ
            found = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{{pid}}/environ", "rb") as environ:
                        if {SECRET.encode()!r} in environ.read():
                            found.append(pid)
                except OSError:
                    pass
            assert not found, f"the key is in the environment of processes {{found}}"
        """
    # A process started with the key, as autopack itself is: unconfined, the suite finds it through /proc.
    holder = subprocess.Popen(["sleep", "120"], env={**os.environ, "ANTHROPIC_API_KEY": SECRET})
    try:
        assert outcomes(layout.suite(probe, layout.sandbox())) == {"test_no_key": "passed"}
        assert outcomes(layout.suite(probe, None)) == {"test_no_key": "failed"}
    finally:
        holder.kill()
        holder.wait()


def test_grandchildren_die_on_timeout(layout):
    marker = f"{uuid.uuid4().int % 10**6}.25"
    command = f"setsid sh -c 'sleep {marker}' & (sh -c 'sleep {marker}' &) ; touch started; sleep 600"
    report = layout.suite("", layout.sandbox(), command=command, timeout_s=5)
    assert report.timed_out and (layout.worktree / "started").exists()
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and marker in _cmdline(pid)]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_interpreter_under_the_real_home_is_bound_back(layout):
    """The running Python (here pyenv's, under $HOME) runs inside although $HOME is an empty tmpfs."""
    home = Path.home()
    probe = f"""
        import os, sys

        def test_interpreter():
            assert sys.base_prefix == {sys.base_prefix!r}
            assert os.path.realpath(os.path.expanduser("~")) == {str(home.resolve())!r}
            visible = set(os.listdir({str(home)!r}))
            assert not visible & set({sorted(_private(home))!r}), visible
        """
    report = layout.suite(probe, layout.sandbox(), env={**os.environ, "HOME": str(home)})
    assert outcomes(report) == {"test_interpreter": "passed"}, report.output_tail + messages(report)


def _private(home: Path) -> set[str]:
    """Files in the real home that are no toolchain's: the sandbox must hide them."""
    return {path.name for path in home.iterdir() if path.is_file()}


def test_sandbox_writable_and_readable_paths(layout, tmp_path):
    cache, notes = tmp_path / "cache", tmp_path / "notes.txt"
    cache.mkdir()
    notes.write_text("readable")
    probe = f"""
        def test_cache():
            with open({str(cache / "entry")!r}, "w") as handle:
                handle.write("cached")

        def test_notes():
            assert open({str(notes)!r}).read() == "readable"
        """
    assert outcomes(layout.suite(probe, layout.sandbox())) == {"test_cache": "failed", "test_notes": "failed"}
    report = layout.suite(probe, layout.sandbox(writable=(cache,), readable=(notes,)))
    assert outcomes(report) == {"test_cache": "passed", "test_notes": "passed"}
    assert (cache / "entry").read_text() == "cached"


# -- when bwrap cannot build the sandbox --------------------------------------------------------


def fake_bwrap(directory: Path, message: str) -> Path:
    path = directory / "bwrap"
    path.write_text(f"#!/bin/sh\necho {shlex.quote(message)} >&2\nexit 1\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("message, cause", [
    ("bwrap: Creating new namespace failed: No space left on device", "user namespaces are unavailable"),
    ("bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged "
     "user namespaces.", "user namespaces are unavailable"),
    ("bwrap: Can't mount proc on /newroot/proc: Operation not permitted", "forbids mounting /proc"),
    ("bwrap: something new", "bwrap cannot build the sandbox"),
])
def test_a_refusal_becomes_one_line_with_cause_and_fix(tmp_path, message, cause):
    with pytest.raises(SandboxUnavailable) as raised:
        preflight(str(fake_bwrap(tmp_path, message)))
    text = str(raised.value)
    assert cause in text and message in text and 'sandbox = "none"' in text and "\n" not in text
    assert raised.value.exit_code == 4
    assert cause in explain(message)


def test_no_bwrap_names_the_executable_and_how_to_install_it(tmp_path):
    with pytest.raises(SandboxUnavailable, match="no bubblewrap executable '.*/nope/bwrap'.*apt-get install bubblewrap"):
        preflight(str(tmp_path / "nope" / "bwrap"))


def test_a_plan_tightens_the_setting_and_never_loosens_it():
    assert effective_mode("none", None) == "none"
    assert effective_mode("none", "bwrap") == "bwrap"
    assert effective_mode("bwrap", "none") == "bwrap"
    assert effective_mode("bwrap", None) == "bwrap"


def test_bad_sandbox_values_name_the_file_and_key(tmp_path):
    from autopack.config import load_settings
    from autopack.plan import plan_from_dict
    from autopack.sandbox import sandbox_for

    (tmp_path / "autopack.toml").write_text('sandbox = "docker"\n')
    with pytest.raises(ConfigError, match=r"autopack.toml: sandbox: 'docker' is not one of none, bwrap"):
        load_settings(tmp_path, environ={})
    (tmp_path / "autopack.toml").write_text('sandbox = "bwrap"\nsandbox_writable = ["~/.cache", "cache"]\n')
    with pytest.raises(ConfigError, match="autopack.toml: sandbox_writable: 'cache' is not an absolute path"):
        load_settings(tmp_path, environ={})
    (tmp_path / "autopack.toml").write_text('sandbox = "bwrap"\n')
    with pytest.raises(ConfigError, match="AUTOPACK_SANDBOX_READABLE: 'x' is not an absolute path"):
        load_settings(tmp_path, environ={"AUTOPACK_SANDBOX_READABLE": "/a,x"})
    settings = load_settings(tmp_path, environ={"AUTOPACK_SANDBOX_WRITABLE": "~/.cache/go-build"})
    assert sandbox_for(settings, None, tmp_path).writable == (Path.home().resolve() / ".cache" / "go-build",)
    with pytest.raises(ConfigError, match="AUTOPACK_SANDBOX_NETWORK: 'maybe' is not a boolean"):
        load_settings(tmp_path, environ={"AUTOPACK_SANDBOX_NETWORK": "maybe"})
    plan = {"run": {"id": "r", "goal": "g", "sandbox": "jail"}, "phases": [{"id": "p", "goal": "g"}]}
    with pytest.raises(PlanError, match=r"plan.toml: run.sandbox: 'jail' is not one of none, bwrap"):
        plan_from_dict(plan, tmp_path / "plan.toml")


# -- the example through the CLI ------------------------------------------------------------------


def decisions(autopack, project: Path, run_id: str = "calc-demo") -> list[tuple]:
    done = autopack("status", run_id, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    return [(p["id"], p["state"], p["attempts"], p["decision"]["verdict"], p["decision"]["reasons"],
             p["decision"]["delta"]) for p in json.loads(done.stdout)["phases"]]


def logging_bwrap(directory: Path, real: str) -> Path:
    """A bwrap that notes each call (one line) and execs the real one."""
    directory.mkdir()
    path = directory / "bwrap"
    path.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(directory / "calls"))}\nexec {shlex.quote(real)} "$@"\n')
    path.chmod(0o755)
    return path


def test_the_example_completes_sandboxed_with_the_same_decisions(tmp_path, make_calc_project, autopack, base_env):
    real = usable_bwrap()
    plain = make_calc_project(tmp_path / "plain")
    done = autopack("run", "plan.toml", cwd=plain)
    assert done.returncode == 0, done.stderr
    boxed = make_calc_project(tmp_path / "boxed")
    wrapper = logging_bwrap(tmp_path / "wrapper", real)
    done = autopack("run", "plan.toml", "--sandbox", "bwrap", cwd=boxed,
                    env={**base_env, "AUTOPACK_SANDBOX_BWRAP": str(wrapper)})
    assert done.returncode == 0, done.stderr
    assert decisions(autopack, boxed) == decisions(autopack, plain)
    calls = (wrapper.parent / "calls").read_text().splitlines()
    kinds = [kind for (kind,) in rows(boxed / ".autopack" / "autopack.db", "SELECT kind FROM test_runs")]
    assert {"baseline", "attempt", "rerun", "f2p"} <= set(kinds)  # the goal-evidence runs too
    suites = [call for call in calls if "--bind" in call]
    assert len(suites) == len(kinds) and len(calls) == len(suites) + 1  # and the preflight, once
    assert all("--unshare-all" in call and "/bin/sh -c" in call for call in suites)
    assert sum("--bind " + str(boxed / ".autopack" / "worktrees" / ".evidence-calc-demo") in call
               for call in suites) == kinds.count("f2p")  # writable: the scratch worktree they ran in


def test_the_agents_run_tests_runs_in_the_sandbox(tmp_path, make_git_project, autopack, base_env):
    real = usable_bwrap()
    runs = {}
    for mode in ("none", "bwrap"):
        project = tmp_path / mode / "inventory"
        shutil.copytree(EXAMPLE.parent / "inventory", project, ignore=shutil.ignore_patterns("__pycache__"))
        make_git_project(project)
        wrapper = logging_bwrap(tmp_path / f"wrapper-{mode}", real)
        done = autopack("run", "plan.toml", "--sandbox", mode, cwd=project,
                        env={**base_env, "AUTOPACK_SANDBOX_BWRAP": str(wrapper)})
        assert done.returncode == 0, done.stderr
        kinds = [kind for (kind,) in rows(project / ".autopack" / "autopack.db",
                                          "SELECT kind FROM test_runs ORDER BY id")]
        calls = wrapper.parent / "calls"
        suites = [c for c in calls.read_text().splitlines() if "/bin/sh -c" in c] if calls.exists() else []
        runs[mode] = (decisions(autopack, project, "inventory-demo"), kinds, len(suites))
    assert "agent" in runs["bwrap"][1]  # the agent called run_tests
    assert runs["bwrap"][:2] == runs["none"][:2]
    assert (runs["none"][2], runs["bwrap"][2]) == (0, len(runs["bwrap"][1]))


def test_output_caps_hold_inside(layout):
    command = "yes 0123456789 | head -c 300000; echo done"
    report = layout.suite("", layout.sandbox(), command=command, output_cap_bytes=1000)
    assert report.output_truncated and report.output_bytes == 300005 and report.exit_code == 0
    assert report.output_tail.endswith("done\n")
    log = (layout.artifacts / "logs" / "probe.log").read_bytes()
    assert log.startswith(b"0123456789\n") and len(log) < 1200 and b"output truncated after 1000 bytes" in log


@pytest.mark.parametrize("how", ["flag", "plan", "plan says none"])
def test_without_a_usable_bwrap_nothing_is_recorded(tmp_path, calc_project, autopack, base_env, how):
    plan = calc_project / "plan.toml"
    args = ["run", "plan.toml"]
    if how == "flag":
        args += ["--sandbox", "bwrap"]
    else:
        text = plan.read_text().replace("[run]\n", f'[run]\nsandbox = "{"bwrap" if how == "plan" else "none"}"\n', 1)
        assert text != plan.read_text()
        plan.write_text(text)
        git(calc_project, "commit", "-qam", "sandbox key")
    env = {**base_env, "AUTOPACK_SANDBOX_BWRAP": str(tmp_path / "missing" / "bwrap")}
    if how == "plan says none":
        env["AUTOPACK_SANDBOX"] = "bwrap"
    done = autopack(*args, cwd=calc_project, env=env)
    assert done.returncode == 4, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith('autopack: error: sandbox = "bwrap": no bubblewrap executable') and "install" in line
    assert not (calc_project / ".autopack").exists()
    assert git(calc_project, "branch", "--list", "autopack/*") == ""


def test_drain_and_resume_without_a_usable_bwrap_claim_nothing(tmp_path, calc_project, autopack, base_env):
    done = autopack("run", "plan.toml", "--queue-only", cwd=calc_project)
    assert done.returncode == 0, done.stderr
    db = calc_project / ".autopack" / "autopack.db"
    before = db.read_bytes()
    bwrap = fake_bwrap(tmp_path, "bwrap: Creating new namespace failed: No space left on device")
    for command in (["drain"], ["drain-one", "--run-id", "calc-demo", "--phase-id", "add-power"],
                    ["run", "--run-id", "calc-demo"]):
        done = autopack(*command, "--sandbox", "bwrap", cwd=calc_project,
                        env={**base_env, "AUTOPACK_SANDBOX_BWRAP": str(bwrap)})
        assert done.returncode == 4, done.stdout + done.stderr
        [line] = done.stderr.splitlines()
        assert "user namespaces are unavailable" in line and "No space left on device" in line
        assert db.read_bytes() == before  # no executor registered, nothing claimed


def test_a_drain_does_not_enter_a_run_whose_plan_needs_a_sandbox_it_cannot_build(tmp_path, calc_project, autopack,
                                                                                  base_env):
    plan = calc_project / "plan.toml"
    plan.write_text(plan.read_text().replace("[run]\n", '[run]\nsandbox = "bwrap"\n', 1))
    done = autopack("run", "plan.toml", "--queue-only", cwd=calc_project)
    assert done.returncode == 0, done.stderr
    env = {**base_env, "AUTOPACK_SANDBOX_BWRAP": str(tmp_path / "missing" / "bwrap")}
    done = autopack("drain", "--json", cwd=calc_project, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["processed"] == 0 and "no bubblewrap executable" in summary["unavailable_runs"]["calc-demo"]
    db = calc_project / ".autopack" / "autopack.db"
    assert rows(db, "SELECT DISTINCT state FROM phases") == [("queued",)]
    assert rows(db, "SELECT count(*) FROM attempts") == [(0,)]


def test_a_recorded_run_may_be_given_run_sandbox(tmp_path):
    from autopack.plan import plan_from_dict
    from autopack.replan import changed_phases

    raw = {"run": {"id": "r", "goal": "g"}, "phases": [{"id": "p", "goal": "g"}]}
    recorded = plan_from_dict(raw, tmp_path / "plan.toml")
    tightened = plan_from_dict({**raw, "run": {**raw["run"], "sandbox": "bwrap"}}, tmp_path / "plan.toml")
    assert tightened.run.sandbox == "bwrap" and recorded.to_dict()["run"].get("sandbox") is None
    assert recorded.content_hash() != tightened.content_hash()
    assert changed_phases(recorded.to_dict(), tightened, complete={"p"}) == []


def test_the_sandbox_dies_with_a_sigkilled_autopack(layout):
    """No orphan rescue needed: bwrap's --die-with-parent takes every process of the sandbox down."""
    import signal
    import time

    marker = f"{uuid.uuid4().int % 10**6}.75"
    command = f"setsid sh -c 'sleep {marker}' & touch started; sleep {marker}"
    sandbox = layout.sandbox()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            layout.suite("", sandbox, command=command)
        finally:
            os._exit(1)
    deadline = time.monotonic() + 60
    while not (layout.worktree / "started").exists():
        assert time.monotonic() < deadline, "the suite did not start"
        time.sleep(0.05)
    assert [p for p in os.listdir("/proc") if p.isdigit() and marker in _cmdline(p)]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    deadline = time.monotonic() + 10
    while (left := [p for p in os.listdir("/proc") if p.isdigit() and marker in _cmdline(p)]):
        assert time.monotonic() < deadline, f"still running after autopack was killed: {left}"
        time.sleep(0.05)


def test_drain_workers_and_land_rebase_run_their_suites_in_the_sandbox(tmp_path):
    from drainkit import PhaseScript, Workbench

    wrapper = logging_bwrap(tmp_path / "wrapper", usable_bwrap())
    calls = wrapper.parent / "calls"
    wb = Workbench(tmp_path / "bench", settings={"AUTOPACK_SANDBOX_BWRAP": str(wrapper)})
    wb.queue("r", [PhaseScript("a"), PhaseScript("b")])

    def suites() -> tuple[int, int]:
        [(recorded,)] = rows(wb.db, "SELECT count(*) FROM test_runs WHERE kind != 'confirmed'")
        return recorded, sum("/bin/sh -c" in call for call in calls.read_text().splitlines())

    done = wb.cli("drain", "--workers", "2", "--sandbox", "bwrap")  # the workers get --sandbox from this drain
    assert done.returncode == 0, done.stdout + done.stderr
    recorded, sandboxed = suites()
    assert recorded == sandboxed > 0
    (wb.repo / "unrelated.txt").write_text("the base moves on\n")
    git(wb.repo, "add", "unrelated.txt", env=wb.env)
    git(wb.repo, "commit", "-q", "-m", "unrelated", env=wb.env)
    wb.env["AUTOPACK_SANDBOX"] = "bwrap"
    done = wb.cli("land", "r", "--rebase")
    assert done.returncode == 0, done.stderr
    assert suites()[0] == suites()[1] > recorded  # land_baseline and land ran sandboxed too


def test_no_bwrap_on_path_exits_4_before_anything_is_recorded(tmp_path, calc_project, autopack, base_env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("git", "sh"):
        (bin_dir / program).symlink_to(shutil.which(program))
    done = autopack("run", "plan.toml", "--sandbox", "bwrap", cwd=calc_project,
                    env={**base_env, "PATH": str(bin_dir)})
    assert done.returncode == 4, done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    assert "no bubblewrap executable 'bwrap' on PATH" in line and "apt-get install bubblewrap" in line
    assert not (calc_project / ".autopack").exists()
