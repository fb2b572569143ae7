"""The two connectors behave alike: types, transactions, errors, wake-ups and outages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from crohooks.errors import DatabaseUnavailable, DuplicateKey
from crohooks.store.connect import open_database, redacted
from crohooks.store.connector import Database, DatabaseLimits, Statement
from tests.conftest import fresh_postgres_database
from tests.support.dbproxy import database_proxy

PIN = Statement.shared(
    "pin",
    "INSERT INTO api_version_pins (client, version, updated_at)"
    " VALUES (:client, :version, :at) RETURNING client, updated_at",
)
PIN_PLAIN = Statement.shared(
    "pin_plain",
    "INSERT INTO api_version_pins (client, version, updated_at) VALUES (:client, :version, :at)",
)
PINS = Statement.shared(
    "pins", "SELECT client, version, updated_at FROM api_version_pins ORDER BY client"
)
PINS_SINCE = Statement.shared(
    "pins_since", "SELECT client FROM api_version_pins WHERE updated_at >= :since"
)
TENANT = Statement.shared(
    "tenant",
    "INSERT INTO tenants (id, name, code, is_active, created_on)"
    " VALUES (:id, 'T', 'T', :active, :at)",
)
TENANTS = Statement.shared("tenants", "SELECT id, is_active, created_on FROM tenants")


def test_shared_statements_use_each_drivers_parameter_style() -> None:
    statement = Statement.shared("s", "SELECT :a, x::text, '50%' FROM t WHERE y = :b_2")
    assert statement.sqlite == "SELECT :a, x::text, '50%' FROM t WHERE y = :b_2"
    assert statement.postgresql == "SELECT %(a)s, x::text, '50%%' FROM t WHERE y = %(b_2)s"


async def test_datetimes_go_in_aware_and_come_back_aware_utc(db: Database) -> None:
    elsewhere = datetime(2026, 3, 1, 7, 30, 5, 120, tzinfo=timezone(timedelta(hours=-5)))
    returned = await db.write_alone(PIN, {"client": "c", "version": "v", "at": elsewhere})
    assert returned == [{"client": "c", "updated_at": elsewhere}]
    assert returned[0]["updated_at"].tzinfo is UTC
    (row,) = await db.fetch(PINS)
    assert row["updated_at"] == elsewhere
    assert row["updated_at"].tzinfo is UTC
    since = await db.fetch(PINS_SINCE, {"since": elsewhere - timedelta(microseconds=1)})
    later = await db.fetch(PINS_SINCE, {"since": elsewhere + timedelta(microseconds=1)})
    assert (len(since), len(later)) == (1, 0)
    with pytest.raises(ValueError, match="aware"):
        await db.write_alone(PIN, {"client": "n", "version": "v", "at": datetime(2026, 1, 1)})


async def test_booleans_come_back_as_booleans(db: Database) -> None:
    now = datetime.now(UTC)
    async with db.write() as conn:
        await conn.execute(TENANT, {"id": 1, "active": True, "at": now})
        await conn.execute(TENANT, {"id": 2, "active": False, "at": now})
    rows = sorted(await db.fetch(TENANTS), key=lambda row: row["id"])
    assert [row["is_active"] for row in rows] == [True, False]


async def test_a_transaction_commits_or_rolls_back_whole(db: Database) -> None:
    now = datetime.now(UTC)
    rows = [{"client": f"c{i}", "version": "v", "at": now} for i in range(3)]

    async def abandoned() -> None:
        async with db.write() as conn:
            await conn.execute_many(PIN_PLAIN, rows)
            assert len(await conn.fetch(PINS)) == 3
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError):
        await abandoned()
    assert await db.fetch(PINS) == []
    async with db.write() as conn:
        await conn.execute_many(PIN_PLAIN, rows)
    assert [row["client"] for row in await db.fetch(PINS)] == ["c0", "c1", "c2"]


async def test_a_unique_violation_is_a_duplicate_key_and_loses_nothing(db: Database) -> None:
    now = datetime.now(UTC)
    await db.write_alone(PIN, {"client": "c", "version": "v", "at": now})

    async def twice() -> None:
        async with db.write() as conn:
            await conn.execute(PIN, {"client": "d", "version": "v", "at": now})
            await conn.execute(PIN, {"client": "c", "version": "v", "at": now})

    with pytest.raises(DuplicateKey):
        await twice()
    with pytest.raises(DuplicateKey):
        await db.write_alone(PIN, {"client": "c", "version": "v", "at": now})
    assert [row["client"] for row in await db.fetch(PINS)] == ["c"]


async def test_announced_work_wakes_a_waiter_after_the_commit(database_url: str) -> None:
    """Across two instances on one database: what a worker and an API process are."""
    publisher, worker = open_database(database_url), open_database(database_url)
    try:
        await worker.wait_for_work(0.05)  # starts listening
        started = time.monotonic()
        assert await _woken(worker, within=0.3) is False
        waiting = asyncio.create_task(_woken(worker, within=10))
        await asyncio.sleep(0.2)
        async with publisher.write() as conn:
            await conn.execute(PIN, {"client": "w", "version": "v", "at": datetime.now(UTC)})
            conn.announce_work()
        assert await waiting is True
        assert time.monotonic() - started < 5
    finally:
        await publisher.dispose()
        await worker.dispose()


async def _woken(db: Database, *, within: float) -> bool:
    started = time.monotonic()
    await db.wait_for_work(within)
    return time.monotonic() - started < within * 0.9


@pytest.mark.postgres
async def test_a_healthy_connection_idle_past_the_idle_check_serves_every_path() -> None:
    limits = DatabaseLimits(idle_check=0.05, pool_size=1)
    with fresh_postgres_database("crohooks_connector_idle") as url:
        from crohooks.store.migrate import migrate

        migrate(url)
        db = open_database(url, limits)
        now = datetime.now(UTC)
        try:
            for i in range(3):
                await asyncio.sleep(0.15)
                await db.write_alone(PIN, {"client": f"c{i}", "version": "v", "at": now})
                await asyncio.sleep(0.15)
                assert len(await db.fetch(PINS)) == i + 1
                await asyncio.sleep(0.15)
                async with db.write() as conn:
                    await conn.fetch(PINS)
                await asyncio.sleep(0.15)
                await db.check(within=1)
        finally:
            await db.dispose()


@pytest.mark.postgres
async def test_a_frozen_or_refused_database_is_unavailable_within_the_bound(
    postgres_database: str,
) -> None:
    async with database_proxy(postgres_database) as proxy:
        limits = DatabaseLimits(timeout=0.5, pool_timeout=0.5, connect_timeout=2)
        db = open_database(proxy.url_for(postgres_database), limits)
        try:
            assert await db.fetch(PINS) is not None
            for broken in ("freeze", "refuse"):
                if broken == "freeze":
                    proxy.freeze()
                else:
                    await proxy.refuse()
                for attempt in range(3):
                    started = time.monotonic()
                    with pytest.raises(DatabaseUnavailable):
                        await (_in_transaction(db) if attempt == 1 else db.fetch(PINS))
                    assert time.monotonic() - started < 0.5 + 1.0
                await proxy.restore()
                deadline = time.monotonic() + 15
                while True:
                    try:
                        await db.fetch(PINS)
                        break
                    except DatabaseUnavailable:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.1)
        finally:
            await proxy.restore()
            await db.dispose()


async def _in_transaction(db: Database) -> None:
    async with db.write() as conn:
        await conn.fetch(PINS)


def test_a_url_shown_to_people_hides_its_password() -> None:
    assert redacted("postgresql://crohooks:s3cr%40t@db.internal:5432/hooks") == (
        "postgresql://crohooks:***@db.internal:5432/hooks"
    )
    assert redacted("sqlite:///crohooks.db") == "sqlite:///crohooks.db"
    assert redacted("postgresql://db.internal/hooks") == "postgresql://db.internal/hooks"
