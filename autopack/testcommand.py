"""The test command and its environment: is it plain pytest, the scrubbed environment, re-run ids.

Owns ``SECRET_PATTERNS`` (what :func:`scrub_env` removes), :func:`is_pytest` (may autopack
append arguments), and :func:`pytest_node_id` (the id that re-runs one outcome). Running
the command is :mod:`autopack.testrun`.
"""

from __future__ import annotations

import re
import shlex
from fnmatch import fnmatchcase
from typing import Mapping, Sequence

from autopack.junit import TestOutcome

# Names removed from the test command's environment (fnmatch, case-insensitive; env_allow
# brings one back). README "Security model" gives the reason for each group.
SECRET_PATTERNS = (
    # secrets by name
    "*_KEY", "*_KEY_*", "*TOKEN", "*_TOKEN_*", "*SECRET*", "*PASSWORD*", "*PASSWD*", "*_PWD", "*CREDENTIAL*",
    "*_CREDS*", "*JWT*",
    # agents and askpass helpers: they answer with the user's credentials
    "SSH_AUTH_SOCK", "SSH_AGENT_PID", "GPG_AGENT_INFO", "*ASKPASS*", "VSCODE_GIT_IPC_HANDLE", "KRB5CCNAME",
    # where cloud, cluster, registry and password-manager logins are found
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AZURE_*", "KUBECONFIG", "DOCKER_AUTH_CONFIG", "NETRC", "OP_SESSION_*",
    "BW_SESSION",
    # autopack's own
    "ANTHROPIC_*", "AUTOPACK_*",
)

SHELL_CONTROL_OPERATORS = frozenset({";", ";;", "&", "&&", "|", "||", "|&", "(", ")"})
_RUNNER_PREFIXES = (("uv", "run"), ("poetry", "run"), ("pdm", "run"))
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"(?:.*/)?python(?:\d+(?:\.\d+)*)?")


def is_pytest(command: str) -> bool:
    """True when ``command`` is one plain pytest invocation that autopack can extend.

    Accepts ``pytest``, ``py.test``, ``.../pytest``, ``python[3[.x]] -m pytest``, optionally
    after ``VAR=value`` assignments and ``uv run`` / ``poetry run`` / ``pdm run``. Commands
    chained with ``;``, ``&&``, ``|`` etc. are not: arguments appended to them would land
    on the last command.
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return False
    if any(token in SHELL_CONTROL_OPERATORS for token in tokens):
        return False
    while tokens and _ENV_ASSIGNMENT.match(tokens[0]):
        tokens.pop(0)
    for prefix in _RUNNER_PREFIXES:
        if tuple(tokens[:2]) == prefix:
            tokens = tokens[2:]
            break
    if not tokens:
        return False
    program = tokens[0]
    if program in ("pytest", "py.test") or program.endswith(("/pytest", "/py.test")):
        return True
    if not _PYTHON.fullmatch(program):
        return False
    return tokens[1:3] == ["-m", "pytest"] or tokens[1:2] == ["-mpytest"]


def scrub_env(environ: Mapping[str, str], allow: Sequence[str] = ()) -> dict[str, str]:
    """A copy of ``environ`` without credentials and the channels to them (``SECRET_PATTERNS``:
    keys, tokens, secrets, passwords, agent sockets, askpass helpers, cloud logins,
    ANTHROPIC_* and AUTOPACK_*), except names matching an ``allow`` fnmatch pattern.
    Matching is case-insensitive."""

    def matches(name: str, patterns: Sequence[str]) -> bool:
        return any(fnmatchcase(name.upper(), pattern.upper()) for pattern in patterns)

    return {
        name: value
        for name, value in environ.items()
        if not matches(name, SECRET_PATTERNS) or matches(name, allow)
    }


def pytest_node_id(outcome: TestOutcome) -> str | None:
    """The pytest node id to re-run ``outcome`` (from xunit1's ``file`` attribute).

    ``tests/test_a.py`` + ``tests.test_a.TestX`` + ``test_y[1-2]`` gives
    ``tests/test_a.py::TestX::test_y[1-2]``; None when it cannot be rebuilt.
    """
    if not outcome.file:
        return None
    file = outcome.file.replace("\\", "/")
    if outcome.collection_error:
        return file
    classname, separator, name = outcome.test_id.partition("::")
    if not separator:
        return None
    module = re.sub(r"\.py$", "", file).replace("/", ".")
    if classname == module:
        return f"{file}::{name}"
    if classname.startswith(module + "."):
        classes = classname[len(module) + 1 :].split(".")
        return "::".join([file, *classes, name])
    return None
