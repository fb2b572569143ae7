"""SQLite on the event loop's own thread, behind SQLAlchemy's aiosqlite dialect.

aiosqlite runs every call — BEGIN, each statement, each fetch, COMMIT — on a thread of its
own and hands the result back to the event loop: two thread wake-ups per call, about
0.5 to 1 ms each on a busy two-core machine, while the call itself takes a few microseconds
(a primary-key read in WAL mode: ~20 µs for the whole transaction). A request that reads
one row paid ~3 ms in hand-overs.

So crohooks gives SQLAlchemy's aiosqlite dialect (through ``create_async_engine``'s
documented ``async_creator``) a connection with aiosqlite's interface whose coroutines run
the ``sqlite3`` call at once, on the caller's thread. SQLAlchemy, its pool and its
asyncio API are unchanged; only the hand-over is gone.

What makes this safe to run on the event loop:

- WAL mode: readers never wait for the writer, and commits don't ``fsync``
  (``synchronous=NORMAL``).
- The writers of one process already queue on an asyncio lock (``Database.write``).
- The only waits left are for another *process* holding the write lock (the CLI, a
  migration). ``busy_timeout`` is kept short (``BUSY_TIMEOUT_MS``) so the loop is never
  blocked for long; ``Database.write`` retries ``BEGIN IMMEDIATE`` with asynchronous sleeps
  until its own, longer deadline.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.engine import make_url

BUSY_TIMEOUT_MS = 20
"""How long one statement may block the event loop waiting for another process's lock."""

PRAGMAS = (
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def is_busy(error: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY), however SQLAlchemy wrapped it."""
    original = getattr(error, "orig", error)
    return isinstance(original, sqlite3.OperationalError) and (
        "database is locked" in str(original) or "database is busy" in str(original)
    )


class InlineCursor:
    """aiosqlite's ``Cursor`` interface over a ``sqlite3.Cursor``, without a thread."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """aiosqlite's ``Connection`` interface over a ``sqlite3.Connection``, without a thread.

    ``_connection`` mirrors aiosqlite's attribute of that name: SQLAlchemy's adapter reads
    it to tell an open connection from a closed one.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection: sqlite3.Connection | None = connection

    def _live(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("Connection closed")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._live().isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._live().cursor())

    async def execute(self, sql: str, parameters: Any = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._live().commit()

    async def rollback(self) -> None:
        self._live().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._live().create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def is_memory(url: str) -> bool:
    return make_url(url).database in (None, "", ":memory:")


def _connect(url: str) -> Callable[[], sqlite3.Connection]:
    parsed = make_url(url)
    database = parsed.database or ":memory:"
    uri = str(parsed.query.get("uri", "")).lower() in ("1", "true")

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(
            database, uri=uri, isolation_level=None, check_same_thread=False
        )
        for pragma in PRAGMAS:
            connection.execute(pragma)
        # Switching to WAL takes a lock even when the file is in WAL mode already, so a
        # new connection would fail while another process writes: switch only if needed.
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            connection.execute("PRAGMA journal_mode=WAL")
        return connection

    return connect


def inline_creator(url: str) -> Callable[[], Awaitable[InlineConnection]]:
    """An ``async_creator`` for ``create_async_engine``: connections to the URL's database,
    in autocommit mode (crohooks emits BEGIN itself), with crohooks' pragmas applied."""
    connect = _connect(url)

    async def create() -> InlineConnection:
        return InlineConnection(connect())

    return create


def sync_creator(url: str) -> Callable[[], sqlite3.Connection]:
    """The same connections for a synchronous engine (``Database.fetch`` on SQLite)."""
    return _connect(url)
