"""The settings table: ``SETTINGS`` is the single source of truth for names, types, defaults and help.

Owns :class:`SettingSpec`, :data:`SETTINGS`, the resolved :class:`Settings`, and the table's
renderings (the default ``autopack.toml``, the README's Markdown table). Loading them
(flags > environment > file > defaults) is :mod:`autopack.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autopack.bounds import AGENT_TEST_RUNS, AGENT_TURNS, ATTEMPTS, PLANNER_TURNS, TIMEOUT_S, Bounds
from autopack.ports import BUILDER_MODES
from autopack.sandbox import MODES as SANDBOX_MODES
from autopack.store.location import StoreLocation


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
    SettingSpec("db", str, "", 'SQLite state file, or a postgresql:// URL (pip install \'autopack[postgresql]\'); '
                '"" = .autopack/autopack.db at the root of the git repository containing the current directory '
                "(else in the current directory)"),
    SettingSpec("worktrees_dir", str, "", 'directory for the runs\' git worktrees; "" = '
                "worktrees/ next to the state file"),
    SettingSpec("remote", str, "", 'git remote each run branch is fetched from before a run is taken and pushed '
                'to after every completed phase, so executors on several machines continue each other\'s runs '
                '(README "Running on more than one machine"); "" = none; a plan\'s run.remote overrides'),
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

    db: StoreLocation  # a SQLite file or a PostgresUrl
    worktrees_dir: Path
    remote: str
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
    state_dir: Path  # locks (SQLite), run artifacts, logs, crash reports: the file's directory, else .autopack
    config_file: Path | None
    sources: dict[str, str]  # setting name -> "flag" | "env" | "<file path>" | "default"


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
