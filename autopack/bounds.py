"""The range every number autopack takes must lie in: settings, plan keys, command-line options.

A number outside its range (or NaN, or an infinity) is refused where it enters, with one
line naming the key and the range, before it can overflow a C integer, a timedelta or
SQLite's 64-bit INTEGER, or be written as JSON no reader accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autopack.text import shown


@dataclass(frozen=True)
class Bounds:
    """An inclusive range of integers, or of finite numbers (``above``: the low end excluded)."""

    low: int | float
    high: int | float
    integer: bool = True
    above: bool = False

    @property
    def span(self) -> str:
        """The range as written in --help and the README: ``1-1000``, ``>0-1000000``."""
        return f"{'>' if self.above else ''}{_number(self.low)}-{_number(self.high)}"

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.above:
            return f"{kind} above {_number(self.low)} and at most {_number(self.high)}"
        return f"{kind} from {_number(self.low)} to {_number(self.high)}"

    def problem(self, value: int | float) -> str | None:
        """None when ``value`` (already an int or float) is in range, else what is wrong with it."""
        finite = isinstance(value, int) or math.isfinite(value)
        low_ok = value > self.low if self.above else value >= self.low
        if finite and low_ok and value <= self.high and (not self.integer or isinstance(value, int)):
            return None
        return f"must be {self}, got {shown(value)}"

    def parse(self, text: object) -> int | float:
        """A command-line value (text, or an option's default) in range; ValueError says what is wrong."""
        if isinstance(text, int | float) and not isinstance(text, bool):
            value = text
        else:
            try:
                value = (int if self.integer else float)(str(text).strip())
            except ValueError:
                raise ValueError(f"{shown(text)} is not {self}") from None
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value


def _number(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# Shared by a setting and the plan key that overrides it.
ATTEMPTS = Bounds(1, 1000)  # max_attempts, phases[].max_attempts
TIMEOUT_S = Bounds(1, 7 * 24 * 3600)  # phase_timeout_s, run.limits.phase_timeout_s: a week
AGENT_TURNS = Bounds(1, 10_000)  # agent_max_turns, run.limits.agent_max_turns
PLANNER_TURNS = Bounds(1, 1000)  # planner_max_turns
AGENT_TEST_RUNS = Bounds(0, 1000)  # agent_max_test_runs, run.limits.agent_max_test_runs
PRICE_USD_PER_MTOK = Bounds(0, 1_000_000, integer=False)  # each price of the prices setting
