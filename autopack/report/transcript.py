"""An attempt's transcript as a flat list of items (who, label, text), for the text and HTML views."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass(frozen=True)
class Item:
    """One thing said in a turn: ``who`` is task, tool, model, error or meta."""

    turn: int
    who: str
    label: str
    text: str


def transcript_items(exchanges: list[dict[str, Any]]) -> Iterator[Item]:
    """The messages each exchange added (the task, tool results) and the model's answer, in order."""
    for exchange in exchanges:
        turn, request, response = exchange["turn"], exchange["request"], exchange["response"]
        for message in request.get("messages", []):
            content = message.get("content")
            blocks = content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]
            for block in blocks:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_result":
                    flag = " (error)" if block.get("is_error") else ""
                    yield Item(turn, "tool", f"result of {block.get('tool_use_id')}{flag}", _text(block.get("content")))
                elif block.get("type") == "text":
                    yield Item(turn, "task", "task", str(block.get("text", "")))
        if "error" in response:
            yield Item(turn, "error", str(response.get("kind") or "error"), str(response["error"]))
            continue
        for block in response.get("content", []):
            if block.get("type") == "text":
                yield Item(turn, "model", "model", str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                yield Item(turn, "model", f"{block.get('name')} ({block.get('id')})",
                           json.dumps(block.get("input"), indent=2, ensure_ascii=False))
        usage = response.get("usage", {})
        yield Item(turn, "meta", "usage", f"turn {turn}: stop {response.get('stop_reason')}, "
                   f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out, "
                   f"{usage.get('cache_read_input_tokens', 0) or 0} cache read, max_tokens {exchange['max_tokens']}")


def _text(content: Any) -> str:
    """A tool result's content: a string, or text blocks."""
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) if isinstance(b, dict) else str(b) for b in content)
    return "" if content is None else str(content)
