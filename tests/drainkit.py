"""Many drainable runs, generated fast: one git repository, a plan and a cassette per run.

The repository's test command is ``python check.py`` (not pytest, so a phase costs one
~30 ms suite run): it writes report.xml with a passing ``check.sanity`` testcase and one
passing testcase per ``out/*.txt`` file, and ``check.sanity`` fails while any
``out/*.bad`` file exists. A phase's builder answer per attempt is one ``write_file``:

- ``ok``: ``out/<phase>.txt`` (the deliverable) -> complete
- ``outside``: a file outside the phase's scope -> apply_error
- ``break``: ``out/<phase>.bad`` -> regression (check.sanity now fails)

While ``Workbench.slow_marker`` exists, a suite run over a tree with ``out/`` files touches
``Workbench.suite_started`` (writing its pid) and waits: a test can catch a phase in
``ci_running``. Baselines of a fresh run (no ``out/`` files) never wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from conftest import cli_env, git

CHECK_PY = '''\
import os
import sys
import time
from pathlib import Path
from xml.sax.saxutils import quoteattr

SLOW_MARKER = {slow!r}
SUITE_STARTED = {started!r}
out = Path("out")
texts = sorted(p.name for p in out.glob("*.txt"))
if texts and os.path.exists(SLOW_MARKER):
    Path(SUITE_STARTED + ".tmp").write_text(str(os.getpid()))
    os.replace(SUITE_STARTED + ".tmp", SUITE_STARTED)  # whole or absent, never half-written
    while os.path.exists(SLOW_MARKER):
        time.sleep(0.05)
broken = sorted(p.name for p in out.glob("*.bad"))
sanity = '<testcase classname="check" name="sanity"{{}}>'.format(
    '><failure message="broken: %s"/></testcase' % " ".join(broken) if broken else "/")
cases = [sanity] + ['<testcase classname="out" name=%s/>' % quoteattr(n) for n in texts]
Path("report.xml").write_text('<testsuite name="check" tests="%d" failures="%d">%s</testsuite>'
                              % (len(cases), 1 if broken else 0, "".join(cases)))
sys.exit(1 if broken else 0)
'''


@dataclass(frozen=True)
class PhaseScript:
    """One phase and the builder's answer for each attempt number (1, 2, ...)."""

    id: str
    answers: tuple[str, ...] = ("ok",)
    depends_on: tuple[str, ...] = ()
    max_attempts: int = 1
    category: str = "feature"


def builder_line(phase: str, attempt: int, path: str, content: str) -> dict:
    """A cassette line: a Messages API answer with one write_file tool_use."""
    body = {
        "id": f"msg_{phase}_{attempt}", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
        "content": [{"type": "tool_use", "id": f"toolu_{phase}_{attempt}", "name": "write_file",
                     "input": {"path": path, "content": content}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }
    return {"role": "builder", "phase": phase, "attempt": attempt,
            "response": {"status": 200, "headers": {}, "body": body}}


def answer_path(phase: str, answer: str) -> str:
    paths = {"ok": f"out/{phase}.txt", "outside": f"elsewhere/{phase}.txt", "break": f"out/{phase}.bad"}
    return paths[answer]


@dataclass
class Workbench:
    """A repository, a plans directory and a state database, all under ``root``."""

    root: Path
    settings: dict[str, str] = field(default_factory=dict)  # extra AUTOPACK_* variables
    store_db: str = ""  # the store (a file or a postgresql:// URL; e.g. conftest's store_db); "": state/autopack.db

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        self.plans = self.root / "plans"
        self.db: Path | str = (self.store_db if self.store_db.startswith("postgresql://")
                               else Path(self.store_db or self.root / "state" / "autopack.db"))
        self.slow_marker = self.root / "slow"
        self.suite_started = self.root / "suite-started"
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        # `python` in the suite's command is this interpreter, not a slow pyenv shim.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        self.env = cli_env(home) | {"AUTOPACK_DB": str(self.db), "PATH": path} | self.settings
        self.plans.mkdir(parents=True, exist_ok=True)
        self.repo.mkdir(parents=True, exist_ok=True)
        (self.repo / "check.py").write_text(CHECK_PY.format(slow=str(self.slow_marker),
                                                            started=str(self.suite_started)))
        (self.repo / ".gitignore").write_text("report.xml\n")
        (self.repo / "out").mkdir()
        (self.repo / "out" / ".keep").write_text("")
        git(self.repo, "init", "-q", "-b", "main", env=self.env)
        git(self.repo, "add", "-A", env=self.env)
        git(self.repo, "commit", "-q", "-m", "initial", env=self.env)

    def add_run(self, run_id: str, phases: Sequence[PhaseScript], run_type: str | None = None) -> Path:
        """Write the plan and its cassette; returns the plan's path."""
        lines = ["[run]", f'id = "{run_id}"', f'goal = "Write the files of {run_id}"', 'repo = "../repo"',
                 'test_command = "python check.py"', 'junit_xml = "report.xml"', f'cassette = "{run_id}.jsonl"',
                 'builder = "single"']
        if run_type:
            lines.append(f'type = "{run_type}"')
        cassette = []
        for p in phases:
            lines += ["", "[[phases]]", f'id = "{p.id}"', f'goal = "Write out/{p.id}.txt"',
                      f'category = "{p.category}"', f'scope = ["out/{p.id}.txt", "out/{p.id}.bad"]',
                      f'deliverables = ["out/{p.id}.txt"]', f"depends_on = {json.dumps(list(p.depends_on))}",
                      f"max_attempts = {p.max_attempts}",
                      "require_f2p = false"]  # drains, not goal evidence: a forced redo proves nothing new
            cassette += [builder_line(p.id, n, answer_path(p.id, a), f"{run_id} {p.id} attempt {n}\n")
                         for n, a in enumerate(p.answers, 1)]
        plan = self.plans / f"{run_id}.toml"
        plan.write_text("\n".join(lines) + "\n")
        (self.plans / f"{run_id}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cassette))
        return plan

    def queue(self, run_id: str, phases: Sequence[PhaseScript], run_type: str | None = None) -> None:
        self.queue_many({run_id: phases}, run_type)

    def queue_many(self, runs: dict[str, Sequence[PhaseScript]], run_type: str | None = None) -> None:
        """Record runs with every phase queued, in this process: what `autopack run --queue-only`
        does, without its ~1 s of start-up per run."""
        from autopack.config import load_settings
        from autopack.launch import check_new_run, record_run
        from autopack.plan import load_plan
        from autopack.store import open_store

        settings = load_settings(self.root, environ=self.env)
        with open_store(settings.db) as store:
            for run_id, phases in runs.items():
                plan = load_plan(self.add_run(run_id, phases, run_type))
                record_run(store, plan, check_new_run(settings, plan), settings)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "autopack", *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "autopack", *args], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

    def status(self, run_id: str) -> dict:
        """What `autopack status RUN_ID --json` prints (contract 4), read in this process."""
        from autopack.store.queries import run_status

        with self.open_store() as store:
            return run_status(store, run_id)

    def phase_states(self, run_id: str) -> dict[str, str]:
        return {p["id"]: p["state"] for p in self.status(run_id)["phases"]}

    def commits(self, run_id: str) -> list[tuple[str, str]]:
        """(phase, attempt) of each commit on the run's branch, oldest first."""
        log = git(self.repo, "log", "--reverse", "--format=%(trailers:key=Autopack-Phase,valueonly)%x00"
                  "%(trailers:key=Autopack-Attempt,valueonly)%x01", f"autopack/{run_id}", env=self.env)
        pairs = [entry.split("\0") for entry in log.split("\x01") if entry.strip()]
        return [(phase.strip(), attempt.strip()) for phase, attempt in pairs if phase.strip()]

    def open_store(self) -> Any:
        """The state store (a context manager), for direct queries."""
        from autopack.store import open_store
        from autopack.store.location import parse_location

        return open_store(parse_location(self.db), create=False)
