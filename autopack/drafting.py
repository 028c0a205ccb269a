"""`autopack plan`: from a goal and a repository to a checked plan file, and optionally a queued run.

Everything that can be checked is checked before the first call: the goal, the output file
(never overwritten without ``force``), the repository, ``--id`` when queueing, the cassette or
the API key. The planner (``engine.planner``) then reads the project's checkout as it is; its
draft is validated by the validator ``run`` uses and written whole. Its ledger rows (role
``planner``) are recorded with the run when ``queue_plan`` records it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from autopack.errors import EnvironmentProblem, PlanError, UsageError
from autopack.plan import PlanSpec
from autopack.plan_writer import Target, check_output, checked_plan, plan_schema, render_plan, write_plan
from autopack.text import shown


@dataclass(frozen=True)
class DraftedPlan:
    """The accepted plan, its file's text, where it went (None: stdout) and what drafting it cost."""

    spec: PlanSpec
    text: str
    path: Path | None
    calls: tuple
    turns: int
    model: str
    cost_usd: float | None
    warnings: tuple[str, ...] = ()


def draft_plan(settings: Any, goal: str, *, repo: Path, output: str, run_id: str | None = None, max_phases: int = 10,
               queue: bool = False, force: bool = False, cassette: Path | None = None, record: Path | None = None,
               max_cost_usd: float | None = None, now: Callable[[], Any] | None = None) -> DraftedPlan:
    """Draft, check and write (or, for output ``-``, only render) a plan for ``goal`` on ``repo``."""
    from autopack.engine.planner import DraftRefused, Planner, PlannerTools, planning_task
    from autopack.engine.tools import ToolLimits, tools_for
    from autopack.llm.turns import ClaudeTurns
    from autopack.redact import Redactor
    from autopack.store.models import utcnow
    from autopack.toolchains import resolve_test_command
    from autopack.adapters.git.calls import locate_repo
    from autopack.workspace import Workspace

    if not goal.strip():
        raise UsageError("GOAL is empty; say what the plan should achieve")
    path = check_output(output, force=force)
    if queue and path is None:
        raise UsageError("--queue records the plan file it writes: give -o FILE instead of -o -")
    try:
        location = locate_repo(repo)
    except UsageError as error:
        raise UsageError(f"--repo: {str(error).replace('fix run.repo', 'fix --repo')}") from None
    project = Path(os.path.realpath(repo))
    warnings = []
    try:
        test = resolve_test_command(project, None, None)
        command, junit_xml = test.command, test.junit_xml
        tests = f"`{command}` ({test.ecosystem}: {test.reason})"
    except UsageError as error:
        command = junit_xml = None
        tests = f"autopack cannot run them yet ({error})"
        warnings.append(f"no test command detected, so the plan sets none: {error}")
    id_problem = _id_problem(settings, project) if queue else None
    if run_id and id_problem and (problem := id_problem(run_id)):
        raise UsageError(f"--id {run_id}: {problem}")
    target = Target(goal=goal, project=project, output=(path or Path("plan.toml")).absolute(),
                    test_command=command, junit_xml=junit_xml,
                    cassette=cassette.absolute() if cassette and _holds_run_answers(cassette) else None, run_id=run_id, max_phases=max_phases,
                    id_problem=id_problem)
    factory, replay = _clients(settings, cassette, record)
    model = ClaudeTurns(factory, cassette=replay, prices=settings.prices or None, role="planner")
    planner = Planner(model, model_name=settings.planner_model, max_turns=settings.planner_max_turns,
                      budget_cap=settings.builder_max_tokens_cap, max_cost_usd=max_cost_usd,
                      prices=settings.prices or None)
    checkout = Workspace(location.toplevel, location.toplevel, "", location.subdir)  # the user's own checkout
    files = checkout.project_files()
    reads = tools_for(project, lambda: files, (), limits=ToolLimits.from_settings(settings, {}),
                      run_tests=lambda tests: None,  # never called: PlannerTools refuses run_tests itself
                      selectable=False, state_dir=settings.state_dir, redact=Redactor.from_environ())

    def check(draft: Any) -> tuple[PlanSpec, Any]:
        try:
            return checked_plan(draft, target, default_max_attempts=settings.max_attempts), draft
        except PlanError as error:
            raise DraftRefused(str(error)) from None

    task = planning_task(goal, tests=tests, files=len(files), max_phases=max_phases,
                         max_turns=settings.planner_max_turns, run_id=run_id)
    draft = planner.draft(task, PlannerTools(reads), check, plan_schema(max_phases))
    when = (now or utcnow)().strftime("%Y-%m-%d %H:%M UTC")
    spec, submitted = draft.plan
    text = render_plan(spec, submitted, model=draft.model, when=when, turns=draft.turns, cost_usd=draft.cost_usd)
    if path is not None:
        write_plan(text, path, force=force)
    return DraftedPlan(spec, text, path, draft.calls, draft.turns, draft.model, draft.cost_usd, tuple(warnings))


def _holds_run_answers(cassette: Path) -> bool:
    """Whether a planner cassette also holds builder or doctor lines: then the plan names it as
    ``run.cassette``, so its run replays offline too."""
    from autopack.llm.cassette import Cassette

    return any(entry.role != "planner" for entry in Cassette.load(cassette).entries)


def _clients(settings: Any, cassette: Path | None, record: Path | None) -> tuple[Any, Any]:
    """The client factory (replaying ``cassette``, or live, recording to ``record``) and the cassette."""
    from autopack.llm.cassette import Cassette, CassetteRecorder
    from autopack.llm.client import make_client_factory

    if cassette is not None and record is not None:
        raise UsageError(f"--record {record}: recording needs a live run; drop --cassette to record")
    replay = Cassette.load(cassette) if cassette is not None else None
    api_key = os.environ.get("ANTHROPIC_API_KEY") or None
    if replay is None and not api_key:  # before the recorder creates its file
        raise EnvironmentProblem("ANTHROPIC_API_KEY is not set: export it to draft a plan with Claude, or replay "
                                 "a planner cassette (--cassette FILE)")
    recorder = CassetteRecorder(record) if record is not None else None
    return make_client_factory(cassette=replay, api_key=api_key, max_retries=settings.api_max_retries,
                               recorder=recorder), replay


def _id_problem(settings: Any, project: Path) -> Callable[[str], str | None]:
    """Why a run id cannot be queued from this project: recorded already, or its branch exists."""
    from autopack.store import open_store
    from autopack.adapters.git.calls import locate_repo
    from autopack.workspace import Workspace

    location = locate_repo(project)

    def problem(run_id: str) -> str | None:
        store = open_store(settings.db, create=False)
        if store is not None:
            with store:
                if store.get_run(run_id) is not None:
                    return f"a run {shown(run_id)} is already recorded in {settings.db}; choose another id"
        branch = f"autopack/{run_id}"
        if Workspace(location.toplevel, location.toplevel, branch, location.subdir).branch_exists():
            return f"branch {branch} already exists in {location.toplevel}; choose another id"
        return None

    return problem


def queue_plan(settings: Any, drafted: DraftedPlan) -> Any:
    """Record the written plan's run with every phase queued, and the planner's ledger rows with it."""
    from autopack.launch import check_new_run, record_run
    from autopack.plan import load_plan
    from autopack.store import open_store

    spec = load_plan(drafted.path, default_max_attempts=settings.max_attempts)
    target = check_new_run(settings, spec)
    store = open_store(settings.db)
    with store:
        run = record_run(store, spec, target, settings)
        store.record_calls(run.id, None, None, "planner", drafted.calls)
    return run
