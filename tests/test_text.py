"""autopack.text: the one head-and-tail truncator and values echoed in messages."""

from __future__ import annotations

from autopack.errors import UsageError
from autopack.text import MESSAGE_MAX_CHARS, head_tail, shown


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

