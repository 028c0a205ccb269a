"""The command line itself: fast help, version, init, and status where there is nothing yet."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
import typer

from drainkit import PhaseScript, Workbench

from autopack import __version__
from autopack.cli import app
from autopack.config import load_settings
from autopack.settings import SETTINGS

HEAVY = {"anthropic", "httpx", "httpx2", "sqlalchemy", "sqlmodel", "git"}
COMMANDS = sorted(typer.main.get_command(app).commands)


def imported_modules(args: list[str], cwd, env) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the CLI under ``-X importtime``; return the result and the top-level packages it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "autopack", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0]
             for line in done.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    return done, names


def test_help_is_fast_because_it_imports_no_heavy_library(tmp_path, base_env):
    done, modules = imported_modules(["--help"], tmp_path, base_env)
    assert done.returncode == 0
    assert "autopack" in modules and "typer" in modules  # the parse worked
    assert not modules & HEAVY, modules & HEAVY
    for command in COMMANDS:
        assert command in done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_short_help_without_heavy_imports(tmp_path, base_env, command):
    done, modules = imported_modules([command, "-h"], tmp_path, base_env)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and "--help" in done.stdout
    assert not modules & HEAVY, modules & HEAVY


def test_read_commands_on_a_database_load_no_orm(tmp_path, base_env):
    """Read commands answer from SQL over sqlite3: SQLAlchemy and SQLModel cost ~0.4 s to load.
    (pydantic is typer's own: it parses every command's parameters with it.)"""
    wb = Workbench(tmp_path)
    wb.queue_many({"run-a": [PhaseScript("a")], "run-b": [PhaseScript("a")]})
    reads = [["status"], ["status", "--json"], ["status", "run-a"], ["status", "--stats"], ["pick-next"],
             ["drain", "--dry-run"], ["ab-test", "--pair", "run-a:run-b", "--allow-mismatch"]]
    before = wb.db.read_bytes()
    for args in reads:
        done, modules = imported_modules(args, wb.root, wb.env)
        assert done.returncode == 0, (args, done.stderr)
        assert not modules & HEAVY, (args, modules & HEAVY)
    assert wb.db.read_bytes() == before  # read commands write nothing
    assert sorted(p.name for p in wb.db.parent.iterdir() if p.name.startswith(wb.db.name)) == [wb.db.name]
    assert "run-a" in imported_modules(["pick-next"], wb.root, wb.env)[0].stdout


def test_version(tmp_path, autopack):
    done = autopack("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"autopack {__version__}\n")


def test_init_writes_a_config_that_loads_and_never_overwrites(tmp_path, autopack):
    done = autopack("init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "autopack.toml"
    written = config.read_text()
    assert set(tomllib.loads(written)) == {spec.name for spec in SETTINGS}
    settings = load_settings(tmp_path, environ={})
    assert settings.config_file == config
    assert settings.max_attempts == next(spec.default for spec in SETTINGS if spec.name == "max_attempts")

    again = autopack("init", cwd=tmp_path)
    assert again.returncode == 2
    [line] = again.stderr.splitlines()
    assert line.startswith("autopack: error: ") and "autopack.toml" in line and "already exists" in line
    assert config.read_text() == written


def test_status_with_no_database_says_so_and_creates_nothing(tmp_path, autopack):
    done = autopack("status", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no runs" in done.stdout
    as_json = autopack("status", "--json", cwd=tmp_path)
    listing = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and (listing["schema"], listing["runs"]) == (1, [])
    assert list(tmp_path.iterdir()) == []


def test_status_of_an_unknown_run_is_a_usage_error(tmp_path, autopack):
    done = autopack("status", "nosuchrun", cwd=tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("autopack: error: ") and "nosuchrun" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, what, command", [
    (["status", "--bogus"], "no such option: --bogus", "autopack status"),
    (["status", "--limit"], "option '--limit' requires an argument", "autopack status"),
    (["status", "--limit", "many"], "invalid value for '--limit': ", "autopack status"),
    (["drain-one", "--run-id", "r"], "missing option '--phase-id'", "autopack drain-one"),
    (["status", "a", "b"], "got unexpected extra argument(s) (b)", "autopack status"),
    (["nosuch"], "no such command 'nosuch'", "autopack"),
])
def test_a_usage_error_is_one_line_naming_the_help_to_read(tmp_path, autopack, args, what, command):
    done = autopack(*args, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"autopack: error: {what}") and line.endswith(f" (see {command} --help)"), line
    assert list(tmp_path.iterdir()) == []


def test_autopack_alone_prints_its_help(tmp_path, autopack):
    done = autopack(cwd=tmp_path)
    assert done.returncode == 2
    assert "Usage: autopack" in done.stderr and "Commands:" in done.stderr


# -- the error boundary: an unexpected error is a bug, said in one line, with the traceback kept ----------


def failing_open_reader(error: BaseException):
    """A fault for a forked child: reading the database raises ``error`` (what a bug would raise)."""

    def prepare() -> None:
        import autopack.store

        def open_reader(path):
            raise error

        autopack.store.open_reader = open_reader

    return prepare


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory", "/a/bug/path"),
                                   RecursionError("maximum recursion depth exceeded"), OSError(28, "No space")],
                         ids=["FileNotFoundError", "RecursionError", "OSError"])
def test_an_unexpected_error_is_a_bug_in_one_line_with_its_traceback_in_a_crash_log(tmp_path, error):
    """Before: a FileNotFoundError from a bug was told to "free space or fix permissions" (exit 4) and a
    RecursionError that "an input file is nested too deeply" (exit 2)."""
    from hostile import forkcli

    wb = Workbench(tmp_path)
    wb.queue("r", [PhaseScript("a")])
    done = forkcli.run(["status", "r", "--json"], cwd=wb.root, env=wb.env, logs=tmp_path / "logs",
                       prepare=failing_open_reader(error))
    assert done.code == 70, done.output
    [line] = done.stderr.splitlines()
    name = type(error).__name__
    assert line.startswith(f"autopack: error: internal error ({name}): this is a bug in autopack"), line
    assert "free space" not in line and "nested too deeply" not in line
    [log] = (wb.db.parent / "crash").glob("*.log")
    assert f"the traceback is in {log}; please report it" in line
    text = log.read_text()
    assert "command: autopack status r --json" in text and f"autopack {__version__}" in text
    assert "Traceback (most recent call last)" in text and "in open_reader" in text and name in text
    assert done.crash_log == text and "Traceback" in done.output  # the battery still sees the crash


def test_a_crash_before_there_is_a_state_directory_logs_to_the_temporary_directory(tmp_path):
    import tempfile
    from pathlib import Path

    from hostile import forkcli

    done = forkcli.run(["status"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                       logs=tmp_path / ".logs", prepare=failing_open_reader(KeyError("phase")))
    assert done.code == 70, done.output
    [line] = done.stderr.splitlines()
    log = Path(forkcli.CRASH_LOG.search(line).group(1))
    assert log.parent == Path(tempfile.gettempdir()) / "autopack" / "crash" and "KeyError" in log.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".logs"]  # no .autopack created for it
    log.unlink()
