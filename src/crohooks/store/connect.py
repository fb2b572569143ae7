"""``open_database``: the one place where the URL picks a database and its driver."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from crohooks.store.connector import Database, DatabaseLimits


def redacted(url: str) -> str:
    """The URL with its password, if any, as ``***``: fit for a banner or a log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def conninfo_of(url: str) -> str:
    """A libpq connection string from a database URL (``postgresql+psycopg://`` too)."""
    scheme, sep, rest = url.partition("://")
    return "postgresql://" + rest if sep and scheme.startswith("postgres") else url


def open_database(url: str, limits: DatabaseLimits | None = None) -> Database:
    """The database at ``url`` (``sqlite:///path.db`` or ``postgresql://…``), not yet
    connected: connections open on first use."""
    limits = limits or DatabaseLimits()
    if url.startswith("sqlite"):
        from crohooks.store._sqlite import SQLiteDatabase

        return SQLiteDatabase(url, limits)
    if url.startswith(("postgresql", "postgres:")):
        from crohooks.store._postgres import PostgresDatabase

        return PostgresDatabase(url, limits)
    raise ValueError("the database URL must start with sqlite:// or postgresql://")
