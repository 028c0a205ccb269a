"""Settings: command-line flags > AUTOPACK_* environment > autopack.toml or
[tool.autopack] in pyproject.toml (nearest, from the current directory upward) > defaults.

``SETTINGS`` is the single source of truth for names, types, defaults and help.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopack.bounds import AGENT_TEST_RUNS, AGENT_TURNS, ATTEMPTS, PLANNER_TURNS, TIMEOUT_S, Bounds
from autopack.errors import ConfigError, UsageError
from autopack.text import shown
from autopack.ports import BUILDER_MODES
from autopack.sandbox import MODES as SANDBOX_MODES
from autopack.userfiles import NotARegularFile, read_regular, require_regular_or_absent

CONFIG_FILE_NAME = "autopack.toml"
_PATH_SETTINGS = ("db", "worktrees_dir")
_ABSOLUTE_PATH_LISTS = ("sandbox_writable", "sandbox_readable")  # paths inside and outside the sandbox alike
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name in files, type, default, help text and range (numbers)."""

    name: str
    type: type
    default: object
    help: str
    bounds: Bounds | None = None
    choices: tuple[str, ...] | None = None

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return f"AUTOPACK_{self.name.upper()}"

    @property
    def flag(self) -> str:
        """The command-line spelling, used in error messages about overrides."""
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("db", str, "", 'SQLite state file; "" = .autopack/autopack.db at the root of the '
                "git repository containing the current directory (else in the current directory)"),
    SettingSpec("worktrees_dir", str, "", 'directory for the runs\' git worktrees; "" = '
                "worktrees/ next to the state file"),
    SettingSpec("builder_model", str, "claude-sonnet-5-5", "Claude model that writes each change"),
    SettingSpec("doctor_model", str, "claude-haiku-5-5", "Claude model that diagnoses a failed "
                "attempt"),
    SettingSpec("escalation_model", str, "claude-opus-5-5", "stronger model the builder "
                "escalates to once after repeated failures"),
    SettingSpec("planner_model", str, "claude-sonnet-5-5", "Claude model that drafts a plan (autopack plan)"),
    SettingSpec("planner_max_turns", int, 20, "turns a planning conversation (autopack plan) may take to "
                "submit its draft; a refused draft gets one more turn to repair it", bounds=PLANNER_TURNS),
    SettingSpec("max_attempts", int, 3, "attempts per phase when the plan does not set "
                "max_attempts", bounds=ATTEMPTS),
    SettingSpec("phase_timeout_s", int, 900, "seconds before a test-suite run is killed",
                bounds=TIMEOUT_S),
    SettingSpec("max_output_bytes", int, 2_000_000, "bytes of test output kept per test run",
                bounds=Bounds(1, 1_000_000_000)),
    SettingSpec("context_max_bytes", int, 200_000, "total bytes of scope and context files "
                "shown to the builder", bounds=Bounds(0, 50_000_000)),
    SettingSpec("builder_max_tokens_cap", int, 64000, "largest max_tokens of a builder call, "
                "escalation included (budgets are estimated per phase below it)",
                bounds=Bounds(1024, 1_000_000)),
    SettingSpec("builder", str, "agent", 'how a new run builds each phase: "agent" (explores, edits and '
                'runs tests, turn by turn) or "single" (one call whose answer is the whole change)',
                choices=BUILDER_MODES),
    SettingSpec("agent_max_turns", int, 40, "turns of an agent attempt (run.limits.agent_max_turns "
                "overrides)", bounds=AGENT_TURNS),
    SettingSpec("agent_max_test_runs", int, 5, "run_tests calls of an agent attempt "
                "(run.limits.agent_max_test_runs overrides)", bounds=AGENT_TEST_RUNS),
    SettingSpec("agent_read_max_lines", int, 400, "lines one read_file result shows",
                bounds=Bounds(1, 1_000_000)),
    SettingSpec("agent_read_max_bytes", int, 40_000, "bytes one read_file result shows",
                bounds=Bounds(1000, 100_000_000)),
    SettingSpec("agent_list_max_entries", int, 500, "files one list_files result lists",
                bounds=Bounds(1, 1_000_000)),
    SettingSpec("agent_search_max_matches", int, 100, "matching lines one search result shows",
                bounds=Bounds(1, 1_000_000)),
    SettingSpec("agent_result_max_bytes", int, 30_000, "bytes of any one tool result (run_tests "
                "included)", bounds=Bounds(1000, 100_000_000)),
    SettingSpec("escalation_after_failures", int, 0, "use the escalation model after this many "
                "failed attempts in a pass (0: only for a pass's last attempt)", bounds=Bounds(0, 1000)),
    SettingSpec("doctor_max_per_phase", int, 2, "doctor diagnoses per phase (durable across "
                "passes)", bounds=Bounds(0, 1000)),
    SettingSpec("doctor_max_per_run", int, 10, "doctor diagnoses per run", bounds=Bounds(0, 100_000)),
    SettingSpec("api_max_retries", int, 2, "retries of a failed API request (429, 5xx, "
                "connection errors)", bounds=Bounds(0, 100)),
    SettingSpec("lease_s", int, 120, "seconds a claimed phase stays leased without a heartbeat "
                "before another executor may rescue it", bounds=Bounds(1, 24 * 3600)),
    SettingSpec("heartbeat_s", int, 15, "seconds between executor heartbeats (less than "
                "lease_s)", bounds=Bounds(1, 24 * 3600)),
    SettingSpec("park_after_identical_failures", int, 3, "drains park a phase whose last N "
                "failures share a fingerprint", bounds=Bounds(2, 1000)),
    SettingSpec("park_after_attempts", int, 12, "drains park a phase after this many attempts in "
                "all", bounds=Bounds(1, 100_000)),
    SettingSpec("env_allow", list, [], "fnmatch patterns of environment variables passed to "
                "the test command despite scrubbing"),
    SettingSpec("sandbox", str, "none", 'how the test commands run: "none" (as you, with your files and network) '
                'or "bwrap" (in a bubblewrap sandbox: read-only files but the worktree, no network; see README '
                '"Security model"); a plan\'s run.sandbox may tighten it', choices=SANDBOX_MODES),
    SettingSpec("sandbox_bwrap", str, "bwrap", "the bubblewrap executable: a name on PATH or a path"),
    SettingSpec("sandbox_writable", list, [], "absolute (or ~/) paths the sandboxed tests may write, e.g. a "
                "toolchain cache"),
    SettingSpec("sandbox_readable", list, [], "absolute (or ~/) paths hidden by the sandbox (under $HOME, /tmp, "
                "/run) that the sandboxed tests may read, e.g. ~/.gitconfig"),
    SettingSpec("sandbox_network", bool, False, "let the sandboxed tests use the network"),
    SettingSpec("prices", dict, {}, "price overrides in USD per million tokens (each 0-1000000), per model: "
                '"<model>" = {input = 3.0, output = 15.0, cache_write = 3.75, cache_read = 0.3} '
                "(env: JSON)"),
)
_BY_NAME = {spec.name: spec for spec in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """Resolved settings: one attribute per SettingSpec, plus where each came from."""

    db: Path
    worktrees_dir: Path
    builder_model: str
    doctor_model: str
    escalation_model: str
    planner_model: str
    planner_max_turns: int
    max_attempts: int
    phase_timeout_s: int
    max_output_bytes: int
    context_max_bytes: int
    builder_max_tokens_cap: int
    builder: str
    agent_max_turns: int
    agent_max_test_runs: int
    agent_read_max_lines: int
    agent_read_max_bytes: int
    agent_list_max_entries: int
    agent_search_max_matches: int
    agent_result_max_bytes: int
    escalation_after_failures: int
    doctor_max_per_phase: int
    doctor_max_per_run: int
    api_max_retries: int
    lease_s: int
    heartbeat_s: int
    park_after_identical_failures: int
    park_after_attempts: int
    env_allow: tuple[str, ...]
    sandbox: str
    sandbox_bwrap: str
    sandbox_writable: tuple[str, ...]
    sandbox_readable: tuple[str, ...]
    sandbox_network: bool
    prices: dict[str, tuple[float, float, float, float]]
    config_file: Path | None
    sources: dict[str, str]  # setting name -> "flag" | "env" | "<file path>" | "default"


def find_config_file(start: Path) -> Path | None:
    """The nearest autopack.toml, or pyproject.toml with [tool.autopack], from start upward."""
    start = Path(start).resolve()
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILE_NAME
        if _is_settings_file(candidate):
            return candidate
        pyproject = directory / "pyproject.toml"
        if _is_settings_file(pyproject) and _has_tool_autopack(pyproject):
            return pyproject
    return None


def _is_settings_file(path: Path) -> bool:
    """True for a regular file; False when there is none; ConfigError for a directory, FIFO or device
    (it would be silently ignored, and its settings with it)."""
    try:
        require_regular_or_absent(path)
    except (NotARegularFile, IsADirectoryError) as error:
        raise ConfigError(f"{path}: {error.strerror}; autopack reads its settings from a regular file: "
                          "replace it with one, or remove it") from None
    except OSError:  # e.g. a directory above the project we may not search: no settings there
        return False
    return path.is_file()


def default_db_path(cwd: Path) -> Path:
    """.autopack/autopack.db at the root of the git repository containing cwd, else in cwd."""
    cwd = Path(cwd).resolve()
    for directory in (cwd, *cwd.parents):
        if (directory / ".git").exists():
            return directory / ".autopack" / "autopack.db"
    return cwd / ".autopack" / "autopack.db"


def load_settings(cwd: Path, overrides: Mapping[str, object] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting; ``overrides`` are flag values by setting name (None = not given).

    Relative paths from the config file are relative to its directory; from flags or the
    environment, to ``cwd``.
    """
    cwd = Path(cwd).resolve()
    overrides = {name: value for name, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(overrides) - set(_BY_NAME))
    if unknown:
        raise ValueError(f"unknown setting override(s): {', '.join(unknown)}")
    environ = os.environ if environ is None else environ
    config_file = find_config_file(cwd)
    file_values = _read_config_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SETTINGS:
        base = cwd
        if spec.name in overrides:
            source, label = "flag", spec.flag
            value = _flag_value(spec, overrides[spec.name])
        elif spec.env in environ:
            source, label = "env", spec.env
            value = _parse_text(spec, environ[spec.env], spec.env)
        elif spec.name in file_values:
            source, label = str(config_file), f"{config_file}: {_file_key(config_file, spec.name)}"
            value, base = file_values[spec.name], config_file.parent
        else:
            source, label, value = "default", spec.name, spec.default
        problem = spec.bounds.problem(value) if spec.bounds else None
        if problem:
            raise ConfigError(f"{label}: {problem}")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{label}: {shown(value)} is not one of {', '.join(spec.choices)}")
        if spec.name in _PATH_SETTINGS and value:
            value = (base / Path(value).expanduser()).resolve()
        for item in value if spec.name in _ABSOLUTE_PATH_LISTS else ():
            if not item.startswith(("/", "~")):
                raise ConfigError(f"{label}: {shown(item)} is not an absolute path; write it as /path or ~/path")
        values[spec.name] = tuple(value) if spec.type is list else value
        sources[spec.name] = source
    if values["prices"]:
        from autopack.llm.client import parse_price_overrides

        label = {"flag": "--prices", "env": "AUTOPACK_PRICES", "default": "prices"}.get(sources["prices"])
        try:
            values["prices"] = parse_price_overrides(values["prices"], where="prices")
        except UsageError as exc:
            raise ConfigError(f"{label or sources['prices']}: {exc}") from None
    values["db"] = values["db"] or default_db_path(cwd)
    values["worktrees_dir"] = values["worktrees_dir"] or values["db"].parent / "worktrees"
    if values["heartbeat_s"] >= values["lease_s"]:
        raise ConfigError(f"heartbeat_s ({values['heartbeat_s']}, from {sources['heartbeat_s']}) "
                          f"must be less than lease_s ({values['lease_s']}, from "
                          f"{sources['lease_s']}); otherwise leases expire between heartbeats")
    return Settings(**values, config_file=config_file, sources=sources)


def default_config_toml() -> str:
    """Every setting at its default, each under a comment with its help text."""
    import textwrap

    import tomli_w

    lines = ["# autopack settings. Precedence: command-line flags > AUTOPACK_* environment",
             "# variables > this file > defaults.",
             "# In pyproject.toml, put them under [tool.autopack].",
             ""]
    for spec in SETTINGS:
        allowed = f"{spec.bounds}; " if spec.bounds else ""
        comment = textwrap.wrap(f"{spec.help} ({allowed}env {spec.env})", 86)
        lines.extend(f"# {line}" for line in comment)
        lines.append(tomli_w.dumps({spec.name: spec.default}))
    return "\n".join(lines)


def write_default_config(path: Path) -> None:
    """Write ``default_config_toml()`` to path; refuses to overwrite an existing file."""
    path = Path(path)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(default_config_toml())
    except FileExistsError:
        raise UsageError(f"{shown(str(path), quote=False)}: already exists; edit it or delete it first") from None
    except OSError as error:
        raise UsageError(f"{shown(str(path), quote=False)}: cannot write the file: {error.strerror}") from None


def settings_markdown_table() -> str:
    """A Markdown table of every setting, for the README."""
    import tomli_w

    rows = ["| setting | env | default | range | meaning |", "|---|---|---|---|---|"]
    for spec in SETTINGS:
        default = tomli_w.dumps({"x": spec.default}).strip().removeprefix("x = ") if spec.default != {} else "{}"
        allowed = spec.bounds.span if spec.bounds else ""
        meaning = spec.help.replace("|", "\\|")
        rows.append(f"| `{spec.name}` | `{spec.env}` | `{default}` | {allowed} | {meaning} |")
    return "\n".join(rows) + "\n"


def _has_tool_autopack(pyproject: Path) -> bool:
    text = _read_text(pyproject)
    if "autopack" not in text:
        return False
    tool = _parse_toml(text, pyproject).get("tool", {})
    return isinstance(tool, dict) and "autopack" in tool


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings a config file sets, type-checked; unknown keys are errors."""
    data = _parse_toml(_read_text(path), path)
    if path.name == "pyproject.toml":
        data = data["tool"]["autopack"]
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: tool.autopack: expected a table, got {type(data).__name__}")
    for name, value in data.items():
        key = _file_key(path, name)
        spec = _BY_NAME.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"valid settings: {', '.join(_BY_NAME)}")
            raise ConfigError(f"{path}: {shown(key, quote=False)}: unknown setting; {hint}")
        _check_type(spec, value, f"{path}: {key}")
    return data


def _file_key(path: Path, name: str) -> str:
    return f"tool.autopack.{name}" if path.name == "pyproject.toml" else name


def _read_text(path: Path) -> str:
    try:
        return read_regular(path).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8; save the file as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the file: {error.strerror}") from None


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply to read") from None


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list of strings", dict: "a table"}


def _check_type(spec: SettingSpec, value: Any, label: str) -> None:
    """Raise ConfigError unless value (from TOML or a flag) has the setting's type."""
    if spec.type is list:
        valid = isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)
    elif spec.type is float:
        valid = isinstance(value, int | float) and not isinstance(value, bool)
    elif spec.type is int:
        valid = isinstance(value, int) and not isinstance(value, bool)
    else:
        valid = isinstance(value, spec.type)
    if not valid:
        raise ConfigError(f"{label}: expected {_TYPE_NAMES[spec.type]}, got {shown(value)}")


def _flag_value(spec: SettingSpec, value: object) -> Any:
    if isinstance(value, Path) and spec.type is str:
        return str(value)
    if isinstance(value, str) and spec.type is not str:
        return _parse_text(spec, value, spec.flag)
    _check_type(spec, value, spec.flag)
    return value


def _parse_text(spec: SettingSpec, text: str, label: str) -> Any:
    """Parse an environment (or string flag) value: bools 1/0/true/false/yes/no, lists a,b,c."""
    if spec.type is str:
        return text
    if spec.type is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if spec.type is dict:
        import json

        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to read
            value = None
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: {shown(text)} is not a JSON object")
        return value
    if spec.type is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ConfigError(f"{label}: {shown(text)} is not a boolean; use 1/0, true/false or yes/no")
    try:
        return spec.type(text.strip())
    except ValueError:
        noun = "an integer" if spec.type is int else "a number"
        raise ConfigError(f"{label}: {shown(text)} is not {noun}") from None
