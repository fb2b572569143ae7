"""The engine, its per-dialect set-up, and the two kinds of transaction crohooks uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Executable, Row, create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

from crohooks.store.inline_sqlite import inline_creator, is_busy, is_memory, sync_creator

SQLITE_POOL_SIZE = 64

WRITE_LOCK_WAIT_SECONDS = 10.0
"""How long a SQLite writer waits for another process's write lock before giving up."""


def async_url(url: str) -> str:
    """Map the operator's URL onto the async driver crohooks uses for it."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    for prefix in ("postgresql+psycopg:", "postgresql:", "postgres:"):
        if url.startswith(prefix):
            return "postgresql+psycopg:" + url.removeprefix(prefix)
    return url


def sync_url(url: str) -> str:
    """The same database through a synchronous driver, for Alembic."""
    if url.startswith("sqlite"):
        return "sqlite:" + url.split(":", 1)[1]
    return async_url(url)


class Database:
    """One engine per process.

    ``read()`` opens a plain transaction; ``write()`` one that takes SQLite's write lock at
    BEGIN (``BEGIN IMMEDIATE``), so two writers never deadlock upgrading a shared lock and
    ``busy_timeout`` applies. On PostgreSQL both are ordinary READ COMMITTED transactions.

    With SQLite the writers of one process also queue on an asyncio lock before BEGIN:
    SQLite admits one writer at a time anyway, and its busy handler waits by sleeping
    (1 ms, 2 ms, 5 ms, ... 100 ms) where a queue hands the lock over at once. SQLite
    statements run on the event loop's thread (``inline_sqlite``), so a writer waiting for
    another process's lock retries ``BEGIN IMMEDIATE`` with asynchronous sleeps for up to
    ``WRITE_LOCK_WAIT_SECONDS`` instead of blocking the loop in SQLite's busy handler.
    """

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Every connection is used through read() or write(), whose transaction always ends
        # in COMMIT or ROLLBACK, so the pool's own rollback on check-in is redundant; it
        # costs a round trip (on SQLite, a hop to the driver's thread) per transaction.
        kwargs: dict[str, Any] = {"echo": echo, "pool_reset_on_return": None}
        if self.is_sqlite:
            kwargs["async_creator"] = inline_creator(url)
            if not is_memory(url):
                # Connections are returned to the pool a loop iteration after their
                # transaction ends, so under load more are out than one would think; a pool
                # too small closes and reopens one per request (with its pragmas).
                kwargs.update(pool_size=SQLITE_POOL_SIZE, max_overflow=-1)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        else:
            _ping_idle_connections(self.engine)
        self._writer = self.engine.execution_options(crohooks_write=True)
        # One statement needs no transaction around it: in autocommit it is its own, with
        # its own snapshot. On PostgreSQL that saves the BEGIN and COMMIT round trips; on
        # SQLite (already in autocommit underneath) _on_begin simply emits no BEGIN.
        self._lone = self.engine.execution_options(
            **({"crohooks_lone": True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )
        self._write_queue = asyncio.Lock() if self.is_sqlite else None
        # SQLite's lone reads skip SQLAlchemy's asyncio layer altogether (a greenlet switch
        # per call, a task per check-in): a synchronous engine over the same kind of
        # connection, used where no await can come between check-out and check-in.
        # Nothing awaits between check-out and check-in there, so one connection serves
        # every such read of the process; the driver is in autocommit (no snapshot is held
        # between statements), SQLAlchemy's BEGIN for pysqlite emits nothing.
        self._reader: Engine | None = None
        self._reader_conn: Connection | None = None
        if self.is_sqlite and not is_memory(url):
            self._reader = create_engine(
                "sqlite://",
                creator=sync_creator(url),
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=-1,
                pool_reset_on_return=None,
                echo=echo,
            )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    async def fetch(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run one read statement outside an explicit transaction; return its rows.

        A single statement is its own transaction, with its own snapshot: no BEGIN/COMMIT
        round trips on PostgreSQL, and on SQLite no trip through the asyncio adapter.
        """
        if self._reader is not None:
            if self._reader_conn is None or self._reader_conn.closed:
                self._reader_conn = self._reader.connect()
            return self._reader_conn.execute(statement, parameters).all()
        async with self._lone.begin() as conn:
            return (await conn.execute(statement, parameters)).all()

    async def write_alone(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run one writing statement as its own transaction; return its rows (RETURNING).

        On PostgreSQL in autocommit: one round trip instead of three. On SQLite an ordinary
        ``write()`` transaction, so it queues with the process's other writers.
        """
        if self._write_queue is not None:
            async with self.write() as conn:
                return (await conn.execute(statement, parameters)).all()
        async with self._lone.begin() as conn:
            return (await conn.execute(statement, parameters)).all()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_queue is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_queue:
            conn, transaction = await self._begin_immediate()
            try:
                yield conn
            except BaseException:
                await transaction.rollback()
                raise
            else:
                await transaction.commit()
            finally:
                await conn.close()

    async def _begin_immediate(self) -> tuple[AsyncConnection, AsyncTransaction]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_LOCK_WAIT_SECONDS
        delay = 0.001
        while True:
            conn = await self._writer.connect()
            try:
                return conn, await conn.begin()
            except OperationalError as error:
                await conn.close()
                if not is_busy(error) or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def dispose(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None
        if self._reader is not None:
            self._reader.dispose()
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    # Connections come from inline_creator in autocommit mode with the pragmas applied;
    # BEGIN is emitted here, so the driver never opens a transaction on its own.
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("crohooks_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif not options.get("crohooks_lone"):
            conn.exec_driver_sql("BEGIN")


IDLE_PING_SECONDS = 5.0
"""A pooled PostgreSQL connection idle this long is pinged before use."""


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """``pool_pre_ping`` without its round trip on every check-out.

    A connection that came back to the pool moments ago is alive (a dead one is invalidated
    when its statement fails, and SQLAlchemy then recycles the whole pool); one that sat
    idle long enough for the server to have restarted or a firewall to have dropped it is
    pinged first and replaced if the ping fails, as ``pool_pre_ping`` would.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as error:
            raise DisconnectionError("an idle pooled connection failed its ping") from error
