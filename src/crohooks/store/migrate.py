"""Create or upgrade the schema with Alembic, from code (``crohooks migrate`` and tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import DBAPIError, OperationalError

from crohooks.errors import DatabaseError, DatabaseUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


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


def migrate(database_url: str) -> None:
    try:
        command.upgrade(alembic_config(database_url), "head")
    except OperationalError as error:
        raise DatabaseUnavailable(_reason(error)) from error
    except DBAPIError as error:
        raise DatabaseError(_reason(error)) from error


def _reason(error: DBAPIError) -> str:
    lines = str(error.orig or error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
