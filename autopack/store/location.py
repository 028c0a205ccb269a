"""Where the store lives: a SQLite file (the default; no server) or a PostgreSQL URL (contract 6).

Pure and cheap to import: the settings, the CLI and the read commands decide which driver
to load from this alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres_url(value: str) -> bool:
    """True for ``postgresql://...`` (or ``postgres://``): a server, not a file name."""
    return "://" in value and value.split("://", 1)[0].lower() in POSTGRES_SCHEMES


@dataclass(frozen=True)
class PostgresUrl:
    """A PostgreSQL database by libpq URL, e.g. ``postgresql://autopack@db.example/autopack``.

    ``str()`` hides the password, so the URL can be shown in messages and status output."""

    url: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme.lower() not in POSTGRES_SCHEMES:
            raise ValueError(f"not a PostgreSQL URL: {self}")

    @property
    def password(self) -> str | None:
        """The URL's password, to be kept out of every message."""
        return urlsplit(self.url).password

    @property
    def libpq_url(self) -> str:
        """For psycopg: the scheme libpq knows."""
        return urlunsplit(urlsplit(self.url)._replace(scheme="postgresql"))

    @property
    def sqlalchemy_url(self) -> str:
        """For SQLAlchemy, with the psycopg 3 driver."""
        return urlunsplit(urlsplit(self.url)._replace(scheme="postgresql+psycopg"))

    def __str__(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


StoreLocation = Path | PostgresUrl


def parse_location(value: str | Path) -> StoreLocation:
    """A setting's ``db`` value as a location: a URL stays a URL, anything else is a file path."""
    if isinstance(value, (Path, PostgresUrl)):
        return value
    if is_postgres_url(value):
        return PostgresUrl(value)
    return Path(value).expanduser()
