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


def load(db: Path | None, **overrides: Any) -> Any:
    """Settings for this invocation: flags > AUTOPACK_* env > autopack.toml > defaults.

    A database path that is not a regular file is refused here, before anything else.
    """
    from autopack.config import load_settings
    from autopack.store import check_database_path

    settings = load_settings(Path.cwd(), {"db": str(db) if db else None, **overrides})
    source = settings.sources["db"]
    label = {"flag": f"--db {settings.db}", "env": f"AUTOPACK_DB={settings.db}",
             "default": str(settings.db)}.get(source, f"{source}: db = {settings.db}")
    check_database_path(settings.db, label)
    return settings
