"""The Alembic migrations build exactly ``store.schema`` and can run again safely."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from crohooks.store.migrate import alembic_config, migrate, sync_url
from crohooks.store.schema import metadata, tenants
from tests.conftest import fresh_postgres_database


def _engine(url: str) -> Engine:
    return create_engine(sync_url(url), poolclass=NullPool)


def schema_differences(url: str) -> list[object]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            differences: list[object] = compare_metadata(context, metadata)
            return differences
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision(url: str) -> str:
    heads = ScriptDirectory.from_config(alembic_config(url)).get_heads()
    assert len(heads) == 1, f"the migrations branch: {heads}"
    return heads[0]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that has never been migrated; a PostgreSQL one is created and dropped here."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with fresh_postgres_database("crohooks_migrations") as url:
        yield url


def test_migrated_database_matches_the_schema_module(database_url: str) -> None:
    assert schema_differences(database_url) == []
    assert current_revision(database_url) == head_revision(database_url)


def test_migrating_again_keeps_schema_and_rows(database_url: str) -> None:
    engine = _engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                tenants.insert().values(
                    id=34, name="Demo Courier", code="DEMO", created_on=datetime.now(UTC)
                )
            )
        migrate(database_url)
        migrate(database_url)
        with engine.connect() as conn:
            names = conn.execute(select(tenants.c.name)).scalars().all()
    finally:
        engine.dispose()
    assert names == ["Demo Courier"]
    assert schema_differences(database_url) == []
    assert current_revision(database_url) == head_revision(database_url)


def test_empty_database_upgrades_downgrades_and_upgrades_again(empty_database_url: str) -> None:
    url = empty_database_url
    migrate(url)
    assert schema_differences(url) == []

    command.downgrade(alembic_config(url), "base")
    engine = _engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    assert current_revision(url) is None

    migrate(url)
    assert schema_differences(url) == []
    assert current_revision(url) == head_revision(url)


@pytest.mark.postgres
def test_rate_limit_counters_are_unlogged_on_postgresql(postgres_database: str) -> None:
    """A counter bump per API request must not wait for a WAL flush (migration 0003)."""
    engine = _engine(postgres_database)
    try:
        with engine.connect() as conn:
            persistence = conn.exec_driver_sql(
                "SELECT relpersistence FROM pg_class WHERE relname = 'rate_limits'"
            ).scalar_one()
    finally:
        engine.dispose()
    assert persistence == "u"


def test_migrate_reports_the_revisions_before_and_after(empty_database_url: str) -> None:
    url = empty_database_url
    head = head_revision(url)

    created = migrate(url)
    assert (created.before, created.after) == (None, head)
    assert str(created) == f"database created at revision {head}"

    again = migrate(url)
    assert (again.before, again.after) == (head, head)
    assert str(again) == f"database at revision {head}"

    command.downgrade(alembic_config(url), "0002")
    upgraded = migrate(url)
    assert (upgraded.before, upgraded.after) == ("0002", head)
    assert str(upgraded) == f"database migrated from revision 0002 to {head}"
