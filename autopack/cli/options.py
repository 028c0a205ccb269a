"""Options shared by every command, and the settings they resolve to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

DbOption = Annotated[
    Optional[Path],
    typer.Option("--db", help="SQLite state file (default: .autopack/autopack.db at the git repository root).",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (contract 4).")]


_STATE_DIRS: list[Path] = []  # where this invocation's database lives, once its settings are loaded


def load(db: Path | None, **overrides: Any) -> Any:
    """Settings for this invocation: flags > AUTOPACK_* env > autopack.toml > defaults."""
    from autopack.config import load_settings

    settings = load_settings(Path.cwd(), {"db": str(db) if db else None, **overrides})
    _STATE_DIRS.append(settings.db.parent)
    return settings


def state_dir() -> Path | None:
    """This invocation's state directory (the database's), once known: where a crash log goes."""
    return _STATE_DIRS[-1] if _STATE_DIRS else None
