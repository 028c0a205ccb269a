"""`autopack migrate` and `autopack init`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopack.cli import app
from autopack.cli.options import DbOption, JsonOption, load
from autopack.text import to_json


@app.command()
def migrate(
    db: DbOption = None,
    list_only: Annotated[bool, typer.Option("--list", help="Show applied and pending migrations; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create the database, or bring it to this autopack's schema (a SQLite file is backed up first)."""
    from autopack.store import inspect_database, migrate as apply_migrations
    from autopack.store.migrations import check_current

    settings = load(db)
    status = inspect_database(settings.db)
    if list_only:
        if as_json:
            print(to_json({"db": str(settings.db), "applied": list(status.applied),
                              "pending": list(status.pending), "unknown": list(status.unknown)}))
        else:
            state = (" (does not exist yet)" if not status.exists
                     else " (no schema yet)" if status.fresh and not status.unknown else "")
            print(f"database: {settings.db}{state}")
            for name in status.applied:
                print(f"  applied  {name}")
            for name in status.pending:
                print(f"  pending  {name}")
            for name in status.unknown:
                print(f"  unknown  {name} (from a newer autopack)")
        if status.unknown:
            check_current(settings.db, status)
        return
    result = apply_migrations(settings.db)
    if as_json:
        print(to_json({"db": str(settings.db), "created": result.created, "applied": list(result.applied),
                          "backup": str(result.backup) if result.backup else None}))
    elif result.created:
        print(f"created {settings.db} at the latest schema ({len(result.applied)} migration(s) recorded)")
    elif result.applied:
        backup = f"backup: {result.backup}" if result.backup else "no backup on PostgreSQL: pg_dump it first"
        print(f"applied {', '.join(result.applied)} to {settings.db} ({backup})")
    else:
        print(f"{settings.db} is up to date")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the file.")] = Path("autopack.toml"),
) -> None:
    """Write a starter autopack.toml with every setting at its default (never overwrites)."""
    from autopack.config import write_default_config

    write_default_config(path)
    print(f"wrote {path}: every setting at its default; edit what you need")
