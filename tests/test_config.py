"""Settings: precedence, config-file discovery, default paths, clear errors, generated config."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from autopack.config import default_db_path, find_config_file, load_settings, write_default_config
from autopack.errors import ConfigError, UsageError
from autopack.settings import SETTINGS, Settings, default_config_toml, settings_markdown_table


def test_settings_dataclass_has_one_attribute_per_setting():
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names == [spec.name for spec in SETTINGS] + ["state_dir", "config_file", "sources"]


def test_defaults_without_any_source(tmp_path):
    settings = load_settings(tmp_path, environ={})
    assert settings.config_file is None
    assert settings.builder_model == "claude-sonnet-5-5"
    assert (settings.max_attempts, settings.lease_s, settings.heartbeat_s) == (3, 120, 15)
    assert settings.env_allow == ()
    assert settings.db == tmp_path.resolve() / ".autopack" / "autopack.db"
    assert settings.worktrees_dir == tmp_path.resolve() / ".autopack" / "worktrees"
    assert set(settings.sources.values()) == {"default"}


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    config = tmp_path / "autopack.toml"
    config.write_text('max_attempts = 4\nphase_timeout_s = 60\nbuilder_model = "file-model"\n'
                      'doctor_model = "file-doctor"\n')
    environ = {"AUTOPACK_MAX_ATTEMPTS": "5", "AUTOPACK_PHASE_TIMEOUT_S": "70"}
    settings = load_settings(tmp_path, overrides={"max_attempts": 6, "doctor_model": None},
                             environ=environ)
    assert settings.max_attempts == 6 and settings.sources["max_attempts"] == "flag"
    assert settings.phase_timeout_s == 70 and settings.sources["phase_timeout_s"] == "env"
    assert settings.builder_model == "file-model"
    assert settings.sources["builder_model"] == str(config.resolve())
    assert settings.doctor_model == "file-doctor"  # a None override means "flag not given"
    assert settings.lease_s == 120 and settings.sources["lease_s"] == "default"
    assert settings.config_file == config.resolve()


def test_pyproject_tool_section_found_from_a_subdirectory(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.autopack]\nmax_attempts = 7\ndb = "state/a.db"\n')
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    settings = load_settings(deep, environ={})
    assert settings.config_file == (tmp_path / "pyproject.toml").resolve()
    assert settings.max_attempts == 7
    assert settings.db == (tmp_path / "state" / "a.db").resolve()  # relative to the file
    assert settings.worktrees_dir == (tmp_path / "state" / "worktrees").resolve()


def test_search_skips_pyproject_without_tool_autopack_and_prefers_nearest(tmp_path):
    (tmp_path / "autopack.toml").write_text("max_attempts = 2\n")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "autopack-user"\n')
    assert find_config_file(inner) == (tmp_path / "autopack.toml").resolve()
    (inner / "autopack.toml").write_text("max_attempts = 9\n")
    assert find_config_file(inner) == (inner / "autopack.toml").resolve()
    assert load_settings(inner, environ={}).max_attempts == 9


def test_env_and_flag_paths_are_relative_to_cwd(tmp_path):
    settings = load_settings(tmp_path, overrides={"worktrees_dir": Path("wt")},
                             environ={"AUTOPACK_DB": "data/x.db"})
    assert settings.db == tmp_path.resolve() / "data" / "x.db"
    assert settings.worktrees_dir == tmp_path.resolve() / "wt"


def test_env_list_is_comma_separated(tmp_path):
    settings = load_settings(tmp_path, environ={"AUTOPACK_ENV_ALLOW": "PIP_*, LANG ,,"})
    assert settings.env_allow == ("PIP_*", "LANG")


def test_default_db_path_in_git_repo_subdir_is_at_repo_root(tmp_path):
    (tmp_path / ".git").mkdir()
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert default_db_path(sub) == tmp_path.resolve() / ".autopack" / "autopack.db"
    assert load_settings(sub, environ={}).db == tmp_path.resolve() / ".autopack" / "autopack.db"


def test_default_db_path_recognises_a_worktree_git_file(tmp_path):
    (tmp_path / ".git").write_text("gitdir: /somewhere/else\n")
    assert default_db_path(tmp_path / "x") == tmp_path.resolve() / ".autopack" / "autopack.db"


@pytest.mark.parametrize(("file_name", "text", "expected"), [
    ("autopack.toml", 'builder_modle = "x"\n',
     "autopack.toml: builder_modle: unknown setting; did you mean 'builder_model'?"),
    ("pyproject.toml", "[tool.autopack]\nlease = 10\n",
     "pyproject.toml: tool.autopack.lease: unknown setting; did you mean 'lease_s'?"),
    ("autopack.toml", "colour = 1\n", "autopack.toml: colour: unknown setting; valid settings: db,"),
    ("autopack.toml", 'max_attempts = "3"\n',
     "autopack.toml: max_attempts: expected an integer, got '3'"),
    ("autopack.toml", 'env_allow = "PATH"\n',
     "autopack.toml: env_allow: expected a list of strings"),
    ("autopack.toml", "max_attempts = 0\n",
     "autopack.toml: max_attempts: must be an integer from 1 to 1000, got 0"),
    ("autopack.toml", "max_attempts = \n",
     "autopack.toml: invalid TOML: Invalid value (at line 1"),
    ("pyproject.toml", "[tool]\nautopack = 3\n", "pyproject.toml: tool.autopack: expected a table"),
])
def test_config_file_errors_name_file_and_key(tmp_path, file_name, text, expected):
    (tmp_path / file_name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert expected in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path.resolve()))
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("environ", "expected"), [
    ({"AUTOPACK_MAX_ATTEMPTS": "x"}, "AUTOPACK_MAX_ATTEMPTS: 'x' is not an integer"),
    ({"AUTOPACK_LEASE_S": "0"}, "AUTOPACK_LEASE_S: must be an integer from 1 to 86400, got 0"),
    ({"AUTOPACK_HEARTBEAT_S": "200"}, "heartbeat_s (200, from env) must be less than lease_s"),
    ({"AUTOPACK_BUILDER": "multi"}, "AUTOPACK_BUILDER: 'multi' is not one of agent, single"),
    ({"AUTOPACK_AGENT_MAX_TURNS": "0"}, "AUTOPACK_AGENT_MAX_TURNS: must be an integer from 1 to 10000, got 0"),
])
def test_bad_environment_values(tmp_path, environ, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=environ)
    assert expected in str(caught.value)


def test_bad_flag_value_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--max-attempts: 'many' is not an integer"):
        load_settings(tmp_path, overrides={"max_attempts": "many"}, environ={})
    with pytest.raises(ConfigError, match="--env-allow: expected a list of strings"):
        load_settings(tmp_path, overrides={"env_allow": [1]}, environ={})


def test_default_config_toml_parses_back_to_exactly_the_defaults():
    text = default_config_toml()
    assert tomllib.loads(text) == {spec.name: spec.default for spec in SETTINGS}
    for spec in SETTINGS:
        assert spec.env in text  # every key is documented by a comment


def test_written_default_config_loads_and_refuses_overwrite(tmp_path):
    path = tmp_path / "autopack.toml"
    write_default_config(path)
    settings = load_settings(tmp_path, environ={})
    assert settings.config_file == path.resolve()
    assert settings.max_attempts == 3
    assert settings.db == tmp_path.resolve() / ".autopack" / "autopack.db"
    path.write_text("max_attempts = 8\n")
    with pytest.raises(UsageError, match="autopack.toml: already exists; edit it or delete it"):
        write_default_config(path)
    assert path.read_text() == "max_attempts = 8\n"


def test_markdown_table_lists_every_setting():
    table = settings_markdown_table()
    lines = table.strip().splitlines()
    assert lines[0] == "| setting | env | default | range | meaning |"
    assert len(lines) == 2 + len(SETTINGS)
    assert "| `max_attempts` | `AUTOPACK_MAX_ATTEMPTS` | `3` | 1-1000 |" in table
    assert all(spec.bounds for spec in SETTINGS if spec.type is int)  # every number has a range


def test_price_overrides_from_the_config_file_and_their_errors(tmp_path):
    (tmp_path / "autopack.toml").write_text(
        '[prices]\n"my-model" = {input = 1.0, output = 2.0, cache_write = 1.25, cache_read = 0.1}\n')
    settings = load_settings(tmp_path, environ={})
    assert settings.prices == {"my-model": (1.0, 2.0, 1.25, 0.1)}
    assert settings.sources["prices"] == str(tmp_path / "autopack.toml")

    (tmp_path / "autopack.toml").write_text('[prices]\n"my-model" = {input = 1.0, outptu = 2.0}\n')
    with pytest.raises(ConfigError, match="outptu"):
        load_settings(tmp_path, environ={})
    with pytest.raises(ConfigError, match="AUTOPACK_PRICES"):
        load_settings(tmp_path, environ={"AUTOPACK_PRICES": "not json"})


def test_db_may_be_a_postgresql_url_and_the_state_dir_is_then_at_the_git_root(tmp_path):
    from autopack.store.location import PostgresUrl

    (tmp_path / ".git").mkdir()
    (tmp_path / "sub").mkdir()
    url = "postgresql://autopack:secret@db.example/autopack"
    settings = load_settings(tmp_path / "sub", environ={"AUTOPACK_DB": url})
    assert settings.db == PostgresUrl(url) and "secret" not in str(settings.db)
    assert settings.state_dir == tmp_path / ".autopack"
    assert settings.worktrees_dir == tmp_path / ".autopack" / "worktrees"
    on_file = load_settings(tmp_path / "sub", {"db": "state/x.db"}, environ={})
    assert on_file.db == tmp_path / "sub" / "state" / "x.db" and on_file.state_dir == tmp_path / "sub" / "state"
