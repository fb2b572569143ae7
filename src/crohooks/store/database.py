"""The engine, its per-dialect set-up, and the two kinds of transaction crohooks uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry


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
    (1 ms, 2 ms, 5 ms, ... 100 ms) where a queue hands the lock over at once. Other
    processes still meet ``busy_timeout``.
    """

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Every connection is used through read() or write(), whose transaction always ends
        # in COMMIT or ROLLBACK, so the pool's own rollback on check-in is redundant; it
        # costs a round trip (on SQLite, a hop to the driver's thread) per transaction.
        kwargs: dict[str, Any] = {"echo": echo, "pool_reset_on_return": None}
        if not self.is_sqlite:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._writer = self.engine.execution_options(crohooks_write=True)
        self._write_queue = asyncio.Lock() if self.is_sqlite else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        if self._write_queue is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_queue, self._writer.begin() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from the driver: BEGIN is emitted in _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("crohooks_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
