"""A changed plan for a recorded run: which phases it changes, and whether that is allowed.

Editing the plan is how a user fixes a phase that keeps failing (or was parked): the
phases that are not complete may change any of their keys, and so may ``run.cassette``,
``run.models``, ``run.limits``, ``run.builder``, ``run.sandbox`` and ``run.remote``. Everything else fixes what the run's commits were made
against (the repository, base, test command, goal, the list of phases, complete phases),
so changing it needs a new ``run.id``.
"""

from __future__ import annotations

from typing import Any, Collection

from autopack.errors import UsageError
from autopack.plan import PlanSpec

RUN_KEYS_THAT_MAY_CHANGE = ("cassette", "models", "limits", "builder", "sandbox", "remote")


def changed_phases(recorded: dict[str, Any], plan: PlanSpec, complete: Collection[str]) -> list[str]:
    """The ids of the phases ``plan`` changes, in plan order; UsageError for a change that is not allowed.

    ``recorded`` is the plan as the run recorded it (``PlanSpec.to_dict``), ``complete`` the
    ids of its complete phases.
    """
    new = plan.to_dict()
    where, run_id = plan.path, plan.run.id
    fixed = sorted(key for key in {*recorded["run"], *new["run"]} - set(RUN_KEYS_THAT_MAY_CHANGE)
                   if recorded["run"].get(key) != new["run"].get(key))
    if fixed:
        raise UsageError(f"{where}: run.{fixed[0]}: changed since run '{run_id}' was recorded; only phases that "
                         f"are not complete and run.{', run.'.join(RUN_KEYS_THAT_MAY_CHANGE)} may change: restore "
                         "it, or give the plan a new run.id to start a new run")
    old_ids, new_ids = [p["id"] for p in recorded["phases"]], [p["id"] for p in new["phases"]]
    if old_ids != new_ids:
        raise UsageError(f"{where}: phases: run '{run_id}' was recorded with phases {', '.join(old_ids)} in this "
                         f"order, the plan now has {', '.join(new_ids)}; phases cannot be added, removed or "
                         "reordered in a recorded run: restore them, or give the plan a new run.id")
    changed = [n["id"] for o, n in zip(recorded["phases"], new["phases"]) if o != n]
    done = [phase_id for phase_id in changed if phase_id in complete]
    if done:
        raise UsageError(f"{where}: phases.{done[0]}: the phase is complete and committed in run '{run_id}', so "
                         "it cannot change: restore it, or give the plan a new run.id")
    return changed
