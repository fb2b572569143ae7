"""Create or upgrade the schema with Alembic, from code (``crohooks migrate`` and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import DBAPIError, OperationalError

from crohooks.errors import DatabaseError, DatabaseUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class Migration:
    """What one run of :func:`migrate` did: the schema's revision before and after it."""

    before: str | None
    after: str | None

    def __str__(self) -> str:
        if self.before == self.after:
            return f"database at revision {self.after}"
        if self.before is None:
            return f"database created at revision {self.after}"
        return f"database migrated from revision {self.before} to {self.after}"


def sync_url(url: str) -> str:
    """The operator's URL as SQLAlchemy's for Alembic (PostgreSQL through psycopg 3)."""
    for prefix in ("postgresql+psycopg:", "postgresql:", "postgres:"):
        if url.startswith(prefix):
            return "postgresql+psycopg:" + url.removeprefix(prefix)
    return url


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def migrate(database_url: str) -> Migration:
    """Upgrade to the newest revision; Alembic's own log lines are left to the caller's
    logging configuration (crohooks' keeps them below INFO)."""
    try:
        before = current_revision(database_url)
        command.upgrade(alembic_config(database_url), "head")
        return Migration(before=before, after=current_revision(database_url))
    except OperationalError as error:
        raise DatabaseUnavailable(_reason(error)) from error
    except DBAPIError as error:
        raise DatabaseError(_reason(error)) from error


def current_revision(database_url: str) -> str | None:
    """The schema's revision, ``None`` for a database Alembic has not touched."""
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _reason(error: DBAPIError) -> str:
    lines = str(error.orig or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
