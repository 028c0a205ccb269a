"""Copy a SQLite store into an empty PostgreSQL database: the same rows, so the read models can be
compared on both (tests/test_read_models_both_stores.py, benchmarks/read_commands_pg.py).

The schema is the models' (``SQLModel.metadata.create_all``), rows go table by table in foreign-key
order through SQLAlchemy Core (so timestamps and JSON are converted by the column types), and each
serial primary key's sequence is moved past the copied ids.
"""

from __future__ import annotations

from pathlib import Path

BATCH = 10_000


def copy_store(sqlite_path: Path, pg_url: str) -> dict[str, int]:
    """Create the schema at ``pg_url`` and copy every row of ``sqlite_path`` there; rows per table."""
    from sqlalchemy import create_engine, func, select, text
    from sqlmodel import SQLModel

    from autopack.store.location import PostgresUrl
    from autopack.store.models import AppliedMigration

    assert AppliedMigration.__table__ in SQLModel.metadata.sorted_tables  # importing the models registered them

    source = create_engine(f"sqlite:///{sqlite_path}")
    target = create_engine(PostgresUrl(pg_url).sqlalchemy_url)
    counts: dict[str, int] = {}
    try:
        SQLModel.metadata.create_all(target)
        with source.connect() as reading, target.begin() as writing:
            for table in SQLModel.metadata.sorted_tables:  # parents before children
                counts[table.name] = 0
                result = reading.execution_options(yield_per=BATCH).execute(select(table))
                for batch in result.mappings().partitions():
                    writing.execute(table.insert(), [dict(row) for row in batch])
                    counts[table.name] += len(batch)
                for column in table.primary_key.columns:
                    if column.autoincrement is True or (column.autoincrement == "auto" and len(table.primary_key) == 1
                                                        and column.type.python_type is int):
                        top = writing.execute(select(func.max(column))).scalar()
                        if top is not None:
                            writing.execute(text("SELECT setval(pg_get_serial_sequence(:t, :c), :n)"),
                                            {"t": table.name, "c": column.name, "n": top})
        with target.connect().execution_options(isolation_level="AUTOCOMMIT") as tidying:
            tidying.execute(text("VACUUM ANALYZE"))  # what autovacuum does to a live store: index-only scans work
    finally:
        source.dispose()
        target.dispose()
    return counts
