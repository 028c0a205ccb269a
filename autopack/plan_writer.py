"""A drafted plan as a plan file: ``submit_plan``'s schema, the draft's checks, and the TOML written.

The draft (``submit_plan``'s input) holds ``run.id`` and the phases; autopack adds the rest of
``[run]``: the user's goal, ``repo`` relative to the plan file, the test command detected as
``run`` detects it, and the replayed cassette. The result is validated by ``plan_from_dict``,
the validator ``run`` uses, then by the planner's own checks (``draft_problems``).
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autopack.bounds import ATTEMPTS
from autopack.engine.reads import covered
from autopack.errors import PlanError, UsageError, writing
from autopack.plan import CATEGORIES, COMPLEXITIES, PhaseSpec, PlanSpec, plan_from_dict
from autopack.plan_checks import RUN_ID_PATTERN
from autopack.text import one_line, shown

STDOUT = "-"
_STRINGS = {"type": "array", "items": {"type": "string"}}


def _paths(what: str) -> dict:
    return {"type": "array", "items": {"type": "string"}, "description": f"{what}: POSIX paths relative to the "
            "project root; a directory ends in '/'."}


PHASE_PROPERTIES: dict[str, dict] = {  # every phase key of contract 1 (a test holds it to plan.py's list)
    "id": {"type": "string", "pattern": f"^{RUN_ID_PATTERN}$"},
    "goal": {"type": "string", "description": "What the builder must do, specifically."},
    "category": {"type": "string", "enum": list(CATEGORIES)},
    "complexity": {"type": "string", "enum": list(COMPLEXITIES)},
    "scope": _paths("What the builder may change (create, edit, delete), test files included"),
    "context": _paths("Existing files shown to the builder, read-only"),
    "deliverables": _paths("Files that must exist after the phase, inside scope"),
    "acceptance": dict(_STRINGS, description="Checkable criteria, in words."),
    "acceptance_tests": dict(_STRINGS, description="Test ids that must exist and pass after the phase and fail "
                             "or not exist before (pytest: 'tests/test_x.py::test_y')."),
    "depends_on": dict(_STRINGS, description="Ids of the phases that must be complete first."),
    "allow_noop": {"type": "boolean", "description": "True only if the phase may legitimately change nothing."},
    "max_attempts": {"type": "integer", "minimum": ATTEMPTS.low, "maximum": ATTEMPTS.high},
    "require_f2p": {"type": "boolean", "description": "Default: true for feature and bugfix."},
    "tests_may_change": {"type": "boolean", "description": "Default: false for feature, bugfix, docs, config."},
    "allow_skip": dict(_STRINGS, description="Baseline-passing test ids this phase may leave skipped."),
}
_REQUIRED = ["id", "goal", "category", "complexity", "scope", "deliverables", "acceptance", "depends_on"]


def plan_schema(max_phases: int) -> dict:
    """``submit_plan``'s input schema: contract 1's ``run.id`` and ``[[phases]]`` as JSON schema."""
    phase = {"type": "object", "properties": PHASE_PROPERTIES, "required": _REQUIRED, "additionalProperties": False}
    run = {"type": "object", "properties": {"id": {"type": "string", "pattern": f"^{RUN_ID_PATTERN}$",
                                                   "description": "A short slug naming the run."}},
           "required": ["id"], "additionalProperties": False}
    return {"type": "object", "properties": {"run": run, "phases": {"type": "array", "items": phase, "minItems": 1,
                                                                    "maxItems": max_phases}},
            "required": ["run", "phases"], "additionalProperties": False}


@dataclass(frozen=True)
class Target:
    """Where the drafted plan goes and what autopack fills into its ``[run]`` table."""

    goal: str
    project: Path  # the project root the planner read (absolute)
    output: Path  # the plan file; for stdout, a path in the current directory that is never written
    test_command: str | None = None
    junit_xml: str | None = None
    cassette: Path | None = None
    run_id: str | None = None  # --id: wins over the draft's
    max_phases: int = 10
    id_problem: Callable[[str], str | None] | None = None  # --queue: why a run id cannot be recorded

    def relative(self, path: Path) -> str:
        """``path`` as the plan file writes it: relative to the plan file's directory."""
        return Path(os.path.relpath(path, self.output.parent)).as_posix()


def plan_data(draft: Any, target: Target) -> dict:
    """The plan file's content for a draft: its phases, autopack's ``[run]``; PlanError for a draft
    that is not an object of ``run`` (with only ``id``) and ``phases``."""
    if not isinstance(draft, dict) or not isinstance(draft.get("run"), dict) or "phases" not in draft:
        raise PlanError("submit_plan's input must be an object with 'run' (an object with 'id') and 'phases' "
                        "(a list of phase objects)")
    extra = sorted(set(draft) - {"run", "phases"}) or sorted(set(draft["run"]) - {"id"})
    if extra:
        raise PlanError(f"{shown(extra[0], quote=False)}: not a key the planner gives; the plan's [run] table is "
                        "written by autopack (goal, repo, test command): give run.id and phases only")
    run: dict[str, Any] = {"id": target.run_id or draft["run"].get("id"), "goal": target.goal,
                           "repo": target.relative(target.project)}
    optional = {"test_command": target.test_command, "junit_xml": target.junit_xml,
                "cassette": target.relative(target.cassette) if target.cassette else None}
    run.update({key: value for key, value in optional.items() if value is not None})
    if run["id"] is None:
        raise PlanError("run.id: required key is missing; give the run a short slug id")
    return {"run": run, "phases": draft["phases"]}


def checked_plan(draft: Any, target: Target, *, default_max_attempts: int = 3) -> PlanSpec:
    """The draft as a validated plan; PlanError naming the first problem (key paths as in the draft)."""
    data = plan_data(draft, target)
    label = f"{shown(str(target.output), quote=False)}: "
    try:
        spec = plan_from_dict(data, target.output, default_max_attempts=default_max_attempts)
    except PlanError as error:
        raise PlanError(str(error).removeprefix(label)) from None
    problems = draft_problems(spec, target)
    if problems:
        raise PlanError("; ".join(problems))
    return spec


def draft_problems(spec: PlanSpec, target: Target) -> list[str]:
    """What makes a valid plan a bad draft: too many phases, a phase without a path scope, a context
    file that does not exist, a deliverable the scope cannot create, a run id that cannot be queued."""
    problems = []
    if len(spec.phases) > target.max_phases:
        problems.append(f"phases: {len(spec.phases)} phases, more than the {target.max_phases} allowed "
                        "(--max-phases); merge phases")
    for phase in spec.phases:
        where = f"phases[{phase.position}]"
        if phase.scope is None:
            problems.append(f"{where}.scope: give a list of the paths the phase may change (files, or dir/)")
            continue
        for number, path in enumerate(phase.context):
            if not (target.project / path).exists():
                problems.append(f"{where}.context[{number}]: {shown(path)} does not exist in the project; list "
                                "existing files only")
        for number, path in enumerate(phase.deliverables):
            if not covered(path, phase.scope) and not (target.project / path).exists():
                problems.append(f"{where}.deliverables[{number}]: {shown(path)} is outside the phase's scope, so "
                                "the builder cannot create it; add it to scope")
    taken = target.id_problem(spec.run.id) if target.id_problem else None
    if taken:
        problems.append(f"run.id: {taken}")
    return problems


def _phase_table(phase: PhaseSpec, given: dict) -> dict:
    """A phase's keys for the file: every key of the phase's shape, defaults the planner did not give left out."""
    table = phase.to_dict()
    for key in ("allow_noop", "max_attempts"):
        if key not in given:
            table.pop(key)
    order = list(PHASE_PROPERTIES)
    return dict(sorted(table.items(), key=lambda item: order.index(item[0])))


def render_plan(spec: PlanSpec, draft: Any, *, model: str, when: str, turns: int, cost_usd: float | None) -> str:
    """The plan file's text: a header comment, ``[run]``, then the phases in dependency order."""
    import tomli_w

    given = {raw.get("id"): raw for raw in draft["phases"] if isinstance(raw, dict)}
    run = {key: value for key, value in spec.run.to_dict().items() if value not in ({}, None)}
    data = {"run": run, "phases": [_phase_table(phase, given.get(phase.id, {})) for phase in spec.execution_order()]}
    cost = f"${cost_usd:.4f}" if cost_usd is not None else "cost unknown (a model without a price)"
    header = [f"# Drafted by `autopack plan` on {when} with {model}: {turns} turn{'s' * (turns != 1)}, {cost}.",
              f"# Goal: {one_line(spec.run.goal)}",
              "# Phases are in dependency order. Review and edit them, then `autopack run` this file",
              "# (`--dry-run` first shows the order and the test command).", ""]
    text = "\n".join(header) + "\n" + tomli_w.dumps(data)
    plan_from_dict(tomllib.loads(text), spec.path)  # what is written loads back as a valid plan
    return text


def check_output(output: str, *, force: bool) -> Path | None:
    """The plan file to write (None: stdout); UsageError when it exists (without ``force``) or
    its directory does not."""
    if output == STDOUT:
        return None
    path = Path(output)
    if path.is_dir():
        raise UsageError(f"-o {shown(output, quote=False)}: is a directory; give the plan file's name")
    if path.exists() and not force:
        raise UsageError(f"-o {shown(output, quote=False)}: already exists; give another file or --force to "
                         "replace it")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"-o {shown(output, quote=False)}: directory {path.absolute().parent} does not exist")
    return path


def write_plan(text: str, path: Path, *, force: bool) -> None:
    """Write the plan file whole (a temporary file, then linked or renamed into place): without
    ``force``, a file that appeared meanwhile is never replaced."""
    directory = path.absolute().parent
    with writing(directory, "the plan file"):
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            if force:
                os.replace(temporary, path)
            else:
                try:
                    os.link(temporary, path)
                except FileExistsError:
                    raise UsageError(f"{shown(str(path), quote=False)}: already exists; give another file or "
                                     "--force to replace it") from None
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
