"""The planner (``autopack plan``): a bounded conversation that reads the project and submits one plan.

Each turn is one call through the ``TurnModel`` (role ``planner``). The model reads with
``list_files``, ``read_file`` and ``search`` (any other tool is an error result: the planner
changes nothing and runs nothing), then calls ``submit_plan``, whose input is checked by the
caller's ``check``. A refused draft gets exactly one repair turn with the checker's message;
a second refusal, a repair turn without a draft, the turn limit, the cost cap, a turn cut off
twice or a failed call ends planning with ``PlanningFailed`` (exit 1). No I/O beyond the ports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from autopack.caps import estimate_call_usd
from autopack.engine.agent import CACHE, cache_marks, cut_off, tool_result_block
from autopack.engine.tools import AGENT_TOOL_DEFINITIONS, EDIT_TOOLS
from autopack.errors import AutopackError
from autopack.llm.budget import escalated_budget
from autopack.ports import ToolResult, TurnModel, TurnReply, TurnRequest

SUBMIT = "submit_plan"
READ_TOOLS = ("list_files", "read_file", "search")
PLANNER_MAX_TOKENS = 16384  # per turn; a cut-off turn is retried once at twice this (capped)

SYSTEM_PROMPT = """\
You are the planner of autopack, a tool that carries out a plan on a git repository with no human in \
the loop. You turn a goal into a plan of phases; builders (other Claude sessions) later carry out one \
phase each. Nobody answers questions: read the project, decide, and submit the plan.

Tools: list_files, read_file and search read the project (paths are POSIX, relative to the project \
root). You cannot change files or run commands. When you know the code the goal touches, call \
submit_plan once with the whole plan; autopack validates it and, when it is invalid, tells you what to \
fix: you then get ONE turn to submit a corrected plan.

How autopack judges each phase, which the plan must make achievable:
- The builder may change only the phase's `scope` (files, or directories ending in '/'). Put every \
file the phase must create or change in scope, test files included; keep scope as narrow as the work.
- `context` lists existing files the builder is shown up front (read-only). List only files that exist.
- `deliverables` are files that must exist after the phase; each must be inside scope.
- After the builder, the project's whole test suite runs: a test that passed before and now fails, or \
disappears, fails the phase.
- feature and bugfix phases must prove their goal: at least one new or changed test must fail on the \
old code and pass on the new (require_f2p). So every feature/bugfix phase adds or changes a test.
- `acceptance_tests`: test ids (as the test reports name them, for pytest `tests/test_x.py::test_y`) \
that must exist and pass after the phase and fail or not exist before. Name them where the tests can \
express the goal, in files inside the phase's scope.
- For feature, bugfix, docs and config phases, tests that existed before must still pass unchanged \
(tests_may_change = false); refactor and tests phases may change them.
- `acceptance` is a short list of checkable criteria in words; `goal` says precisely what to do.
- `depends_on` lists the phases that must be complete first; no cycles. Phases run in dependency order.
- category: feature|bugfix|tests|docs|refactor|config; complexity: low|medium|high.
- Ids are lowercase slugs: [a-z0-9][a-z0-9._-]{0,63}.

A good plan has few phases, each one coherent change that leaves the test suite green, ordered by \
dependency, with goals specific enough that a builder who has not read this conversation can do them. \
Do not add phases the goal does not ask for. Text outside tool calls is not read."""


class PlanningFailed(AutopackError):
    """The planner gave no valid plan: nothing was written (exit 1)."""


class DraftRefused(Exception):
    """A submitted draft the checker refuses; the message is what the model is told to fix."""


@dataclass(frozen=True)
class Draft:
    """The accepted plan (whatever ``check`` returned), and what drafting it cost."""

    plan: Any
    calls: tuple  # CallRecords, every HTTP request in order
    turns: int
    model: str

    @property
    def cost_usd(self) -> float | None:
        """The total cost; None when any call was made to a model with no price."""
        costs = [call.cost_usd for call in self.calls]
        return None if any(cost is None for cost in costs) else round(sum(costs), 8)


def _tool(name: str) -> dict:
    return next(tool for tool in AGENT_TOOL_DEFINITIONS if tool["name"] == name)


def planner_tools(plan_schema: dict) -> list[dict]:
    """The planner's tool definitions: the agent's three read tools and ``submit_plan``."""
    submit = {"name": SUBMIT, "description": "Submit the whole plan (contract 1 of autopack's plan file): the "
              "run's id and its phases. autopack validates it; an invalid plan comes back as an error result "
              "saying what to fix.", "input_schema": plan_schema}
    return [*(_tool(name) for name in READ_TOOLS), submit]


class PlannerTools:
    """The planner's toolbox: the reads of an agent toolbox (``engine.tools.AttemptTools``); every
    other tool is an error result."""

    def __init__(self, reads: Any):
        self.reads = reads

    def execute(self, name: Any, arguments: Any) -> ToolResult:
        if name in READ_TOOLS:
            return self.reads.execute(name, arguments)
        if name in EDIT_TOOLS or name in ("run_tests", "finish"):
            return ToolResult(f"{name} is not available while planning: the planner reads the project and changes "
                              f"or runs nothing. Use {', '.join(READ_TOOLS)}, then call {SUBMIT}.", True)
        return ToolResult(f"unknown tool {name!r}; the planner's tools are {', '.join(READ_TOOLS)} and {SUBMIT}", True)


class Planner:
    """Drafts one plan: explores through ``tools``, submits through ``check``."""

    def __init__(self, model: TurnModel, *, model_name: str, max_turns: int, max_tokens: int = PLANNER_MAX_TOKENS,
                 budget_cap: int = 64000, max_cost_usd: float | None = None, prices: Mapping | None = None,
                 cache: bool = True):
        self.model = model
        self.model_name = model_name
        self.max_turns = max_turns
        self.max_tokens = min(max_tokens, budget_cap)
        self.budget_cap = budget_cap
        self.max_cost_usd = max_cost_usd
        self.prices = prices
        self.cache = cache

    def draft(self, task: str, tools: PlannerTools, check: Callable[[Any], Any], plan_schema: dict) -> Draft:
        """The accepted plan; PlanningFailed (saying what planning spent) when there is none."""
        calls: list = []
        try:
            return self._draft(task, tools, check, plan_schema, calls)
        except PlanningFailed as failed:
            spent = Draft(None, tuple(calls), 0, self.model_name).cost_usd
            raise PlanningFailed(f"{failed} (planning spent {'an unknown amount' if spent is None else f'${spent:.4f}'} "
                                 f"in {len(calls)} calls)") from None

    def _draft(self, task: str, tools: PlannerTools, check: Callable[[Any], Any], plan_schema: dict,
               calls: list) -> Draft:
        definitions = planner_tools(plan_schema)
        system_block = {"type": "text", "text": SYSTEM_PROMPT}
        system = [dict(system_block, cache_control=CACHE) if self.cache else system_block]
        messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": task}]}]
        chars = len(json.dumps([system, definitions, messages]))
        repairing = False  # the previous turn's draft was refused: this turn is the one repair turn
        turn = 0
        while turn < self.max_turns or repairing:
            turn += 1
            request = dict(system=system, messages=cache_marks(messages) if self.cache else list(messages),
                           tools=definitions)
            reply = self._turn(turn, chars, request, calls)
            messages.append({"role": "assistant", "content": list(reply.content)})
            chars += len(json.dumps(messages[-1])) + 2
            uses = [block for block in reply.content if block.get("type") == "tool_use"]
            results: list[dict] = []
            submitted = False
            for block in uses:
                if block.get("name") != SUBMIT:
                    results.append(tool_result_block(block.get("id"), tools.execute(block.get("name"), block.get("input"))))
                    continue
                if submitted:
                    results.append(tool_result_block(block.get("id"), ToolResult(
                        f"not checked: one {SUBMIT} per turn", True)))
                    continue
                submitted = True
                try:
                    plan = check(block.get("input"))
                except DraftRefused as refused:
                    if repairing:
                        raise PlanningFailed(f"the planner's draft is still invalid after its repair turn: {refused}; "
                                             "nothing was written") from None
                    results.append(tool_result_block(block.get("id"), ToolResult(
                        f"The plan is invalid: {refused}\nFix this and call {SUBMIT} with the whole corrected plan in "
                        "your next turn: it is your only repair turn.", True)))
                    continue
                return Draft(plan, tuple(calls), turn, self.model_name)
            if repairing:
                raise PlanningFailed(f"the planner's repair turn (turn {turn}) did not call {SUBMIT} again; nothing "
                                     "was written")
            repairing = submitted
            if not uses:
                results = [{"type": "text", "text": f"Call {SUBMIT} with the plan when you are ready; text outside "
                                                    "tool calls is not read."}]
            messages.append({"role": "user", "content": results})
            chars += len(json.dumps(messages[-1])) + 2
        raise PlanningFailed(f"the planner used its {self.max_turns} turns (planner_max_turns) without calling "
                             f"{SUBMIT}; nothing was written")

    def _turn(self, turn: int, chars: int, request: dict, calls: list) -> TurnReply:
        """One turn's answer, escalated once when cut off; PlanningFailed when there is no usable one."""
        max_tokens = self.max_tokens
        for escalated in (False, True):
            self._check_cost(turn, chars, max_tokens, calls)
            reply = self.model.reply(TurnRequest(phase="", attempt=1, turn=turn, model=self.model_name,
                                                 max_tokens=max_tokens, predicted_tokens=max_tokens, **request))
            calls.extend(reply.calls)
            if reply.failure_kind:
                raise PlanningFailed(f"planning stopped at turn {turn}: {reply.message}; nothing was written")
            if reply.stop_reason == "refusal":
                raise PlanningFailed(f"the model refused to plan this goal (turn {turn}, stop_reason refusal); "
                                     "rephrase the goal")
            if reply.stop_reason == "model_context_window_exceeded":
                raise PlanningFailed(f"turn {turn} exceeded the model's context window; narrow the goal or the "
                                     "project (--repo)")
            if not cut_off(reply, max_tokens):
                return reply
            new = escalated_budget(max_tokens, cap=self.budget_cap)
            if escalated or new <= max_tokens:
                break
            max_tokens = new
        retried = "after its one escalation" if escalated else "the cap (builder_max_tokens_cap)"
        raise PlanningFailed(f"turn {turn} was cut off at max_tokens={max_tokens}, {retried}; none of its tool calls "
                             "ran and nothing was written")

    def _check_cost(self, turn: int, chars: int, max_tokens: int, calls: list) -> None:
        """The cap is checked before every call: what was spent plus that call's estimate."""
        if self.max_cost_usd is None:
            return
        spent = sum(call.cost_usd or 0.0 for call in calls)
        estimate = estimate_call_usd(self.model_name, chars, max_tokens, self.prices) or 0.0
        if spent + estimate > self.max_cost_usd:
            raise PlanningFailed(f"cost cap reached (--max-cost = ${self.max_cost_usd:.4f}): spent ${spent:.4f}, "
                                 f"turn {turn} is estimated at ${estimate:.4f}; nothing was written")


def planning_task(goal: str, *, tests: str, files: int, max_phases: int, max_turns: int, run_id: str | None) -> str:
    """The first message: the goal, what autopack knows about the project, and the limits."""
    lines = ["# Goal", goal.strip(), "", "# The project",
             f"{files} files (list_files shows them; tracked files and new ones git does not ignore).",
             f"Tests: {tests}", "", "# Limits",
             f"- At most {max_phases} phases; fewer is better when the goal allows.",
             f"- At most {max_turns} turns before you submit; submit as soon as you know enough."]
    lines.append(f'- The run id is "{run_id}".' if run_id else "- Choose run.id: a short slug of the goal.")
    lines += ["", f"Start by looking at the project, then call {SUBMIT}."]
    return "\n".join(lines)
