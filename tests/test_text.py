"""autopack.text: the one head-and-tail truncator, values echoed in messages, strict JSON."""

from __future__ import annotations

import math

import pytest

from autopack.errors import UsageError
from autopack.text import MESSAGE_MAX_CHARS, from_json, head_tail, shown, to_json


def test_head_tail_keeps_both_ends_within_the_limit() -> None:
    assert head_tail("short", 10) == "short"
    cut = head_tail("BEGIN" + "x" * 1000 + "END", 21, "\n[...]\n")
    assert len(cut) == 21 and cut.startswith("BEGIN") and cut.endswith("END") and "[...]" in cut


def test_a_long_value_is_shown_as_head_and_tail_with_its_length() -> None:
    assert shown("run-1") == "'run-1'"
    assert shown("a" * 100_000) == f"'{'a' * 99}…{'a' * 100}' (100000 chars)"
    assert shown("/x" * 3000, quote=False).endswith("/x (6000 chars)")
    assert shown("line\nbreak") == "'line\\nbreak'"  # a quoted value is one line


def test_every_error_message_is_one_line_of_bounded_length() -> None:
    message = str(UsageError("head " + "y" * 100_000 + "\n tail"))
    assert len(message) == MESSAGE_MAX_CHARS and "\n" not in message
    assert message.startswith("head yyy") and message.endswith("yyy tail")


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_json_written_by_autopack_never_holds_nan_or_infinity(number: float) -> None:
    assert to_json({"ok": 1.5}) == '{"ok": 1.5}'
    with pytest.raises(ValueError):
        to_json({"flags": {"x": number}})
    with pytest.raises(ValueError):
        from_json(to_json({"x": 1.5}).replace("1.5", {math.nan: "NaN", math.inf: "1e999"}.get(number, "-Infinity")))
