"""Secrets out of what autopack keeps or sends back to a model: transcripts and tool results.

A secret is the value of an environment variable whose name the test sandbox scrubs as a
credential (API keys, tokens, secrets, passwords, ANTHROPIC_*; allow-listed or not, but not
autopack's own AUTOPACK_* settings, such as a model name), or anything shaped like an Anthropic
key. Values shorter than ``MIN_SECRET_CHARS`` are left alone: they would redact ordinary words.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

MARK = "[redacted]"
MIN_SECRET_CHARS = 8
_ANTHROPIC_KEY = re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}")


class Redactor:
    """Replaces every known secret in a text (or in the strings of a JSON-like value) with ``MARK``."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Redactor:
        from autopack.testcommand import SECRET_PATTERNS

        credentials = [pattern for pattern in SECRET_PATTERNS if pattern != "AUTOPACK_*"]
        environ = os.environ if environ is None else environ
        return cls(value for name, value in environ.items()
                   if any(fnmatchcase(name.upper(), pattern) for pattern in credentials))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MARK)
        return _ANTHROPIC_KEY.sub(MARK, text) if "sk-ant-" in text else text

    def value(self, value: Any) -> Any:
        """``value`` with every string in it (dict keys included) redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self(key) if isinstance(key, str) else key: self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value
