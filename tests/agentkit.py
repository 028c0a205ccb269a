"""A small project for agent tests, and a RunContext that runs it with any builder (a ScriptedBuilder).

The project (``shop``) is a git repository with a package, a pytest suite and a README:
``shop/cart.py`` has ``total(items)``; the tests pass. Phases in tests add things to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import cli_env, git

CART = '''"""A shopping cart."""


def total(items):
    """The sum of price * quantity over (price, quantity) pairs."""
    return sum(price * quantity for price, quantity in items)
'''
TEST_CART = '''from shop.cart import total


def test_total():
    assert total([(2, 3), (1, 1)]) == 7


def test_empty_total():
    assert total([]) == 0
'''
MODEL = "claude-sonnet-5-5"


def make_shop(root: Path, env: dict[str, str]) -> Path:
    """A git repository at ``root/shop`` on main with one commit."""
    project = root / "shop"
    (project / "shop").mkdir(parents=True)
    (project / "tests").mkdir()
    (project / "shop" / "__init__.py").write_text("")
    (project / "shop" / "cart.py").write_text(CART)
    (project / "tests" / "test_cart.py").write_text(TEST_CART)
    (project / "README.md").write_text("# shop\n\nA cart with total().\n")
    (project / ".gitignore").write_text("__pycache__/\n.pytest_cache/\n")
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    git(project, "init", "-q", "-b", "main", env=env)
    git(project, "add", "-A", env=env)
    git(project, "commit", "-q", "-m", "initial", env=env)
    return project


def plan_text(run_id: str, phases: list[dict], *, builder: str | None = "agent", extra: str = "") -> str:
    lines = ["[run]", f'id = "{run_id}"', 'goal = "Improve the shop"', 'repo = "shop"',
             'test_command = "python -m pytest -q"']
    if builder:
        lines.append(f'builder = "{builder}"')
    lines.append(extra)
    for phase in phases:
        lines += ["", "[[phases]]"] + [f"{key} = {json.dumps(value)}" for key, value in phase.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Bench:
    """One project, one plan, one store; ``context(builder)`` gives a RunContext for the run."""

    root: Path
    project: Path
    settings: Any
    plan: Any
    store: Any
    run: Any

    def context(self, builder: Any, caps: tuple = ()) -> Any:
        from autopack.runner import RunContext
        from autopack.workspace import Workspace

        run = self.store.get_run(self.run.id)
        workspace = Workspace(Path(run.repo_root), Path(run.worktree), run.branch, run.subdir)
        workspace.ensure(run.base_commit)
        return RunContext(store=self.store, run=run, plan=self.plan, workspace=workspace, builder=builder,
                          settings=self.settings, executor_id="test-executor",
                          artifacts=self.settings.state_dir / "runs" / run.id, builder_model=MODEL,
                          cost_caps=caps)

    def phase(self, phase_id: str) -> Any:
        return self.store.phase(self.run.id, phase_id)


def bench(tmp_path: Path, phases: list[dict], *, settings: dict[str, str] | None = None, extra: str = "",
          run_id: str = "shop-run") -> Bench:
    from autopack.config import load_settings
    from autopack.launch import check_new_run, record_run
    from autopack.plan import load_plan
    from autopack.store import open_store

    env = cli_env(tmp_path / "home")
    (tmp_path / "home").mkdir(exist_ok=True)
    project = make_shop(tmp_path, env)
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(plan_text(run_id, phases, extra=extra))
    environ = {**env, "AUTOPACK_DB": str(tmp_path / "state" / "autopack.db"), **(settings or {})}
    config = load_settings(tmp_path, environ=environ)
    plan = load_plan(plan_path)
    store = open_store(config.db)
    run = record_run(store, plan, check_new_run(config, plan), config)
    return Bench(tmp_path, project, config, plan, store, run)
