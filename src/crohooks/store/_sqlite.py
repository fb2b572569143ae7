"""SQLite through ``sqlite3``, on the event loop's own thread.

aiosqlite hands every call to a thread of its own and back, two thread wake-ups a call
at 0.5 to 1 ms each on a busy two-core machine, while the call itself takes microseconds
(a one-row read in WAL mode: ~20 µs for the whole transaction). So statements run right
where the coroutine is. What makes that safe: WAL mode, where readers never wait for the
writer and commits don't fsync (``synchronous=NORMAL``); the writers of one process queue
on an asyncio lock; and a wait for another *process*'s write lock is a retried
``BEGIN IMMEDIATE`` with asynchronous sleeps, never SQLite's busy handler
(``busy_timeout`` is kept at 20 ms).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from crohooks.errors import DatabaseError, DatabaseUnavailable, DuplicateKey
from crohooks.store.connector import (
    DatabaseLimits,
    Dialect,
    Health,
    Params,
    Row,
    Statement,
    wait_then_clear,
)

WRITE_LOCK_WAIT_SECONDS = 10.0
"""How long a writer waits for another process's write lock before giving up."""

BUSY_TIMEOUT_MS = 20
"""How long one statement may block the event loop waiting for another process's lock."""

KEEP_CONNECTIONS = 8
"""Connections kept open for transactions; more are opened (never waited for) when
coroutines hold more at once."""

_PRAGMAS = (
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def _datetime_of(value: bytes) -> datetime:
    return datetime.fromisoformat(value.decode()).replace(tzinfo=UTC)


# Columns declared DATETIME (naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``: the schema's
# UTCDateTime) and BOOLEAN come back as aware datetimes and bools.
sqlite3.register_converter("DATETIME", _datetime_of)
sqlite3.register_converter("BOOLEAN", lambda value: value not in (b"0", b""))


def _text_of(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("crohooks stores timezone-aware datetimes only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _bound(params: Params) -> Mapping[str, Any]:
    if not params:
        return {}
    if not any(isinstance(value, datetime) for value in params.values()):
        return params
    return {
        key: _text_of(value) if isinstance(value, datetime) else value
        for key, value in params.items()
    }


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


def sqlite_path(url: str) -> str:
    """The file (or ``:memory:``) of a ``sqlite:///path`` URL."""
    _, _, rest = url.partition(":///")
    path = unquote(rest.split("?", 1)[0])
    return path or ":memory:"


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "database is locked" in text or "database is busy" in text


class _Wakeups:
    """Waiters for announced work, per database file, across this process's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def add(self, path: str, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters.setdefault(path, set()).add((loop, event))

    def remove(self, path: str, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._waiters.get(path, set()).discard((loop, event))

    def announce(self, path: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(path, ()))
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)


_WAKEUPS = _Wakeups()


class SQLiteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, url: str, limits: DatabaseLimits) -> None:
        self.limits = limits
        self.path = sqlite_path(url)
        self._memory = self.path == ":memory:" or "mode=memory" in url
        self._uri = "uri=true" in url.lower()
        self._health = Health()
        self._write_queue = asyncio.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._reader: sqlite3.Connection | None = None
        self._shared: sqlite3.Connection | None = None  # the one connection of :memory:
        self._work = asyncio.Event()
        self._listening: asyncio.AbstractEventLoop | None = None

    # -- connections ------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if self._memory:
            if self._shared is None:
                self._shared = self._new_connection()
            return self._shared
        return self._new_connection()

    def _new_connection(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            uri=self._uri,
            isolation_level=None,
            check_same_thread=False,
            detect_types=sqlite3.PARSE_DECLTYPES,
        )
        connection.row_factory = _dict_row
        for pragma in _PRAGMAS:
            connection.execute(pragma)
        # Switching to WAL takes a lock even when the file is in WAL mode already, so a
        # new connection would fail while another process writes: switch only if needed.
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone().values()
        if str(mode).lower() != "wal" and not self._memory:
            connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def _checkout(self) -> sqlite3.Connection:
        return self._idle.pop() if self._idle else self._open()

    def _give_back(self, connection: sqlite3.Connection) -> None:
        if self._memory:
            return
        if len(self._idle) < KEEP_CONNECTIONS:
            self._idle.append(connection)
        else:
            connection.close()

    # -- transactions -----------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Transaction]:
        connection = self._checkout()
        connection.execute("BEGIN")
        async with self._committed(connection) as transaction:
            yield transaction

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Transaction]:
        async with self._write_queue:
            connection = await self._begin_immediate()
            async with self._committed(connection) as transaction:
                yield transaction
        if transaction.announced:
            _WAKEUPS.announce(self.path)

    @asynccontextmanager
    async def _committed(self, connection: sqlite3.Connection) -> AsyncIterator[_Transaction]:
        """The begun transaction on ``connection``, committed if its block ends normally,
        rolled back otherwise; the connection goes back to the pool either way."""
        try:
            transaction = _Transaction(connection)
            try:
                yield transaction
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        finally:
            self._give_back(connection)

    async def _begin_immediate(self) -> sqlite3.Connection:
        """A connection holding the write lock, waited for without blocking the loop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_LOCK_WAIT_SECONDS
        delay = 0.001
        while True:
            connection = self._checkout()
            try:
                connection.execute("BEGIN IMMEDIATE")
                self._health.answered()
                return connection
            except sqlite3.OperationalError as error:
                self._give_back(connection)
                if not _is_busy(error):
                    raise
                if loop.time() + delay > deadline:
                    held = f"{WRITE_LOCK_WAIT_SECONDS:g} s"
                    raise self._health.lost(
                        f"another process held SQLite's write lock for {held}"
                    ) from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]:
        """On one kept-open connection in autocommit: nothing can await between its
        statement and its rows, and no snapshot outlives a statement."""
        if self._reader is None:
            self._reader = self._open()
        try:
            rows: list[Row] = self._reader.execute(statement.sqlite, _bound(params)).fetchall()
        except sqlite3.DatabaseError as error:
            raise _translated(error) from error
        return rows

    async def write_alone(self, statement: Statement, params: Params = None) -> list[Row]:
        async with self.write() as transaction:
            return await transaction.fetch(statement, params)

    async def wait_for_work(self, seconds: float) -> None:
        if self._listening is None:
            # Registered once: work announced between two waits is not lost.
            self._listening = asyncio.get_running_loop()
            _WAKEUPS.add(self.path, self._listening, self._work)
        await wait_then_clear(self._work, seconds)

    async def check(self, *, within: float) -> None:
        await self.fetch(_SELECT_ONE)

    async def dispose(self) -> None:
        if self._listening is not None:
            _WAKEUPS.remove(self.path, self._listening, self._work)
            self._listening = None
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        for kept in (self._reader, self._shared):
            if kept is not None:
                kept.close()
        self._reader = self._shared = None


_SELECT_ONE = Statement.shared("select_one", "SELECT 1")


class _Transaction:
    __slots__ = ("_connection", "announced")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.announced = False

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]:
        try:
            rows: list[Row] = self._connection.execute(statement.sqlite, _bound(params)).fetchall()
        except sqlite3.DatabaseError as error:
            raise _translated(error) from error
        return rows

    async def execute(self, statement: Statement, params: Params = None) -> int:
        try:
            return self._connection.execute(statement.sqlite, _bound(params)).rowcount
        except sqlite3.DatabaseError as error:
            raise _translated(error) from error

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        try:
            self._connection.executemany(statement.sqlite, [_bound(row) for row in rows])
        except sqlite3.DatabaseError as error:
            raise _translated(error) from error

    def announce_work(self) -> None:
        self.announced = True


def _translated(error: sqlite3.DatabaseError) -> Exception:
    """sqlite3's errors as crohooks' (a busy database is handled at BEGIN IMMEDIATE)."""
    text = str(error)
    if isinstance(error, sqlite3.IntegrityError) and "UNIQUE constraint failed" in text:
        return DuplicateKey(text.removeprefix("UNIQUE constraint failed: "))
    if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
        return DatabaseUnavailable(f"the database is unavailable: {text}")
    return DatabaseError(text)
