"""`autopack check`: what this machine and this repository support for a run, each gap with its fix.

Every check is a ``Finding``: ``ok``, a ``warning`` (a run can start, but something is off) or a
``problem`` (a run cannot start: exit 4). Nothing is recorded or changed; ``--run-tests`` runs the
suite in a temporary worktree of the base commit (sandboxed when the sandbox is on) and removes it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autopack.errors import AutopackError

CHECK_SCHEMA = 1  # of `autopack check --json`; fields are only ever added
STATUSES = ("ok", "warning", "problem")
MODEL_ROLES = ("builder", "doctor", "escalation", "planner")


@dataclass(frozen=True)
class Finding:
    """One line of the check: what was found, and for a gap, what to do about it."""

    name: str
    status: str  # one of STATUSES
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkup:
    """Everything ``run_checks`` found; ``ready`` when a run can start."""

    findings: list[Finding]

    @property
    def ready(self) -> bool:
        return all(finding.status != "problem" for finding in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CHECK_SCHEMA, "ready": self.ready, "checks": [asdict(f) for f in self.findings]}


def run_checks(settings: Any, cwd: Path, plan: Any = None, *, run_tests: bool = False) -> Checkup:
    """Check git, the repository and base ref, the test command (and, with ``run_tests``, the suite),
    the sandbox, the store, the API key and the models, for ``plan`` when given, else for ``cwd``."""
    findings = [_git_version()]
    repo = _repository(Path(plan.run.repo) if plan else Path(cwd), plan.run.base if plan else None)
    test, command = _test_command(repo, plan)
    sandbox, profile = _sandbox(settings, plan)
    findings += [repo, test]
    if run_tests:
        findings.append(_suite(settings, repo, command, profile, plan))
    findings += [sandbox, _store(settings), _api_key(plan), *_models(settings, plan)]
    return Checkup(findings)


def _git_version() -> Finding:
    try:
        done = subprocess.run(["git", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Finding("git", "problem", f"git cannot be run: {error}", "install git (2.25 or later)")
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout)
    if done.returncode != 0 or not found:
        return Finding("git", "problem", f"`git --version` said {done.stdout.strip() or done.stderr.strip()!r}",
                       "reinstall git")
    version = tuple(int(part or 0) for part in found.groups())
    detail = f"git {'.'.join(map(str, version))}"
    if version < (2, 25):
        return Finding("git", "problem", f"{detail} is older than 2.25 (worktrees, trailers)", "upgrade git",
                       {"version": found.group(0)})
    return Finding("git", "ok", detail, data={"version": found.group(0)})


def _repository(directory: Path, base: str | None) -> Finding:
    from autopack.adapters.git.calls import locate_repo, resolve_ref

    try:
        location = locate_repo(directory)
        commit = resolve_ref(location.toplevel, base)
    except AutopackError as error:
        return Finding("repository", "problem", str(error), "run autopack in a git repository with a commit, "
                       "or fix run.repo / run.base")
    project = location.toplevel / location.subdir if location.subdir else location.toplevel
    return Finding("repository", "ok", f"{location.toplevel} at {base or 'HEAD'} ({commit[:10]})"
                   + (f", project {location.subdir}/" if location.subdir else ""),
                   data={"toplevel": str(location.toplevel), "project": str(project), "base": base or "HEAD",
                         "commit": commit})


def _test_command(repo: Finding, plan: Any) -> tuple[Finding, Any]:
    """The finding, and the TestCommand when there is a usable one."""
    from autopack.toolchains import resolve_test_command

    if repo.status == "problem":
        return Finding("test_command", "problem", "no repository to detect it in", "fix the repository first"), None
    try:
        test = resolve_test_command(Path(repo.data["project"]), plan.run.test_command if plan else None,
                                    plan.run.junit_xml if plan else None)
    except AutopackError as error:
        return Finding("test_command", "problem", str(error), "set run.test_command (and run.junit_xml)"), None
    data = {"command": test.command, "ecosystem": test.ecosystem, "junit_xml": test.junit_xml,
            "converter": test.converter}
    program = _program(test.command)
    detail = f"{test.command} ({test.ecosystem}: {test.reason})"
    if program and not shutil.which(program):
        return Finding("test_command", "problem", f"{detail}; {program!r} is not on PATH",
                       f"install the {test.ecosystem} toolchain, or set run.test_command", data), None
    return Finding("test_command", "ok", detail, data=data), test


def _program(command: str) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    words = [word for word in words if not re.match(r"[A-Za-z_][A-Za-z0-9_]*=", word)]
    return words[0] if words else None


def _suite(settings: Any, repo: Finding, command: Any, sandbox: Any, plan: Any) -> Finding:
    from autopack.testrun import run_tests
    from autopack.adapters.git.worktree_lock import add_detached_worktree, remove_worktree

    if command is None:
        return Finding("suite", "problem", "not run: no usable test command", "fix the test command first")
    toplevel = Path(repo.data["toplevel"])
    scratch = Path(tempfile.mkdtemp(prefix="autopack-check-"))
    worktree = scratch / "worktree"
    try:
        add_detached_worktree(toplevel, worktree, repo.data["commit"])
        root = worktree / Path(repo.data["project"]).relative_to(toplevel)
        timeout = float((plan.run.limits.get("phase_timeout_s") if plan else None) or settings.phase_timeout_s)
        report = run_tests(command.command, root, timeout_s=timeout, log_path=scratch / "logs" / "suite.log",
                           junit_path=scratch / "junit" / "suite.xml", junit_xml=command.junit_xml,
                           converter=command.converter, ecosystem=command.ecosystem,
                           output_cap_bytes=settings.max_output_bytes, env_allow=settings.env_allow,
                           sandbox=sandbox)
    except AutopackError as error:
        return Finding("suite", "problem", f"the suite could not run: {error}", "fix the test command")
    finally:
        remove_worktree(toplevel, worktree)
        shutil.rmtree(scratch, ignore_errors=True)
    counts = report.counts()
    data = {"exit_code": report.exit_code, "timed_out": report.timed_out, "duration_s": round(report.duration_s, 3),
            "counts": counts, "junit_error": report.junit_error, "sandboxed": sandbox is not None}
    shown = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped") if counts[k])
    where = " (sandboxed)" if sandbox is not None else ""
    if report.timed_out:
        return Finding("suite", "problem", f"timed out after {timeout:g} s{where}",
                       "raise phase_timeout_s (or run.limits.phase_timeout_s)", data)
    if not report.outcomes:
        return Finding("suite", "problem", f"exit code {report.exit_code}{where}, no per-test results: "
                       f"{report.junit_error or 'the report lists no tests'}; last output: "
                       f"{' '.join(report.output_tail.split()[-30:])}",
                       "make the command write JUnit XML (run.junit_xml) or use pytest; check it runs here", data)
    return Finding("suite", "ok", f"{counts['total']} tests{where} in {report.duration_s:.1f} s: {shown}; "
                   "per-test JUnit results", data=data)


def _sandbox(settings: Any, plan: Any) -> tuple[Finding, Any]:
    """The finding, and the Sandbox the suite runs in (None: unconfined)."""
    from autopack.sandbox import SandboxUnavailable, effective_mode, preflight, sandbox_for

    mode = effective_mode(settings.sandbox, plan.run.sandbox if plan else None)
    if mode == "none":
        try:
            found = preflight(settings.sandbox_bwrap)
            also = f"bubblewrap works here ({found}): sandbox = \"bwrap\" confines them"
        except SandboxUnavailable as error:
            also = f"bubblewrap cannot confine them here: {error}"
        return Finding("sandbox", "ok", "none: the tests run as you, with your files and network; " + also,
                       data={"mode": mode}), None
    try:
        profile = sandbox_for(settings, plan.run.sandbox if plan else None, settings.state_dir)
    except AutopackError as error:
        cause, _, fix = str(error).partition("; ")
        return Finding("sandbox", "problem", cause, fix or None, {"mode": mode}), None
    extras = ", network shared" if profile.network else ", no network"
    detail = f"bwrap ({profile.bwrap}): read-only files but the worktree{extras}"
    data = {"mode": mode, "bwrap": profile.bwrap, "network": profile.network}
    if os.getuid() == 0:
        return Finding("sandbox", "warning", f"{detail}; as root, the tests still read what root reads "
                       "(/etc/shadow, other users' files)", "run autopack as a user without secrets of its own",
                       data), profile
    return Finding("sandbox", "ok", detail, data=data), profile


def _store(settings: Any) -> Finding:
    from autopack.store import inspect_database

    if not isinstance(settings.db, Path):
        return _pg_store(settings.db)
    db = Path(settings.db)
    data = {"kind": "sqlite", "path": str(db)}
    try:
        status = inspect_database(db)
    except AutopackError as error:
        return Finding("store", "problem", str(error), "use --db (or the db setting) for another file", data)
    data.update(applied=len(status.applied), pending=list(status.pending), unknown=list(status.unknown))
    if status.unknown:
        return Finding("store", "problem", f"SQLite {db} was written by a newer autopack "
                       f"({', '.join(status.unknown)})", "upgrade autopack", data)
    if not status.exists or status.fresh:
        parent = next((p for p in (db.parent, *db.parents) if p.exists()), Path("/"))
        if not os.access(parent, os.W_OK):
            return Finding("store", "problem", f"SQLite {db} does not exist and {parent} is not writable",
                           "make it writable, or set db to a writable path", data)
        return Finding("store", "ok", f"SQLite {db}: created at the latest schema by the first run", data=data)
    if status.pending:
        return Finding("store", "problem", f"SQLite {db} needs migrating ({len(status.pending)} pending)",
                       f"autopack migrate --db {db} (a backup is written first)", data)
    return Finding("store", "ok", f"SQLite {db}: schema current ({len(status.applied)} migrations)", data=data)


def _pg_store(url: Any) -> Finding:
    """A PostgreSQL store: can this machine connect, which server, and the schema's state."""
    from autopack.store.migrations import inspect_database
    from autopack.store.pg_connect import connect, translate_pg_errors

    data: dict[str, Any] = {"kind": "postgresql", "url": str(url)}
    try:
        conn = connect(url, autocommit=True, role=" (check)")
        try:
            with translate_pg_errors(url):
                version = conn.execute("SHOW server_version").fetchone()[0]
        finally:
            conn.close()
        data["server_version"] = version
        status = inspect_database(url)
    except AutopackError as error:
        fix = ("pip install 'autopack[postgresql]'" if "psycopg" in str(error)
               else "start the server, or fix the URL in --db / the db setting")
        return Finding("store", "problem", str(error), fix, data)
    data.update(applied=len(status.applied), pending=list(status.pending), unknown=list(status.unknown))
    where = f"PostgreSQL {version} at {url}"
    if status.unknown:
        return Finding("store", "problem", f"{where} was written by a newer autopack ({', '.join(status.unknown)})",
                       "upgrade autopack", data)
    if status.fresh:
        return Finding("store", "ok", f"{where}: no schema yet; created by the first run (or autopack migrate)",
                       data=data)
    if status.pending:
        return Finding("store", "problem", f"{where} needs migrating ({len(status.pending)} pending)",
                       f"pg_dump it, then autopack migrate --db {url}", data)
    return Finding("store", "ok", f"{where}: schema current ({len(status.applied)} migrations)", data=data)


def _api_key(plan: Any) -> Finding:
    present = bool(os.environ.get("ANTHROPIC_API_KEY", "").strip())
    cassette = plan is not None and plan.run.cassette is not None
    data = {"present": present, "cassette": cassette}
    if present:
        return Finding("api_key", "ok", "ANTHROPIC_API_KEY is set (not shown)", data=data)
    if cassette:
        return Finding("api_key", "ok", "ANTHROPIC_API_KEY is not set; the plan replays its cassette", data=data)
    return Finding("api_key", "problem", "ANTHROPIC_API_KEY is not set: a live run cannot start",
                   "export ANTHROPIC_API_KEY, or give the plan a cassette (run.cassette / --cassette)", data)


def _models(settings: Any, plan: Any) -> list[Finding]:
    from autopack.llm.client import deprecation_warning, model_prices

    models: dict[str, list[str]] = {}
    for role in MODEL_ROLES:
        model = (plan.run.models.get(role) if plan else None) or getattr(settings, f"{role}_model")
        models.setdefault(model, []).append(role)
    findings = []
    for model, roles in models.items():
        name = f"model {model}"
        price = model_prices(model, settings.prices or None)
        data = {"model": model, "roles": roles,
                "prices_per_mtok": dict(zip(("input", "output", "cache_write", "cache_read"), price)) if price else None}
        deprecated = deprecation_warning(model)
        if deprecated:
            data["deprecated"] = True
            findings.append(Finding(name, "warning", deprecated.split("; ")[0], deprecated.split("; ", 1)[1], data))
        elif price is None:
            findings.append(Finding(name, "warning", f"{'/'.join(roles)}: no price known, so the ledger records "
                                    "no cost for its calls and cost caps count them as $0",
                                    f'add prices."{model}" = {{input = ..., output = ..., cache_write = ..., '
                                    "cache_read = ...}", data))
        else:
            findings.append(Finding(name, "ok", f"{'/'.join(roles)}: ${price[0]:g} in / ${price[1]:g} out per "
                                    "million tokens", data=data))
    return findings
