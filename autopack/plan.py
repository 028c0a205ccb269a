"""The plan file (contract 1 in DESIGN.md): TOML -> validated, immutable PlanSpec.

Every problem raises ``PlanError`` with one line:
``<plan path>: <key path>: <what is wrong>; <what to do>``.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopack.bounds import AGENT_TEST_RUNS, AGENT_TURNS, ATTEMPTS, TIMEOUT_S, Bounds
from autopack.errors import PlanError
from autopack.plan_checks import _Checker, _describe, _suggest
from autopack.ports import BUILDER_MODES
from autopack.sandbox import MODES as SANDBOX_MODES
from autopack.text import shown, to_json
from autopack.userfiles import read_regular

CATEGORIES = ("feature", "bugfix", "tests", "docs", "refactor", "config")
COMPLEXITIES = ("low", "medium", "high")
DEFAULT_TEST_COMMAND = "python -m pytest -q"
MODEL_ROLES = ("builder", "doctor", "escalation")
# [run] keys that say which run this is and where its answers come from, not what the plan asks:
# two runs that differ only in these are runs of the same plan (ab-test pairs them).
NOT_PLAN_CONTENT = ("id", "flags", "cassette", "remote")

_TOP_KEYS = ("run", "phases")
_RUN_KEYS = ("id", "goal", "repo", "base", "test_command", "junit_xml", "cassette",
             "flags", "models", "limits", "type", "builder", "sandbox", "remote")
_LIMIT_KEYS = ("max_cost_usd", "phase_timeout_s", "agent_max_turns", "agent_max_test_runs")
_PHASE_KEYS = ("id", "goal", "category", "complexity", "scope", "context", "deliverables",
               "acceptance", "depends_on", "allow_noop", "max_attempts",
               "acceptance_tests", "require_f2p", "tests_may_change", "allow_skip")
# Categories whose phases must prove their goal with a fail-to-pass test unless require_f2p says otherwise,
# and those whose pre-existing tests must still pass on the new code unless tests_may_change says otherwise.
F2P_CATEGORIES = ("feature", "bugfix")
FROZEN_TEST_CATEGORIES = ("feature", "bugfix", "docs", "config")
MAX_COST_USD = Bounds(0, 1_000_000, integer=False, above=True)  # run.limits.max_cost_usd


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of a plan, with defaults filled in."""

    id: str
    goal: str
    category: str = "feature"
    complexity: str = "medium"
    scope: tuple[str, ...] | None = None  # None: no path restriction (omitted, or legacy text)
    scope_text: str | None = None  # legacy free-text scope, shown to the builder
    context: tuple[str, ...] = ()
    deliverables: tuple[str, ...] = ()
    acceptance: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    allow_noop: bool = False
    max_attempts: int = 3
    acceptance_tests: tuple[str, ...] = ()  # test ids that must exist and pass after, fail or not exist before
    require_f2p: bool | None = None  # None: by category (F2P_CATEGORIES)
    tests_may_change: bool | None = None  # None: by category (not FROZEN_TEST_CATEGORIES)
    allow_skip: tuple[str, ...] = ()  # baseline-passing test ids this phase may leave skipped
    position: int = 0  # index in the plan file

    @property
    def f2p_required(self) -> bool:
        """Whether missing fail-to-pass evidence fails the attempt (contract 5)."""
        return self.category in F2P_CATEGORIES if self.require_f2p is None else self.require_f2p

    @property
    def old_tests_may_change(self) -> bool:
        """Whether the phase may change what its pre-existing tests assert (contract 5)."""
        return self.category not in FROZEN_TEST_CATEGORIES if self.tests_may_change is None else self.tests_may_change

    def to_dict(self) -> dict[str, Any]:
        """The phase as plan-file keys (``position`` is implied by the list order)."""
        data: dict[str, Any] = {"id": self.id, "goal": self.goal, "category": self.category,
                                "complexity": self.complexity}
        if self.scope is not None:
            data["scope"] = list(self.scope)
        elif self.scope_text is not None:
            data["scope"] = self.scope_text
        data.update(context=list(self.context), deliverables=list(self.deliverables),
                    acceptance=list(self.acceptance), depends_on=list(self.depends_on),
                    allow_noop=self.allow_noop, max_attempts=self.max_attempts)
        # Goal-evidence keys only when given: a plan without them keeps the content hash it always had.
        if self.acceptance_tests:
            data["acceptance_tests"] = list(self.acceptance_tests)
        if self.require_f2p is not None:
            data["require_f2p"] = self.require_f2p
        if self.tests_may_change is not None:
            data["tests_may_change"] = self.tests_may_change
        if self.allow_skip:
            data["allow_skip"] = list(self.allow_skip)
        return data


@dataclass(frozen=True)
class RunSpec:
    """The ``[run]`` table; ``repo``/``cassette`` absolute, ``*_as_written`` as in the file."""

    id: str
    goal: str
    repo: Path
    base: str | None = None  # None: HEAD
    test_command: str | None = None  # None: detected from the repository (autopack.toolchains)
    junit_xml: str | None = None
    cassette: Path | None = None
    flags: dict[str, str | bool | int | float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int | float] = field(default_factory=dict)
    type: str | None = None
    builder: str | None = None  # agent | single; None: as recorded, else the `builder` setting
    sandbox: str | None = None  # none | bwrap: tightens the `sandbox` setting, never loosens it
    remote: str | None = None  # the git remote of the run branch (contract 6); None: the `remote` setting
    repo_as_written: str = "."
    cassette_as_written: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The run as plan-file keys, paths as written (relative to the plan file)."""
        data: dict[str, Any] = {"id": self.id, "goal": self.goal, "repo": self.repo_as_written}
        optional = {"test_command": self.test_command, "base": self.base, "junit_xml": self.junit_xml,
                    "cassette": self.cassette_as_written, "type": self.type, "builder": self.builder,
                    "sandbox": self.sandbox, "remote": self.remote}
        data.update({key: value for key, value in optional.items() if value is not None})
        data.update(flags=dict(self.flags), models=dict(self.models), limits=dict(self.limits))
        return data


@dataclass(frozen=True)
class PlanSpec:
    """A validated plan: the run, its phases in file order, and load warnings."""

    path: Path  # the plan file, as given to load_plan / plan_from_dict
    run: RunSpec
    phases: tuple[PhaseSpec, ...]
    warnings: tuple[str, ...] = ()

    def phase(self, phase_id: str) -> PhaseSpec:
        """The phase with this id; PlanError (with did-you-mean) if there is none."""
        for phase in self.phases:
            if phase.id == phase_id:
                return phase
        ids = [phase.id for phase in self.phases]
        raise PlanError(f"{shown(str(self.path), quote=False)}: no phase {shown(phase_id)}; "
                        f"{_suggest(phase_id, ids, 'phases')}")

    def execution_order(self) -> list[PhaseSpec]:
        """Phases in dependency order; among ready phases, plan order wins."""
        waiting = {phase.id: set(phase.depends_on) for phase in self.phases}
        by_id = {phase.id: phase for phase in self.phases}
        ready = [(phase.position, phase.id) for phase in self.phases if not phase.depends_on]
        heapq.heapify(ready)
        order: list[PhaseSpec] = []
        while ready:
            _, phase_id = heapq.heappop(ready)
            order.append(by_id[phase_id])
            for other, deps in waiting.items():
                if phase_id in deps:
                    deps.discard(phase_id)
                    if not deps:
                        heapq.heappush(ready, (by_id[other].position, other))
        return order

    def to_dict(self) -> dict[str, Any]:
        """JSON-able plan content; ``plan_from_dict(d, self.path)`` rebuilds an equal spec."""
        return {"run": self.run.to_dict(), "phases": [phase.to_dict() for phase in self.phases]}

    def content_hash(self) -> str:
        """sha256 of the canonical content: changes iff the plan's meaning changes."""
        return _sha256_json(self.to_dict())

    def comparable_hash(self) -> str:
        """Like content_hash, but ignoring what ab-test compares runs by (see ``comparable_hash``)."""
        return comparable_hash(self.to_dict())


def comparable_hash(plan: dict[str, Any]) -> str:
    """sha256 of a recorded plan (``PlanSpec.to_dict()``) without ``NOT_PLAN_CONTENT``: runs of one
    plan hash alike whatever their id, flags or the cassette their answers come from."""
    run = {key: value for key, value in plan.get("run", {}).items() if key not in NOT_PLAN_CONTENT}
    return _sha256_json({**plan, "run": run})


def load_plan(path: Path, *, default_max_attempts: int = 3) -> PlanSpec:
    """Read, parse and validate a plan file; ``repo`` must be a directory, ``cassette`` a file."""
    path = Path(path)
    shown_path = shown(str(path), quote=False)
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        raise PlanError(f"{shown_path}: no such file; check the path") from None
    except IsADirectoryError:
        raise PlanError(f"{shown_path}: is a directory; pass the plan's .toml file") from None
    except OSError as error:
        raise PlanError(f"{shown_path}: cannot read the file: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise PlanError(f"{shown_path}: not valid UTF-8 (line {line}, byte {error.start}); "
                        "save the file as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"{shown_path}: invalid TOML: {error}") from None
    except RecursionError:
        raise PlanError(f"{shown_path}: invalid TOML: nested too deeply to read") from None
    spec = plan_from_dict(data, path, default_max_attempts=default_max_attempts)
    run = spec.run
    if not run.repo.is_dir():
        raise PlanError(f"{shown_path}: run.repo: {shown(run.repo_as_written)} resolves to "
                        f"{shown(str(run.repo), quote=False)}, which is not a directory; give the "
                        "repository's path relative to the plan file")
    if run.cassette is not None and not run.cassette.is_file():
        raise PlanError(f"{shown_path}: run.cassette: {shown(run.cassette_as_written)} resolves to "
                        f"{shown(str(run.cassette), quote=False)}, which is not a file; fix the path or "
                        "record one with --record")
    return spec


def plan_from_dict(data: Any, path: Path, *, default_max_attempts: int = 3) -> PlanSpec:
    """Validate parsed plan content (a TOML document or ``PlanSpec.to_dict()``).

    Checks everything except that ``repo`` and ``cassette`` exist (``load_plan`` does), so a
    plan stored in the database can be rebuilt after those files moved.
    """
    path = Path(path)
    check = _Checker(shown(str(path), quote=False))
    _check_finite(check, data)
    top = check.table(data, "", _TOP_KEYS, required=_TOP_KEYS)
    run = _run_spec(check, top["run"], path.resolve().parent)
    raw_phases = top["phases"]
    if not isinstance(raw_phases, list) or not all(isinstance(p, dict) for p in raw_phases):
        check.fail("phases",
                   f"expected an array of tables ([[phases]]), got {_describe(raw_phases)}")
    if not raw_phases:
        check.fail("phases", "is empty; add at least one [[phases]] table")
    phases = tuple(_phase_spec(check, raw, index, default_max_attempts)
                   for index, raw in enumerate(raw_phases))
    _check_dependencies(check, phases)
    return PlanSpec(path=path, run=run, phases=phases, warnings=tuple(check.warnings))


def _run_spec(check: _Checker, raw: Any, plan_dir: Path) -> RunSpec:
    run = check.table(raw, "run", _RUN_KEYS, required=("id", "goal"))
    run_id = check.identifier(run["id"], "run.id")
    repo_text = check.string(run.get("repo", "."), "run.repo")
    cassette_text = check.optional_string(run, "cassette", "run")
    flags = check.table(run.get("flags", {}), "run.flags", None)
    for name, value in flags.items():
        if not isinstance(value, str | bool | int | float):
            check.fail(f"run.flags.{name}",
                       f"expected a string, boolean or number, got {_describe(value)}")
    models = check.table(run.get("models", {}), "run.models", MODEL_ROLES)
    limits = check.table(run.get("limits", {}), "run.limits", _LIMIT_KEYS)
    checked_limits: dict[str, int | float] = {}
    if "max_cost_usd" in limits:
        checked_limits["max_cost_usd"] = check.number(limits["max_cost_usd"], "run.limits.max_cost_usd",
                                                      MAX_COST_USD)
    if "phase_timeout_s" in limits:
        checked_limits["phase_timeout_s"] = check.integer(limits["phase_timeout_s"],
                                                          "run.limits.phase_timeout_s", TIMEOUT_S)
    for key, bounds in (("agent_max_turns", AGENT_TURNS), ("agent_max_test_runs", AGENT_TEST_RUNS)):
        if key in limits:
            checked_limits[key] = check.integer(limits[key], f"run.limits.{key}", bounds)
    return RunSpec(
        id=run_id,
        goal=check.string(run["goal"], "run.goal"),
        repo=(plan_dir / Path(repo_text).expanduser()).resolve(),
        base=check.optional_string(run, "base", "run"),
        test_command=check.optional_string(run, "test_command", "run"),
        junit_xml=check.optional_string(run, "junit_xml", "run"),
        cassette=None if cassette_text is None
        else (plan_dir / Path(cassette_text).expanduser()).resolve(),
        flags=dict(flags),
        models={role: check.string(value, f"run.models.{role}") for role, value in models.items()},
        limits=checked_limits,
        type=check.optional_string(run, "type", "run"),
        builder=check.choice(run["builder"], "run.builder", BUILDER_MODES) if "builder" in run else None,
        sandbox=check.choice(run["sandbox"], "run.sandbox", SANDBOX_MODES) if "sandbox" in run else None,
        remote=_remote_name(check, run["remote"]) if "remote" in run else None,
        repo_as_written=repo_text,
        cassette_as_written=cassette_text,
    )


def _remote_name(check: _Checker, value: Any) -> str:
    name = check.string(value, "run.remote")
    if name.startswith("-") or any(c.isspace() or c == ":" for c in name):
        check.fail("run.remote", f"{shown(name)} is not a git remote name; give one that `git remote` lists, "
                                 "e.g. 'origin'")
    return name


def _phase_spec(check: _Checker, raw: dict, index: int, default_max_attempts: int) -> PhaseSpec:
    where = f"phases[{index}]"
    phase = check.table(raw, where, _PHASE_KEYS, required=("id", "goal"))
    scope: tuple[str, ...] | None = None
    scope_text: str | None = None
    if isinstance(phase.get("scope"), str):
        scope_text = check.string(phase["scope"], f"{where}.scope")
        check.warnings.append(f"{check.shown}: {where}.scope: free-text scope is deprecated; "
                              "list paths (file or dir/) to restrict edits")
    elif "scope" in phase:
        scope = check.paths(phase["scope"], f"{where}.scope")
        if not scope:
            check.fail(f"{where}.scope", "is an empty list; list the paths the builder may "
                                         "change, or omit scope to allow any path")
    return PhaseSpec(
        id=check.identifier(phase["id"], f"{where}.id"),
        goal=check.string(phase["goal"], f"{where}.goal"),
        category=check.choice(phase.get("category", "feature"), f"{where}.category", CATEGORIES),
        complexity=check.choice(phase.get("complexity", "medium"), f"{where}.complexity",
                                COMPLEXITIES),
        scope=scope,
        scope_text=scope_text,
        context=check.paths(phase.get("context", []), f"{where}.context"),
        deliverables=check.paths(phase.get("deliverables", []), f"{where}.deliverables"),
        acceptance=check.strings(phase.get("acceptance", []), f"{where}.acceptance"),
        depends_on=check.strings(phase.get("depends_on", []), f"{where}.depends_on"),
        allow_noop=check.boolean(phase.get("allow_noop", False), f"{where}.allow_noop"),
        max_attempts=check.integer(phase.get("max_attempts", default_max_attempts),
                                   f"{where}.max_attempts", ATTEMPTS),
        acceptance_tests=_test_ids(check, phase.get("acceptance_tests", []), f"{where}.acceptance_tests"),
        require_f2p=None if "require_f2p" not in phase
        else check.boolean(phase["require_f2p"], f"{where}.require_f2p"),
        tests_may_change=None if "tests_may_change" not in phase
        else check.boolean(phase["tests_may_change"], f"{where}.tests_may_change"),
        allow_skip=_test_ids(check, phase.get("allow_skip", []), f"{where}.allow_skip"),
        position=index,
    )


def _test_ids(check: _Checker, value: Any, key: str) -> tuple[str, ...]:
    """A list of test ids (``tests/test_x.py::test_y`` for pytest, the report's id for other runners)."""
    ids = check.strings(value, key)
    for number, test_id in enumerate(ids):
        if not test_id.strip() or test_id != test_id.strip():
            check.fail(f"{key}[{number}]", f"{shown(test_id)} is not a test id; give an id as the test report "
                                          "names it, e.g. 'tests/test_x.py::test_y'")
    return ids


def _check_finite(check: _Checker, data: Any) -> None:
    """NaN or an infinity anywhere (free-form flags included) is an error: JSON cannot record it."""
    pending = [("", data)]
    while pending:
        key, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            check.fail(key or "(top level)", f"{value} is not a finite number; give a number (NaN and "
                                             "infinities cannot be recorded)")
        if isinstance(value, dict):
            pending += [(f"{key}.{name}" if key else str(name), item)
                        for name, item in reversed(value.items())]
        elif isinstance(value, list):
            pending += [(f"{key}[{index}]", item) for index, item in reversed(list(enumerate(value)))]


def _check_dependencies(check: _Checker, phases: tuple[PhaseSpec, ...]) -> None:
    first_index: dict[str, int] = {}
    for phase in phases:
        if phase.id in first_index:
            check.fail(f"phases[{phase.position}].id", f"duplicate id '{phase.id}' (also "
                       f"phases[{first_index[phase.id]}].id); phase ids must be unique")
        first_index[phase.id] = phase.position
    for phase in phases:
        listed: dict[str, int] = {}  # a repeat is an error here only (in scope, context, ... it is harmless)
        for number, dep in enumerate(phase.depends_on):
            key = f"phases[{phase.position}].depends_on[{number}]"
            if dep == phase.id:
                check.fail(key, f"phase '{dep}' depends on itself; remove it")
            if dep in listed:
                check.fail(key, f"{shown(dep)} is listed twice (also depends_on[{listed[dep]}]); list each "
                                "dependency once")
            listed[dep] = number
            if dep not in first_index:
                hint = _suggest(dep, list(first_index), "phases")
                check.fail(key, f"unknown phase {shown(dep)}; {hint}")
    cycle = _find_cycle(phases)
    if cycle:
        check.fail(f"phases[{first_index[cycle[0]]}].depends_on",
                   f"dependency cycle {' -> '.join(cycle)}; remove one of these dependencies")


def _find_cycle(phases: tuple[PhaseSpec, ...]) -> list[str] | None:
    """The first dependency cycle found (in plan order), as ``[a, b, ..., a]``."""
    depends_on = {phase.id: phase.depends_on for phase in phases}
    done: set[str] = set()
    path: list[str] = []

    def visit(phase_id: str) -> list[str] | None:
        path.append(phase_id)
        for dep in depends_on[phase_id]:
            if dep in path:
                return path[path.index(dep):] + [dep]
            if dep not in done and (cycle := visit(dep)):
                return cycle
        path.pop()
        done.add(phase_id)
        return None

    for phase in phases:
        if phase.id not in done and (cycle := visit(phase.id)):
            return cycle
    return None


def _sha256_json(data: Any) -> str:
    canonical = to_json(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
