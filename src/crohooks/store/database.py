"""The engine, its per-dialect set-up, and the kinds of transaction crohooks uses."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from sqlalchemy import BindParameter, CursorResult, Executable, Insert, Row, create_engine, event
from sqlalchemy.engine import Compiled, Connection, Dialect, Engine
from sqlalchemy.engine.result import result_tuple
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from crohooks.store.sqlite_connect import is_busy, is_memory, sqlite_creator

WRITE_LOCK_WAIT_SECONDS = 10.0
"""How long a SQLite writer waits for another process's write lock before giving up."""

SQLITE_POOL_SIZE = 8
"""SQLite connections kept open; more are opened (never waited for) when coroutines hold
more at once."""

AnyResult = CursorResult[*tuple[Any, ...]]


class Conn(Protocol):
    """What the repositories use of a connection: SQLAlchemy's ``AsyncConnection`` on
    PostgreSQL, ``SQLiteConnection`` on SQLite."""

    async def execute(self, statement: Executable, parameters: Any = None) -> AnyResult: ...

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> AnyResult: ...


class SQLiteConnection:
    """A synchronous SQLAlchemy connection to SQLite, used from the event loop's thread.

    aiosqlite (SQLAlchemy's asyncio SQLite driver) hands every call to a thread of its own
    and back, two thread wake-ups a call at 0.5 to 1 ms each on a busy two-core machine,
    while the call itself takes microseconds (a one-row read in WAL mode: ~20 µs for the
    whole transaction); the asyncio adapter adds a greenlet switch per call on top. So on
    SQLite crohooks runs SQLAlchemy synchronously, right where the coroutine is. What makes
    that safe: WAL mode, where readers never wait for the writer and commits don't fsync
    (``synchronous=NORMAL``); the writers of one process queue on an asyncio lock; and a
    wait for another *process*'s write lock is a retried ``BEGIN IMMEDIATE`` with
    asynchronous sleeps, never SQLite's busy handler (``busy_timeout`` is kept short).
    """

    __slots__ = ("sync_connection",)

    def __init__(self, sync_connection: Connection) -> None:
        self.sync_connection = sync_connection

    async def execute(self, statement: Executable, parameters: Any = None) -> AnyResult:
        return self.sync_connection.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> AnyResult:
        return self.sync_connection.exec_driver_sql(statement, parameters)

    def execute_many(self, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> int:
        """``statement`` once per row, straight through the driver; the rows it touched.

        SQLAlchemy compiles the statement once and its types still convert every value;
        what is skipped is building an execution context and a parameter dict per row,
        which is most of the cost of a batch of small rows.
        """
        if not rows:
            return 0
        batch = _SQLiteBatch.of(statement, self.sync_connection.dialect, rows[0].keys())
        if batch is None:
            return self.sync_connection.execute(statement, rows).rowcount
        driver: sqlite3.Connection = self.sync_connection.connection.driver_connection  # type: ignore[assignment]
        cursor = driver.executemany(batch.sql, [batch.values(row) for row in rows])
        return cursor.rowcount


async def execute_many(conn: Conn, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> int:
    """Run ``statement`` once per row of ``rows`` in ``conn``'s transaction; the rows touched.

    Every row has the same keys: for an INSERT they name the columns to fill, as with
    ``execute(table.insert(), rows)``; for anything else every bind parameter the statement
    leaves without a value must be among them.
    """
    if not rows:
        return 0
    if isinstance(conn, SQLiteConnection):
        return conn.execute_many(statement, rows)
    return (await conn.execute(statement, rows)).rowcount


def async_url(url: str) -> str:
    """Map the operator's URL onto the async driver crohooks uses for it."""
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
    """One database per process, and the transactions crohooks runs on it.

    ``read()`` opens a plain transaction; ``write()`` one that takes SQLite's write lock at
    BEGIN (``BEGIN IMMEDIATE``), so two writers never deadlock upgrading a shared lock. On
    PostgreSQL both are ordinary READ COMMITTED transactions. ``fetch()`` and
    ``write_alone()`` run one statement as its own transaction.

    With SQLite the writers of one process queue on an asyncio lock before BEGIN: SQLite
    admits one writer at a time anyway, and its busy handler waits by sleeping (1 ms, 2 ms,
    5 ms, ... 100 ms) where a queue hands the lock over at once. See ``SQLiteConnection``
    for why SQLite runs synchronously.
    """

    def __init__(self, url: str, *, pool_size: int = 20, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_queue = asyncio.Lock()  # SQLite's writers of this process
        self._sqlite: Engine | None = None
        self._reader: Connection | None = None
        self._postgres: AsyncEngine | None = None
        if self.is_sqlite:
            memory = is_memory(url)
            # Every connection is used through read() or write(), whose transaction always
            # ends in COMMIT or ROLLBACK, so the pool's own rollback on check-in is
            # redundant. Nothing blocks in this pool: it grows when coroutines hold more
            # connections at once than it keeps.
            pooling: dict[str, Any] = (
                {"poolclass": StaticPool}
                if memory
                else {"poolclass": QueuePool, "pool_size": SQLITE_POOL_SIZE, "max_overflow": -1}
            )
            self._sqlite = create_engine(
                "sqlite://",
                creator=sqlite_creator(url),
                pool_reset_on_return=None,
                echo=echo,
                **pooling,
            )
            _configure_sqlite(self._sqlite)
            self.dialect = "sqlite"
        else:
            # Up to ``pool_size`` connections, each kept once opened: with an overflow on
            # top, every burst past the pool's size opened connections and closed them
            # again on check-in (a new server backend each time), which cost more CPU
            # than the statements they ran.
            self._postgres = create_async_engine(
                async_url(url),
                echo=echo,
                pool_reset_on_return=None,
                pool_size=pool_size,
                max_overflow=0,
            )
            _ping_idle_connections(self._postgres)
            # Derived once: deriving an engine registers event listeners, which costs more
            # than the statement it would run.
            self._autocommit = self._postgres.execution_options(isolation_level="AUTOCOMMIT")
            self.dialect = "postgresql"
        self._prepared: dict[Executable, _Prepared] = {}

    # -- PostgreSQL ---------------------------------------------------------------------

    def _pg(self) -> AsyncEngine:
        assert self._postgres is not None
        return self._postgres

    # -- SQLite -------------------------------------------------------------------------

    @contextmanager
    def _sqlite_transaction(self) -> Iterator[SQLiteConnection]:
        assert self._sqlite is not None
        with self._sqlite.connect() as sync_conn, sync_conn.begin():
            yield SQLiteConnection(sync_conn)

    async def _sqlite_write(self) -> tuple[Connection, Any]:
        """Check out a connection and take the write lock, waiting without blocking."""
        assert self._sqlite is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITE_LOCK_WAIT_SECONDS
        delay = 0.001
        while True:
            sync_conn = self._sqlite.connect().execution_options(crohooks_write=True)
            try:
                return sync_conn, sync_conn.begin()
            except OperationalError as error:
                sync_conn.close()
                if not is_busy(error) or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- the transactions ---------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        if self._sqlite is not None:
            with self._sqlite_transaction() as conn:
                yield conn
            return
        async with self._pg().begin() as pg_conn:
            yield pg_conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        if self._sqlite is None:
            async with self._pg().begin() as pg_conn:
                yield pg_conn
            return
        async with self._write_queue:
            sync_conn, transaction = await self._sqlite_write()
            try:
                with transaction:
                    yield SQLiteConnection(sync_conn)
            finally:
                sync_conn.close()

    async def fetch(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run one read statement outside an explicit transaction; return its rows.

        A single statement is its own transaction, with its own snapshot: on PostgreSQL no
        BEGIN/COMMIT round trips. On SQLite one connection, kept open, serves every such
        read of the process (nothing can await between its check-out and check-in); the
        driver is in autocommit, so no snapshot outlives a statement.
        """
        if self._sqlite is not None:
            if self._reader is None or self._reader.closed:
                self._reader = self._sqlite.connect().execution_options(crohooks_lone=True)
            prepared = self._prepare(statement, self._sqlite.dialect)
            if prepared is None:
                return self._reader.execute(statement, parameters).all()
            driver: sqlite3.Connection = self._reader.connection.driver_connection  # type: ignore[assignment]
            return prepared.rows(driver.execute(prepared.sql, prepared.bind(parameters)).fetchall())
        return await self._postgres_alone(statement, parameters)

    async def write_alone(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run one writing statement as its own transaction; return its rows (RETURNING).

        On PostgreSQL in autocommit: one round trip instead of three. On SQLite an ordinary
        ``write()`` transaction, so it queues with the process's other writers.
        """
        if self._sqlite is not None:
            async with self.write() as conn:
                return _rows_of(await conn.execute(statement, parameters))
        return await self._postgres_alone(statement, parameters)

    async def _postgres_alone(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> Sequence[Row[Any]]:
        """One statement in autocommit, handed to psycopg directly.

        SQLAlchemy compiles the statement once and still owns the pool, the binding and the
        result types; what is skipped is its per-execution machinery (execution context,
        result metadata, a greenlet switch per driver call) and its ``Connection`` around
        the pooled one with the isolation-level switch on check-out and check-in: together
        several times the cost of the round trip itself (a ping, five such statements,
        took 4.1 ms in-process with the ``Connection`` and 3.0 ms without).
        """
        prepared = self._prepare(statement, self._pg().dialect)
        if prepared is None:
            async with self._autocommit.connect() as pg_conn:
                return _rows_of(await pg_conn.execute(statement, parameters))
        values = prepared.bind(parameters)
        # A pooled connection without SQLAlchemy's Connection around it: the autocommit
        # switch is made here and undone before check-in, as the pool expects.
        pooled = await self._pg().raw_connection()
        driver: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]
        try:
            await driver.set_autocommit(True)
            cursor = await driver.execute(prepared.sql, values)
            rows = await cursor.fetchall() if prepared.make_row is not None else []
            await driver.set_autocommit(False)
        except BaseException:
            if driver.closed or driver.broken or driver.info.transaction_status != _IDLE:
                # Lost, or left mid-statement by a cancellation: it leaves the pool, which
                # would otherwise count it as checked out for good or hand it out again
                # (tests/integration/test_database.py).
                await greenlet_spawn(pooled.invalidate)
            else:  # the statement failed; the connection is fine
                await driver.set_autocommit(False)
            raise
        finally:
            await greenlet_spawn(pooled.close)
        return prepared.rows(rows)

    def _prepare(self, statement: Executable, dialect: Dialect) -> _Prepared | None:
        """The statement compiled for the direct path, or ``None`` if it can't take it."""
        prepared = self._prepared.get(statement)
        if prepared is None:
            if len(self._prepared) >= MAX_PREPARED:
                return None
            prepared = self._prepared[statement] = _Prepared.of(statement, dialect)
        return prepared if prepared.direct else None

    async def dispose(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sqlite is not None:
            self._sqlite.dispose()
        if self._postgres is not None:
            await self._postgres.dispose()


def _rows_of(result: AnyResult) -> Sequence[Row[Any]]:
    return result.all() if result.returns_rows else []


_IDLE = psycopg.pq.TransactionStatus.IDLE

MAX_PREPARED = 256
"""Statements kept compiled for the direct PostgreSQL path (any beyond go through
SQLAlchemy) and for SQLite batches (any beyond are compiled for each batch)."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement compiled once for the driver (psycopg, or sqlite3 with positional
    ``?`` parameters): its SQL, bind and result conversions."""

    sql: str
    compiled: Compiled
    binders: tuple[tuple[str, Callable[[Any], Any]], ...]
    readers: tuple[Callable[[Any], Any] | None, ...]
    make_row: Callable[[Sequence[Any]], Row[Any]] | None
    positions: tuple[str, ...] | None
    direct: bool
    """False for statements the driver can't take as they are (see ``_direct``)."""

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> _Prepared:
        compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
        binders = tuple(
            (name, processor)
            for name, bind in compiled.binds.items()
            if (processor := _bind_processor(bind, dialect)) is not None
        )
        columns = list(getattr(statement, "exported_columns", ()))
        readers = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )
        make_row = result_tuple([column.key for column in columns]) if columns else None
        positions = tuple(compiled.positiontup) if compiled.positional else None
        return cls(
            compiled.string, compiled, binders, readers, make_row, positions, _direct(compiled)
        )

    def bind(self, parameters: Mapping[str, Any] | None) -> Any:
        values = dict(self.compiled.construct_params(parameters) or {})
        for name, processor in self.binders:
            if name in values:
                values[name] = processor(values[name])
        if self.positions is not None:
            return [values[name] for name in self.positions]
        return values

    def rows(self, raw_rows: Sequence[Any]) -> Sequence[Row[Any]]:
        if self.make_row is None:
            return []
        make_row, readers = self.make_row, self.readers
        return [
            make_row([v if read is None else read(v) for read, v in zip(readers, raw, strict=True)])
            for raw in raw_rows
        ]


def _bind_processor(bind: BindParameter[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The conversion SQLAlchemy applies to a bound value for this dialect's driver."""
    return bind.type.dialect_impl(dialect).bind_processor(dialect)


def _direct(compiled: SQLCompiler) -> bool:
    """Whether the driver can run the compiled statement with its bound values alone.

    Not when SQLAlchemy does work at execution: expanding ``IN`` lists (the SQL depends on
    the values), Python-side column defaults or ``onupdate`` values, callable parameters.
    Such statements go through SQLAlchemy on both direct paths.
    """
    return (
        not compiled.insert_prefetch
        and not compiled.update_prefetch
        and not any(bind.expanding or bind.callable is not None for bind in compiled.binds.values())
    )


_SQLITE_BATCHES: dict[tuple[Executable, tuple[str, ...]], _SQLiteBatch | None] = {}
_Field = tuple[str | None, Any, Callable[[Any], Any] | None]
"""A ``?`` of a batch: the row key it reads (or ``None`` and its fixed value), and the
conversion of its type."""


@dataclass(frozen=True, slots=True)
class _SQLiteBatch:
    """A statement compiled once for ``sqlite3``'s ``executemany``: its SQL with ``?``
    placeholders, and for each one the row key it reads (or its fixed value) and the
    conversion of its type."""

    sql: str
    fields: tuple[_Field, ...]

    @classmethod
    def of(
        cls, statement: Executable, dialect: Dialect, keys: Iterable[str]
    ) -> _SQLiteBatch | None:
        """The statement compiled for these row keys, or ``None`` if it isn't ``_direct``."""
        columns = tuple(keys) if isinstance(statement, Insert) else ()
        if (statement, columns) in _SQLITE_BATCHES:
            return _SQLITE_BATCHES[statement, columns]
        compiled = statement.compile(  # type: ignore[attr-defined]
            dialect=dialect, column_keys=list(columns) or None
        )
        batch = cls._compiled(compiled, dialect) if _direct(compiled) else None
        if len(_SQLITE_BATCHES) < MAX_PREPARED:
            _SQLITE_BATCHES[statement, columns] = batch
        return batch

    @classmethod
    def _compiled(cls, compiled: SQLCompiler, dialect: Dialect) -> _SQLiteBatch:
        fields: list[_Field] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            processor = _bind_processor(bind, dialect)
            if bind.required:
                fields.append((bind.key, None, processor))
            else:
                value = bind.effective_value
                fields.append((None, processor(value) if processor else value, None))
        return cls(compiled.string, tuple(fields))

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        return [
            fixed if key is None else row[key] if convert is None else convert(row[key])
            for key, fixed, convert in self.fields
        ]


def _configure_sqlite(engine: Engine) -> None:
    # Connections come from sqlite_creator in autocommit mode with the pragmas applied;
    # BEGIN is emitted here (pysqlite's own BEGIN is a no-op), COMMIT by the driver.
    @event.listens_for(engine, "begin")
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
