"""SQLite runs on the event loop's thread: waiting for another writer must not freeze it."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateTable

from crohooks.clock import utc_now
from crohooks.errors import DatabaseUnavailable
from crohooks.store import database
from crohooks.store.database import Database, DatabaseLimits, execute_many
from crohooks.store.migrate import migrate
from crohooks.store.schema import api_version_pins
from tests.conftest import fresh_postgres_database


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "crohooks.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


async def test_a_writer_waits_for_another_connections_lock_without_blocking_the_loop(
    sqlite_url: str,
) -> None:
    db = Database(sqlite_url)
    assert await db.fetch(select(api_version_pins)) == []  # the file is in WAL mode now
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # what the CLI or a migration holds while it writes
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def write() -> None:
        async with db.write() as conn:
            await conn.execute(
                insert(api_version_pins).values(
                    client="waiting", version="2021/04/07", updated_at=utc_now()
                )
            )

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(write())
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
    rows = await db.fetch(select(api_version_pins.c.client))
    assert [row.client for row in rows] == ["waiting"]
    await db.dispose()


async def test_a_write_lock_held_too_long_elsewhere_is_unavailability(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API answers it with 503 and Retry-After, not with a 500 and a traceback."""
    monkeypatch.setattr(database, "WRITE_LOCK_WAIT_SECONDS", 0.2)
    db = Database(sqlite_url)
    assert await db.fetch(select(api_version_pins)) == []
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseUnavailable, match="write lock"):
            await db.write_alone(
                insert(api_version_pins).values(client="c", version="v", updated_at=utc_now())
            )
    finally:
        other.close()
        await db.dispose()


async def test_a_lone_read_sees_every_committed_write(sqlite_url: str) -> None:
    """The read connection is kept open between reads; it must hold no old snapshot."""
    db = Database(sqlite_url)
    query = select(api_version_pins.c.client).order_by(api_version_pins.c.client)
    assert await db.fetch(query) == []
    for client in ("a", "b"):
        async with db.write() as conn:
            await conn.execute(
                insert(api_version_pins).values(
                    client=client, version="2021/04/07", updated_at=utc_now()
                )
            )
        assert [row.client for row in await db.fetch(query)][-1] == client
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("DELETE FROM api_version_pins WHERE client = 'a'")
    other.close()
    assert [row.client for row in await db.fetch(query)] == ["b"]
    await db.dispose()


async def test_sqlite_batches_store_what_sqlalchemy_stores(sqlite_url: str) -> None:
    """Rows written through the driver's executemany are the text SQLAlchemy would write,
    and its result types read them back as the same UTC datetimes."""
    db = Database(sqlite_url)
    moment = datetime(2026, 3, 1, 12, 30, 5, 120, tzinfo=UTC)
    elsewhere = moment.astimezone(timezone(timedelta(hours=-5)))
    try:
        async with db.write() as conn:
            await conn.execute(
                insert(api_version_pins),
                [{"client": "orm", "version": "v", "updated_at": moment}],
            )
            written = await execute_many(
                conn,
                insert(api_version_pins),
                [
                    {"client": "batch", "version": "v", "updated_at": moment},
                    {"client": "batch-elsewhere", "version": "v", "updated_at": elsewhere},
                ],
            )
            touched = await execute_many(
                conn,
                update(api_version_pins)
                .where(api_version_pins.c.client == bindparam("b_client"))
                .values(version=literal("2021/04/07") + bindparam("b_suffix")),
                [{"b_client": "batch", "b_suffix": "-a"}, {"b_client": "missing", "b_suffix": ""}],
            )
        assert (written, touched) == (2, 1)
        raw = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        stored = dict(raw.execute("SELECT client, updated_at FROM api_version_pins").fetchall())
        raw.close()
        assert stored["batch"] == stored["batch-elsewhere"] == stored["orm"]
        rows = await db.fetch(select(api_version_pins).order_by(api_version_pins.c.client))
        assert [(row.client, row.version, row.updated_at) for row in rows] == [
            ("batch", "2021/04/07-a", moment),
            ("batch-elsewhere", "v", moment),
            ("orm", "v", moment),
        ]
        naive = {"client": "naive", "version": "v", "updated_at": moment.replace(tzinfo=None)}
        async with db.write() as conn:
            with pytest.raises(ValueError, match="timezone-aware"):
                await execute_many(conn, insert(api_version_pins), [naive])
    finally:
        await db.dispose()


async def test_values_sqlalchemy_computes_at_execution_are_not_skipped(sqlite_url: str) -> None:
    """A Python-side column default is filled by SQLAlchemy, so such a statement takes
    SQLAlchemy's path: the direct one would bind nothing in its place."""
    table = Table(
        "with_default",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("label", String, nullable=False, default="unnamed"),
    )
    db = Database(sqlite_url)
    try:
        async with db.write() as conn:
            await conn.execute(CreateTable(table))
            assert await execute_many(conn, table.insert(), [{"id": 1}, {"id": 2}]) == 2
        rows = await db.fetch(select(table.c.label).order_by(table.c.id))
        assert [row.label for row in rows] == ["unnamed", "unnamed"]
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_pooled_connection_killed_while_idle_is_replaced_before_use() -> None:
    """No ping per check-out, but a connection that sat idle is checked before it is used."""
    with fresh_postgres_database("crohooks_idle") as url:
        await _survives_a_killed_connection(url)


async def _survives_a_killed_connection(postgres_database: str) -> None:
    db = Database(postgres_database, limits=DatabaseLimits(idle_check=0.2))
    query = select(literal(1).label("one"))
    try:
        assert [row.one for row in await db.fetch(query)] == [1]
        _terminate_other_backends(postgres_database)
        await asyncio.sleep(0.3)
        assert [row.one for row in await db.fetch(query)] == [1]
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_connection_killed_under_a_statement_fails_that_statement_only() -> None:
    """Statements run by psycopg directly still hand broken connections back as broken."""
    with fresh_postgres_database("crohooks_broken") as url:
        db = Database(url, limits=DatabaseLimits(idle_check=1000.0), pool_size=1)  # no ping
        query = select(literal(1).label("one"))
        try:
            assert [row.one for row in await db.fetch(query)] == [1]
            _terminate_other_backends(url)
            with pytest.raises(DatabaseUnavailable):
                await db.fetch(query)
            assert [row.one for row in await db.fetch(query)] == [1]
        finally:
            await db.dispose()


async def test_direct_statements_convert_like_sqlalchemy(database_url: str) -> None:
    """Binds and results of the direct driver path match SQLAlchemy's (UTC datetimes)."""
    db = Database(database_url)
    moment = utc_now()
    try:
        async with db.write() as conn:
            await conn.execute(
                insert(api_version_pins).values(client="c", version="2021/04/07", updated_at=moment)
            )
        query = select(api_version_pins).where(api_version_pins.c.updated_at == bindparam("at"))
        direct = await db.fetch(query, {"at": moment})
        async with db.read() as conn:
            through_sqlalchemy = (await conn.execute(query, {"at": moment})).all()
        assert [tuple(row) for row in direct] == [tuple(row) for row in through_sqlalchemy]
        assert direct[0].updated_at == moment
        assert direct[0].updated_at.tzinfo is not None
        # A statement whose SQL depends on its values (an IN list) still runs.
        listed = select(api_version_pins.c.client).where(
            api_version_pins.c.client.in_(bindparam("clients", expanding=True))
        )
        assert [row.client for row in await db.fetch(listed, {"clients": ["a", "c"]})] == ["c"]
    finally:
        await db.dispose()


@pytest.mark.postgres
async def test_a_pooled_connection_goes_back_out_of_autocommit() -> None:
    """Lone statements switch their pooled connection to autocommit; a transaction that
    gets the same connection afterwards still rolls back, also after a failed statement."""
    pin = insert(api_version_pins).values(client="c", version="v", updated_at=utc_now())

    async def abandoned_change(db: Database) -> None:
        async with db.write() as conn:
            await conn.execute(update(api_version_pins).values(version="changed"))
            raise RuntimeError("abandon the transaction")

    with fresh_postgres_database("crohooks_autocommit") as url:
        migrate(url)
        db = Database(url, pool_size=1)
        try:
            await db.write_alone(pin)
            with pytest.raises(psycopg.errors.UniqueViolation):
                await db.write_alone(pin)  # fails, in autocommit, on the one connection
            with pytest.raises(RuntimeError):
                await abandoned_change(db)
            rows = await db.fetch(select(api_version_pins.c.version))
            assert [row.version for row in rows] == ["v"]
        finally:
            await db.dispose()


def _terminate_other_backends(url: str) -> None:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None
    assert killed[0] >= 1
