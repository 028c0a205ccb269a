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
from autopack.config import SETTINGS, load_settings

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
