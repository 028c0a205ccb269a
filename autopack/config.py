"""Loading settings: command-line flags > AUTOPACK_* environment > autopack.toml or
[tool.autopack] in pyproject.toml (nearest, from the current directory upward) > defaults.

The table itself (names, types, defaults, help) is :data:`autopack.settings.SETTINGS`.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autopack.errors import ConfigError, UsageError
from autopack.text import shown
from autopack.store.location import is_postgres_url, parse_location
from autopack.settings import _BY_NAME, SETTINGS, Settings, SettingSpec, default_config_toml
from autopack.userfiles import NotARegularFile, read_regular, require_regular_or_absent

CONFIG_FILE_NAME = "autopack.toml"
_PATH_SETTINGS = ("db", "worktrees_dir")
_ABSOLUTE_PATH_LISTS = ("sandbox_writable", "sandbox_readable")  # paths inside and outside the sandbox alike
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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
        if spec.name in _PATH_SETTINGS and value and not (spec.name == "db" and is_postgres_url(value)):
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
    values["db"] = parse_location(values["db"] or default_db_path(cwd))
    state_dir = values["db"].parent if isinstance(values["db"], Path) else default_db_path(cwd).parent
    values["worktrees_dir"] = values["worktrees_dir"] or state_dir / "worktrees"
    if values["heartbeat_s"] >= values["lease_s"]:
        raise ConfigError(f"heartbeat_s ({values['heartbeat_s']}, from {sources['heartbeat_s']}) "
                          f"must be less than lease_s ({values['lease_s']}, from "
                          f"{sources['lease_s']}); otherwise leases expire between heartbeats")
    return Settings(**values, state_dir=state_dir, config_file=config_file, sources=sources)


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
