"""Which test command to run for a repository, and where its per-test results come from.

A plan's explicit ``test_command`` (+ ``junit_xml``) always wins. Without one, the
toolchain is detected from the project's files, first match wins: Python, Node, Go,
Rust, Maven, Gradle; nothing recognised falls back to pytest. Each choice is a command
that yields JUnit XML (or output autopack converts itself); docs/toolchains.md has the table.
Commands that write their report to ``$AUTOPACK_JUNIT_FILE`` leave ``junit_xml`` None.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from autopack.errors import UsageError
from autopack.plan import DEFAULT_TEST_COMMAND
from autopack.testcommand import SHELL_CONTROL_OPERATORS, is_pytest
from autopack.text import shown
from autopack.userfiles import read_regular

ECOSYSTEMS = ("python", "node", "go", "rust", "java-maven", "java-gradle", "custom")

_PYTHON_MARKERS = ("pytest.ini", "pyproject.toml", "setup.py", "setup.cfg", "tox.ini", "conftest.py")
_GRADLE_MARKERS = ("build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts")
_NPM_PLACEHOLDER = re.compile(r"no test specified")
_NODE_REPORTERS = ("--test-reporter=spec --test-reporter-destination=stdout "
                   "--test-reporter=junit --test-reporter-destination={file}")
_JEST_JUNIT_ENV = ('JEST_JUNIT_OUTPUT_FILE="$AUTOPACK_JUNIT_FILE" JEST_JUNIT_REPORT_TEST_SUITE_ERRORS=true '
                   "JEST_JUNIT_CLASSNAME='{filepath}' JEST_JUNIT_TITLE='{classname} {title}'")
_PROGRAM_ECOSYSTEM = {
    "mvn": "java-maven", "mvnw": "java-maven", "gradle": "java-gradle", "gradlew": "java-gradle",
    "cargo": "rust", "go": "go", "gotestsum": "go", "npm": "node", "npx": "node", "yarn": "node",
    "pnpm": "node", "node": "node", "bun": "node", "vitest": "node", "jest": "node", "tsc": "node",
    "pytest": "python", "py.test": "python", "tox": "python", "nox": "python",
}


@dataclass(frozen=True)
class TestCommand:
    """The test command for a project and how autopack reads its per-test results."""

    __test__ = False  # not a pytest test class

    command: str  # shell command to run in the project root
    junit_xml: str | None  # file, directory or glob (relative to the project root); None: pytest,
    # a converter, or a command writing to $AUTOPACK_JUNIT_FILE
    ecosystem: str  # one of ECOSYSTEMS
    reason: str  # why this command, for `autopack run --dry-run`
    converter: str | None = None  # "go-test-json" | "libtest": autopack converts the output itself


def resolve_test_command(project_root: Path, test_command: str | None, junit_xml: str | None) -> TestCommand:
    """The plan's command when it sets one, otherwise the one detected from ``project_root``.

    Raises UsageError when ``junit_xml`` is set without ``test_command``, or when the
    detected project runs its tests in a way that yields no per-test results (the message
    says what to install or which plan keys to set).
    """
    if test_command is not None:
        return _explicit(test_command, junit_xml)
    if junit_xml is not None:
        raise UsageError(f"run.junit_xml is {shown(junit_xml)} but run.test_command is not set: "
                         "set both, or neither to let autopack detect the toolchain")
    root = Path(project_root)
    found = [(name, detect) for name, marker, detect in _DETECTORS if marker(root)]
    if not found:
        return TestCommand(DEFAULT_TEST_COMMAND, None, "python",
                           "no project file of a known toolchain; defaulting to pytest")
    chosen = found[0][1](root)
    others = [name for name, _ in found[1:] if name != chosen.ecosystem]
    if others:
        chosen = replace(chosen, reason=f"{chosen.reason}; also found {', '.join(others)} "
                                        "(set run.test_command to test that instead)")
    return chosen


def baseline_key(command: str) -> str:
    """What a cached baseline is keyed by besides the tree (the store hashes it): the test command and a
    fingerprint of the machine running it (this Python's version, the OS and CPU architecture, and where
    each program of the command resolves on PATH), so machines with different toolchains that share a
    store never share a baseline."""
    import hashlib
    import platform
    import sys

    programs = [os.path.realpath(found) if (found := shutil.which(p)) else p for p in _programs(command)]
    machine = "\0".join([sys.version, sys.platform, platform.machine(), *programs])
    return f"{command}\n# environment {hashlib.sha256(machine.encode()).hexdigest()[:16]}"


def ecosystem_of(command: str) -> str:
    """The ecosystem a hand-written command belongs to, from the programs it runs."""
    if is_pytest(command):
        return "python"
    for program in _programs(command):
        name = Path(program).name
        if name in _PROGRAM_ECOSYSTEM:
            return _PROGRAM_ECOSYSTEM[name]
    return "custom"


# --- explicit commands --------------------------------------------------------------


def _explicit(command: str, junit_xml: str | None) -> TestCommand:
    ecosystem = ecosystem_of(command)
    if junit_xml is not None:
        return TestCommand(command, junit_xml, ecosystem, f"set in the plan; JUnit XML read from {junit_xml}")
    if is_pytest(command):
        return TestCommand(command, None, ecosystem, "set in the plan; pytest gets --junitxml added")
    words = _words(command)
    if ecosystem == "rust" and _has_sequence(words, "cargo", "test"):
        return TestCommand(command, None, ecosystem, "set in the plan; autopack reads libtest's output",
                           converter="libtest")
    if ecosystem == "go" and _has_sequence(words, "go", "test") and "-json" in words:
        return TestCommand(command, None, ecosystem, "set in the plan; autopack converts `go test -json` events",
                           converter="go-test-json")
    return TestCommand(command, None, ecosystem,
                       "set in the plan; the command must write JUnit XML to $AUTOPACK_JUNIT_FILE "
                       "(or set run.junit_xml)")


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:
        return command.split()


def _programs(command: str) -> list[str]:
    """The first word of each simple command, after VAR=value assignments."""
    programs: list[str] = []
    expect_program = True
    for word in _words(command):
        if word in SHELL_CONTROL_OPERATORS:
            expect_program = True
        elif expect_program and not re.match(r"[A-Za-z_][A-Za-z0-9_]*=", word):
            programs.append(word)
            expect_program = False
    return programs


def _has_sequence(words: list[str], first: str, second: str) -> bool:
    return any(Path(a).name == first and b == second for a, b in zip(words, words[1:]))


# --- detection ----------------------------------------------------------------------


def _python(root: Path) -> TestCommand:
    marker = next(name for name in _PYTHON_MARKERS if (root / name).exists())
    return TestCommand(DEFAULT_TEST_COMMAND, None, "python", f"{marker} found; pytest with --junitxml")


def _node(root: Path) -> TestCommand:
    package = _read_package_json(root / "package.json")
    script = str((package.get("scripts") or {}).get("test") or "")
    if not script or _NPM_PLACEHOLDER.search(script):
        reporters = _NODE_REPORTERS.format(file='"$AUTOPACK_JUNIT_FILE"')
        return TestCommand(f"node --test {reporters}", None, "node",
                           "package.json has no test script; node's built-in runner (node >= 20) "
                           "with --test-reporter=junit")
    words = _words(script)
    if any(Path(word).name == "vitest" for word in words):
        return TestCommand('CI=true npm test -- --reporter=default --reporter=junit '
                           '--outputFile.junit="$AUTOPACK_JUNIT_FILE"', None, "node",
                           f"package.json's test script `{script}` uses vitest; vitest --reporter=junit")
    if any(Path(word).name == "jest" for word in words):
        if not _has_dependency(root, package, "jest-junit"):
            raise UsageError(f"{root / 'package.json'}: the test script `{script}` runs jest without "
                             "jest-junit: add jest-junit to devDependencies (and npm install), or set "
                             "run.test_command and run.junit_xml in the plan")
        return TestCommand(f"{_JEST_JUNIT_ENV} CI=true npm test -- --ci --reporters=default --reporters=jest-junit",
                           None, "node", f"package.json's test script `{script}` uses jest; jest-junit reporter")
    if "--test" in words and any(Path(word).name == "node" for word in words):
        # Options after the script's file arguments would be read as files: pass them in NODE_OPTIONS.
        reporters = _NODE_REPORTERS.format(file='\\"$AUTOPACK_JUNIT_FILE\\"')
        return TestCommand(f'NODE_OPTIONS="$NODE_OPTIONS {reporters}" npm test', None, "node",
                           f"package.json's test script `{script}` uses node --test; "
                           "--test-reporter=junit via NODE_OPTIONS")
    raise UsageError(f"{root / 'package.json'}: autopack cannot get per-test results from the test script "
                     f"`{script}` (it knows vitest, jest with jest-junit and node --test): set "
                     "run.test_command and run.junit_xml in the plan")


def _read_package_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_regular(path).decode("utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise UsageError(f"{path}: cannot read it as JSON ({error}); fix it or set run.test_command") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object; fix it or set run.test_command")
    return data


def _has_dependency(root: Path, package: dict[str, Any], name: str) -> bool:
    declared = any(name in (package.get(key) or {}) for key in ("dependencies", "devDependencies"))
    return declared or (root / "node_modules" / name).is_dir()


def _go(root: Path) -> TestCommand:
    if shutil.which("gotestsum"):
        return TestCommand('gotestsum --junitfile "$AUTOPACK_JUNIT_FILE" -- ./...', None, "go",
                           "go.mod found and gotestsum is installed; gotestsum --junitfile")
    return TestCommand("go test -json ./...", None, "go",
                       "go.mod found, gotestsum not installed; autopack converts `go test -json` events",
                       converter="go-test-json")


def _rust(root: Path) -> TestCommand:
    profile = _nextest_junit_profile(root) if shutil.which("cargo-nextest") else None
    if profile is not None:
        name, path = profile
        return TestCommand(f"cargo nextest run --no-fail-fast --profile {name}", f"target/nextest/{name}/{path}",
                           "rust", f"Cargo.toml found; cargo-nextest with the JUnit output of profile {name!r} "
                           "in .config/nextest.toml")
    return TestCommand("cargo test --no-fail-fast", None, "rust",
                       "Cargo.toml found, no cargo-nextest JUnit profile; autopack reads libtest's output",
                       converter="libtest")


def _nextest_junit_profile(root: Path) -> tuple[str, str] | None:
    """(profile, junit path) from .config/nextest.toml; the "ci" profile first."""
    try:
        config = tomllib.loads(read_regular(root / ".config" / "nextest.toml").decode("utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    profiles = config.get("profile") or {}
    for name in sorted(profiles, key=lambda profile: profile != "ci"):
        path = ((profiles[name] or {}).get("junit") or {}).get("path")
        if isinstance(path, str) and path and not Path(path).is_absolute() and ".." not in Path(path).parts:
            return name, path
    return None


def _maven(root: Path) -> TestCommand:
    program = "./mvnw" if (root / "mvnw").is_file() else "mvn"
    return TestCommand(f"{program} -B -fae test", "**/target/surefire-reports/TEST-*.xml", "java-maven",
                       "pom.xml found; Maven Surefire reports (every module's XML files merged)")


def _gradle(root: Path) -> TestCommand:
    program = "./gradlew" if (root / "gradlew").is_file() else "gradle"
    return TestCommand(f"{program} test --continue --console=plain", "**/build/test-results/test/TEST-*.xml",
                       "java-gradle", "Gradle build found; Gradle's JUnit XML test results (merged)")


_DETECTORS: tuple[tuple[str, Callable[[Path], bool], Callable[[Path], TestCommand]], ...] = (
    ("python", lambda root: any((root / name).exists() for name in _PYTHON_MARKERS), _python),
    ("node", lambda root: (root / "package.json").is_file(), _node),
    ("go", lambda root: (root / "go.mod").is_file(), _go),
    ("rust", lambda root: (root / "Cargo.toml").is_file(), _rust),
    ("java-maven", lambda root: (root / "pom.xml").is_file(), _maven),
    ("java-gradle", lambda root: any((root / name).is_file() for name in _GRADLE_MARKERS), _gradle),
)
