"""Which runs an ab-test compares, and what makes a pair's comparison less than fair.

Pairs come from two arms of run ids, ``CONTROL:TREATMENT`` texts, or runs of one plan told
apart by a flag; ``pair_warnings`` names every difference beyond the one under test.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from autopack.errors import UsageError
from autopack.plan import NOT_PLAN_CONTENT

_FLAG_OFF = ("", "0", "false", "off", "no")


# -- pairing --------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    control: str
    treatment: str


def pairs_from_arms(control: Sequence[str], treatment: Sequence[str]) -> list[Pair]:
    """Pair the i-th control run with the i-th treatment run."""
    if len(control) != len(treatment):
        raise UsageError(f"--control names {len(control)} runs and --treatment {len(treatment)}; "
                         "give the same number (they are paired in order)")
    return [Pair(c, t) for c, t in zip(control, treatment)]


def parse_pair(text: str) -> Pair:
    """``CONTROL:TREATMENT`` -> Pair."""
    control, sep, treatment = text.partition(":")
    if not sep or not control or not treatment or ":" in treatment:
        raise UsageError(f"--pair '{text}': expected CONTROL_RUN:TREATMENT_RUN")
    return Pair(control, treatment)


def flag_is_on(value: Any) -> bool:
    """Absent, false, 0, "" and "false"/"off"/"no"/"0" are off; anything else is on."""
    if value is None or value is False or value == 0:
        return False
    return not (isinstance(value, str) and value.strip().lower() in _FLAG_OFF)


def pairs_by_flag(facts: Iterable[Any], flag: str) -> tuple[list[Pair], list[str]]:
    """Pair runs of one plan whose flags differ only in ``flag`` (off = control), in created_at order.

    Returns the pairs and the runs left without a partner in groups where some run sets ``flag``.
    """
    groups: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
    mentions: set[tuple] = set()
    for run in sorted(facts, key=lambda f: (f.created_at, f.id)):
        others = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in run.flags.items() if k != flag))
        key = (run.comparable_hash, others)
        groups[key][1 if flag_is_on(run.flags.get(flag)) else 0].append(run)
        if flag in run.flags:
            mentions.add(key)
    pairs: list[tuple[Any, Pair]] = []
    unpaired: list[str] = []
    for key, (controls, treatments) in groups.items():
        pairs += [(c.created_at, Pair(c.id, t.id)) for c, t in zip(controls, treatments)]
        if key in mentions:
            unpaired += [run.id for run in controls[len(treatments):] + treatments[len(controls):]]
    return [pair for _, pair in sorted(pairs, key=lambda p: (p[0], p[1].control))], unpaired


# -- validity -------------------------------------------------------------------------

@dataclass(frozen=True)
class ValidityWarning:
    kind: str  # plan_mismatch | base_commit | models | autopack_version | unfinished | reused_run
    message: str


def pair_warnings(control: Any, treatment: Any, allow_mismatch: bool) -> list[ValidityWarning]:
    """What makes this pair's comparison less than fair (RunFacts of each side)."""
    found = []
    if control.comparable_hash != treatment.comparable_hash:
        consequence = ("included because of --allow-mismatch" if allow_mismatch
                       else "excluded; pass --allow-mismatch to compare them anyway")
        what = ", ".join(plan_differences(control.plan, treatment.plan)) or "same content, hashed differently"
        found.append(ValidityWarning("plan_mismatch", f"plans differ apart from id, flags and cassette ({what}): "
                                     f"{consequence}"))
    if control.base_commit != treatment.base_commit:
        found.append(ValidityWarning("base_commit", f"base commits differ: {control.base_commit[:12]} vs "
                                     f"{treatment.base_commit[:12]}"))
    if control.models != treatment.models:
        roles = sorted(set(control.models) | set(treatment.models))
        diffs = [f"{role} {control.models.get(role, '-')} vs {treatment.models.get(role, '-')}"
                 for role in roles if control.models.get(role) != treatment.models.get(role)]
        found.append(ValidityWarning("models", "models differ: " + "; ".join(diffs)))
    if control.autopack_version != treatment.autopack_version:
        found.append(ValidityWarning("autopack_version", f"autopack versions differ: "
                                     f"{control.autopack_version} vs {treatment.autopack_version}"))
    for arm, run in (("control", control), ("treatment", treatment)):
        if not run.finished:
            found.append(ValidityWarning("unfinished", f"{arm} run {run.id} is {run.state}, not finished"))
    return found


def plan_differences(control: dict[str, Any], treatment: dict[str, Any]) -> list[str]:
    """Where two recorded plans differ: ``run.<key>`` (NOT_PLAN_CONTENT aside), ``phase <id>``, ``phase order``."""
    c_run, t_run = control.get("run", {}), treatment.get("run", {})
    found = [f"run.{key}" for key in sorted(set(c_run) | set(t_run))
             if key not in NOT_PLAN_CONTENT and c_run.get(key) != t_run.get(key)]
    c_phases = {p["id"]: p for p in control.get("phases", [])}
    t_phases = {p["id"]: p for p in treatment.get("phases", [])}
    found += [f"phase {pid}" for pid in dict.fromkeys([*c_phases, *t_phases]) if c_phases.get(pid) != t_phases.get(pid)]
    if not found and list(c_phases) != list(t_phases):
        found.append("phase order")
    return found
