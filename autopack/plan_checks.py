"""Typed access to a plan's raw TOML values: every failure names the plan file and the key.

Owns :class:`_Checker` (tables, strings, paths, ids, choices, numbers within their
:class:`~autopack.bounds.Bounds`), the did-you-mean suggestion for an unknown name, and
the id rule (``RUN_ID_PATTERN``, ``ID_RULE``) that run and phase ids follow.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, NoReturn

from autopack.bounds import Bounds
from autopack.errors import PlanError
from autopack.text import shown

RUN_ID_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_ID_RE = re.compile(RUN_ID_PATTERN)
ID_RULE = "lowercase letters, digits, '.', '_', '-'; max 64"


class _Checker:
    """Typed access to raw plan values; every failure names the plan file and the key."""

    def __init__(self, shown: str):
        self.shown = shown
        self.warnings: list[str] = []

    def fail(self, key: str, problem: str) -> NoReturn:
        raise PlanError(f"{self.shown}: {key}: {problem}")

    def table(self, value: Any, key: str, allowed: tuple[str, ...] | None,
              required: tuple[str, ...] = ()) -> dict[str, Any]:
        """A table whose keys are all in ``allowed`` (None: any) and include ``required``."""
        if not isinstance(value, dict):
            self.fail(key or "(top level)", f"expected a table, got {_describe(value)}")
        prefix = f"{key}." if key else ""
        for name in value:
            if allowed is not None and name not in allowed:
                self.fail(prefix + name, f"unknown key; {_suggest(name, allowed, 'keys')}")
        for name in required:
            if name not in value:
                where = f"[{key}]" if key else "the file"
                self.fail(prefix + name, f"required key is missing; add it to {where}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_describe(value)}")
        if not value.strip():
            self.fail(key, "is empty; give a value or remove the key")
        if "\x00" in value:
            self.fail(key, "contains a NUL character; remove it")
        return value

    def optional_string(self, table: dict[str, Any], name: str, where: str) -> str | None:
        return self.string(table[name], f"{where}.{name}") if name in table else None

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(key, f"expected a list of strings, got {_describe(value)}")
        return tuple(self.string(item, f"{key}[{number}]") for number, item in enumerate(value))

    def paths(self, value: Any, key: str) -> tuple[str, ...]:
        """Repository-relative POSIX paths; a trailing '/' marks a directory."""
        paths = self.strings(value, key)
        for number, text in enumerate(paths):
            item = f"{key}[{number}]"
            if "\\" in text:
                self.fail(item, f"{shown(text)} contains a backslash; write POSIX paths with '/'")
            if text.startswith("/") or re.match(r"[A-Za-z]:", text):
                self.fail(item, f"{shown(text)} is absolute; write it relative to the repository root")
            parts = text.rstrip("/").split("/")
            if ".." in parts:
                self.fail(item, f"{shown(text)} contains '..'; paths must stay inside the repository")
            if "" in parts or "." in parts:
                kept = "/".join(part for part in parts if part not in ("", "."))
                if not kept:
                    self.fail(item, f"{shown(text)} names the repository root; list files or "
                                    "directories inside it")
                fixed = kept + ("/" if text.endswith("/") else "")
                self.fail(item, f"{shown(text)} is not a normalised path; write {shown(fixed)}")
        return paths

    def identifier(self, value: Any, key: str) -> str:
        text = self.string(value, key)
        if not _ID_RE.fullmatch(text):
            slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).lstrip("._-")[:64].rstrip("-")
            hint = f"; try '{slug}'" if slug and _ID_RE.fullmatch(slug) else ""
            self.fail(key, f"{shown(text)} is not a valid id ({ID_RULE}){hint}")
        return text

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        text = self.string(value, key)
        if text not in choices:
            close = difflib.get_close_matches(text, choices, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            self.fail(key, f"{shown(text)} is not one of {', '.join(choices)}{hint}")
        return text

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_describe(value)}")
        return value

    def integer(self, value: Any, key: str, bounds: Bounds) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"expected an integer, got {_describe(value)}")
        if problem := bounds.problem(value):
            self.fail(key, problem)
        return value

    def number(self, value: Any, key: str, bounds: Bounds) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"expected a number, got {_describe(value)}")
        if problem := bounds.problem(float(value)):
            self.fail(key, problem)
        return float(value)


def _suggest(name: str, valid: Any, what: str) -> str:
    """'did you mean ...?' when a close match exists, else the list of valid names."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"valid {what}: {', '.join(valid)}"


def _describe(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
             dict: "table"}
    kind = kinds.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown if len(shown) <= 40 else shown[:37] + '...'}"
