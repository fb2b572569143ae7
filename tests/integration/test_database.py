"""Each connector's own rules: SQLite's writer lock and reader, PostgreSQL's pool."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, insert, select
from sqlalchemy.pool import NullPool

from crohooks.errors import DatabaseUnavailable, DuplicateKey
from crohooks.store import _sqlite
from crohooks.store.connect import conninfo_of, open_database
from crohooks.store.connector import DatabaseLimits, Statement
from crohooks.store.migrate import migrate, sync_url
from crohooks.store.schema import api_version_pins
from tests.conftest import fresh_postgres_database

PIN = Statement.shared(
    "pin",
    "INSERT INTO api_version_pins (client, version, updated_at) VALUES (:client, 'v', :at)",
)
CLIENTS = Statement.shared("clients", "SELECT client FROM api_version_pins ORDER BY client")
ONE = Statement.shared("one", "SELECT 1 AS one")


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "crohooks.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_writer_waits_for_another_connections_lock_without_blocking_the_loop(
    sqlite_url: str,
) -> None:
    db = open_database(sqlite_url)
    assert await db.fetch(CLIENTS) == []  # the file is in WAL mode now
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # what the CLI or a migration holds while it writes
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(db.write_alone(PIN, {"client": "waiting", "at": _now()}))
    try:
        await asyncio.sleep(0.4)
        assert not writing.done(), "the write went ahead while another connection held the lock"
        # The loop kept running meanwhile: at 5 ms a tick, 0.4 s is ~80 ticks; a loop
        # blocked in SQLite's busy handler would have managed none.
        assert ticks > 30
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 5)
    finally:
        ticking.cancel()
        other.close()
    assert await db.fetch(CLIENTS) == [{"client": "waiting"}]
    await db.dispose()


async def test_a_write_lock_held_too_long_elsewhere_is_unavailability(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API answers it with 503 and Retry-After, not with a 500 and a traceback."""
    monkeypatch.setattr(_sqlite, "WRITE_LOCK_WAIT_SECONDS", 0.2)
    db = open_database(sqlite_url)
    assert await db.fetch(CLIENTS) == []
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseUnavailable, match="write lock"):
            await db.write_alone(PIN, {"client": "c", "at": _now()})
    finally:
        other.close()
        await db.dispose()


async def test_a_lone_read_sees_every_committed_write(sqlite_url: str) -> None:
    """The read connection is kept open between reads; it must hold no old snapshot."""
    db = open_database(sqlite_url)
    assert await db.fetch(CLIENTS) == []
    for client in ("a", "b"):
        await db.write_alone(PIN, {"client": client, "at": _now()})
        assert (await db.fetch(CLIENTS))[-1] == {"client": client}
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("DELETE FROM api_version_pins WHERE client = 'a'")
    other.close()
    assert await db.fetch(CLIENTS) == [{"client": "b"}]
    await db.dispose()


async def test_sqlite_stores_datetimes_as_sqlalchemy_does(sqlite_url: str) -> None:
    """Rows the connector writes hold the same text as rows SQLAlchemy writes (Alembic,
    tests, old databases), and each reads the other's as the same UTC moment."""
    db = open_database(sqlite_url)
    moment = datetime(2026, 3, 1, 12, 30, 5, 120, tzinfo=UTC)
    elsewhere = moment.astimezone(timezone(timedelta(hours=-5)))
    engine = create_engine(sync_url(sqlite_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(api_version_pins), [{"client": "orm", "version": "v", "updated_at": moment}]
            )
        async with db.write() as conn:
            await conn.execute_many(
                PIN, [{"client": "batch", "at": moment}, {"client": "elsewhere", "at": elsewhere}]
            )
        raw = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        stored = dict(raw.execute("SELECT client, updated_at FROM api_version_pins").fetchall())
        raw.close()
        assert stored["batch"] == stored["elsewhere"] == stored["orm"]
        with engine.connect() as conn:
            read_back = {
                row.client: row.updated_at for row in conn.execute(select(api_version_pins))
            }
        assert set(read_back.values()) == {moment}
        pins = Statement.shared("pins", "SELECT updated_at FROM api_version_pins")
        assert {row["updated_at"] for row in await db.fetch(pins)} == {moment}
    finally:
        engine.dispose()
        await db.dispose()


def _terminate_other_backends(url: str) -> None:
    with psycopg.connect(conninfo_of(url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None
    assert killed[0] >= 1


@pytest.mark.postgres
async def test_a_pooled_connection_killed_while_idle_is_replaced_before_use() -> None:
    """No ping per check-out, but a connection that sat idle is checked before it is used."""
    with fresh_postgres_database("crohooks_idle") as url:
        db = open_database(url, DatabaseLimits(idle_check=0.2))
        try:
            assert await db.fetch(ONE) == [{"one": 1}]
            _terminate_other_backends(url)
            await asyncio.sleep(0.3)
            assert await db.fetch(ONE) == [{"one": 1}]
        finally:
            await db.dispose()


@pytest.mark.postgres
async def test_a_connection_killed_under_a_statement_fails_that_statement_only() -> None:
    with fresh_postgres_database("crohooks_broken") as url:
        db = open_database(url, DatabaseLimits(idle_check=1000.0, pool_size=1))  # no ping
        try:
            assert await db.fetch(ONE) == [{"one": 1}]
            _terminate_other_backends(url)
            with pytest.raises(DatabaseUnavailable):
                await db.fetch(ONE)
            assert await db.fetch(ONE) == [{"one": 1}]
        finally:
            await db.dispose()


@pytest.mark.postgres
async def test_a_transaction_after_failed_statements_still_rolls_back() -> None:
    """One pooled connection serves a lone statement that fails, then a transaction that
    is abandoned: nothing of either is left behind."""
    with fresh_postgres_database("crohooks_rollback") as url:
        migrate(url)
        db = open_database(url, DatabaseLimits(pool_size=1))
        change = Statement.shared("change", "UPDATE api_version_pins SET version = 'changed'")

        async def abandoned_change() -> None:
            async with db.write() as conn:
                await conn.execute(change)
                raise RuntimeError("abandon the transaction")

        try:
            await db.write_alone(PIN, {"client": "c", "at": _now()})
            with pytest.raises(DuplicateKey):
                await db.write_alone(PIN, {"client": "c", "at": _now()})
            with pytest.raises(RuntimeError):
                await abandoned_change()
            versions = Statement.shared("versions", "SELECT version FROM api_version_pins")
            assert await db.fetch(versions) == [{"version": "v"}]
        finally:
            await db.dispose()
