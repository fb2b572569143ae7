"""The engine, its per-dialect set-up, and the kinds of transaction crohooks uses."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import psycopg
import structlog
from sqlalchemy import (
    BindParameter,
    CursorResult,
    Executable,
    Insert,
    Row,
    create_engine,
    event,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Compiled, Connection, Dialect, Engine
from sqlalchemy.engine.result import result_tuple
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from crohooks.errors import DatabaseUnavailable
from crohooks.store.sqlite_connect import is_busy, is_memory, sqlite_creator

if TYPE_CHECKING:
    from crohooks.settings import Settings

log = structlog.get_logger("crohooks.database")
_T = TypeVar("_T")

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

    def __init__(
        self,
        url: str,
        *,
        limits: DatabaseLimits | None = None,
        pool_size: int = 20,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.limits = limits = limits or DatabaseLimits()
        self._health = _Health()
        self._abandoned: set[asyncio.Task[Any]] = set()
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
            # Every connection goes back to the pool idle: a transaction left open by any
            # path is rolled back on check-in (free when there is none: psycopg skips the
            # ROLLBACK of an idle connection).
            self._postgres = create_async_engine(
                async_url(url),
                echo=echo,
                pool_reset_on_return="rollback",
                pool_size=pool_size,
                max_overflow=0,
                pool_timeout=limits.pool_timeout,
                connect_args=limits.connect_args(),
            )
            self._idle_check = _IdleCheck(limits.idle_check)
            self._idle_check.install(self._postgres)
            # Derived once: deriving an engine registers event listeners, which costs more
            # than the statement it would run.
            self._autocommit = self._postgres.execution_options(isolation_level="AUTOCOMMIT")
            self.dialect = "postgresql"
        self._prepared: dict[Executable, _Prepared] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> Database:
        return cls(settings.database_url, limits=DatabaseLimits.of(settings))

    # -- PostgreSQL ---------------------------------------------------------------------

    def _pg(self) -> AsyncEngine:
        assert self._postgres is not None
        return self._postgres

    async def _bounded(
        self,
        work: Coroutine[Any, Any, _T],
        *,
        seconds: float | None = None,
        on_abandon: _Release | None = None,
    ) -> _T:
        """``work`` within the database timeout, its failures translated.

        A step that overruns is cancelled and *abandoned*: the caller gets
        ``DatabaseUnavailable`` at once, while the step winds down in the background
        (psycopg answers a cancellation by asking the server to cancel the query, which a
        frozen server never acknowledges: up to ten seconds). ``on_abandon`` is told at
        once and returns the clean-up to run after that, which releases what the step held.
        """
        seconds = seconds or self.limits.timeout
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait((task,), timeout=seconds)
        except asyncio.CancelledError:
            self._abandon(task, on_abandon)
            raise
        if not done:
            self._abandon(task, on_abandon)
            raise self._health.lost(f"no answer within {seconds:g} s")
        error = task.exception()
        if error is None:
            self._health.answered()
            return task.result()
        reason = unavailability(error)
        if reason is not None:
            raise self._health.lost(reason) from error
        self._health.answered()
        raise error

    def _abandon(self, task: asyncio.Task[Any], on_abandon: _Release | None) -> None:
        task.cancel()
        release = on_abandon(task) if on_abandon is not None else None

        async def wind_down() -> None:
            await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # retrieved: it is the outage already reported
            if release is not None:
                try:
                    await release
                except Exception as error:  # the connection is being thrown away anyway
                    log.debug("releasing an abandoned connection failed", error=repr(error))

        cleanup = asyncio.get_running_loop().create_task(wind_down())
        self._abandoned.add(cleanup)
        cleanup.add_done_callback(self._abandoned.discard)

    @asynccontextmanager
    async def _pg_transaction(self) -> AsyncIterator[Conn]:
        connection = self._pg().connect()
        await self._bounded(connection.start(), on_abandon=_close_if_started(connection))
        steps = _BoundedConnection(self, connection)
        try:
            await steps.run(connection.begin().start())
            yield steps
            await steps.run(connection.commit())
        except BaseException:
            if not steps.abandoned:
                await steps.run(connection.rollback())
            raise
        finally:
            if not steps.abandoned:
                await steps.run(connection.close())

    async def check(self, *, within: float) -> None:
        """Raise ``DatabaseUnavailable`` unless the database answers a query in time."""
        if self._sqlite is not None:
            await self.fetch(_SELECT_ONE)
            return
        rows = await self._bounded(self._postgres_alone(_WRITABLE, None), seconds=within)
        if not rows[0].writable:  # a standby after a failover: every write would fail
            raise self._health.lost("the database is read-only")

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
                if not is_busy(error):
                    raise
                if loop.time() + delay > deadline:
                    held = f"{WRITE_LOCK_WAIT_SECONDS:g} s"
                    raise DatabaseUnavailable(
                        f"another process held SQLite's write lock for {held}"
                    ) from error
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- the transactions ---------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        if self._sqlite is not None:
            with self._sqlite_transaction() as conn:
                yield conn
            return
        async with self._pg_transaction() as pg_conn:
            yield pg_conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Conn]:
        if self._sqlite is None:
            async with self._pg_transaction() as pg_conn:
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
        return await self._bounded(self._postgres_alone(statement, parameters))

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
        return await self._bounded(self._postgres_alone(statement, parameters))

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
            if driver.info.transaction_status != _IDLE:  # never expected: the pool resets
                await driver.rollback()
            await driver.set_autocommit(True)
            cursor = await driver.execute(prepared.sql, values)
            rows = await cursor.fetchall() if prepared.make_row is not None else []
            await driver.set_autocommit(False)
        except BaseException:
            if driver.closed or driver.broken or driver.info.transaction_status != _IDLE:
                # Lost, or left mid-statement by a cancellation: it leaves the pool, which
                # would otherwise count it as checked out for good or hand it out again
                # (tests/integration/test_database.py). If it was lost, the others that
                # sat in the pool meanwhile are suspect too: checked before their next use.
                if driver.closed or driver.broken:
                    self._idle_check.suspect_before = time.monotonic()
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
        if self._abandoned:
            await asyncio.wait(self._abandoned)
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


_SELECT_ONE = text("SELECT 1")
_WRITABLE: Executable = select(
    literal_column("current_setting('transaction_read_only') = 'off'").label("writable")
)

SETTLE_SECONDS = 1.0
"""How long the database must answer without a failure before it counts as back."""


@dataclass(frozen=True, slots=True)
class DatabaseLimits:
    """How long each database step may take; see the README's configuration table."""

    connect_timeout: float = 5.0
    timeout: float = 5.0
    pool_timeout: float = 5.0
    idle_check: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> DatabaseLimits:
        return cls(
            connect_timeout=settings.database_connect_timeout,
            timeout=settings.database_timeout,
            pool_timeout=settings.database_pool_timeout,
            idle_check=settings.database_idle_check_seconds,
        )

    def connect_args(self) -> dict[str, Any]:
        """libpq's connect timeout (whole seconds, at least 2) and the server's own
        ``statement_timeout``, so a statement the client gave up on does not run on."""
        return {
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
            "options": f"-c statement_timeout={math.ceil(self.timeout * 1000)}",
        }


_Release = Callable[[asyncio.Task[Any]], Coroutine[Any, Any, None]]
"""Told that a step was abandoned; returns what releases the step's hold once it ends."""


class _BoundedConnection:
    """The ``Conn`` of a PostgreSQL transaction: each statement is a bounded step.

    Once a step is abandoned the connection belongs to that step's clean-up, which
    invalidates it when the step has wound down; nothing else may touch it.
    """

    __slots__ = ("_connection", "_db", "abandoned")

    def __init__(self, db: Database, connection: AsyncConnection) -> None:
        self._db = db
        self._connection = connection
        self.abandoned = False

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        if self.abandoned:
            work.close()
            raise DatabaseUnavailable("the connection was abandoned by an earlier step")
        return await self._db._bounded(work, on_abandon=self._abandoned)

    def _abandoned(self, step: asyncio.Task[Any]) -> Coroutine[Any, Any, None]:
        self.abandoned = True
        return self._invalidate()

    async def _invalidate(self) -> None:
        await self._connection.invalidate()
        await self._connection.close()

    async def execute(self, statement: Executable, parameters: Any = None) -> AnyResult:
        return await self.run(self._connection.execute(statement, parameters))

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> AnyResult:
        return await self.run(self._connection.exec_driver_sql(statement, parameters))


def _close_if_started(connection: AsyncConnection) -> _Release:
    async def close(step: asyncio.Task[Any]) -> None:
        if not step.cancelled() and step.exception() is None:
            await connection.close()

    def release(step: asyncio.Task[Any]) -> Coroutine[Any, Any, None]:
        return close(step)

    return release


class _Health:
    """Whether the database answered last: one log line when it goes, one when it is back,
    instead of a traceback per request."""

    __slots__ = ("last_failure", "lost_at")

    def __init__(self) -> None:
        self.lost_at: float | None = None
        self.last_failure = 0.0

    def lost(self, reason: str) -> DatabaseUnavailable:
        now = time.monotonic()
        self.last_failure = now
        if self.lost_at is None:
            self.lost_at = now
            log.warning("database unavailable", reason=reason)
        return DatabaseUnavailable(f"the database is unavailable: {reason}")

    def answered(self) -> None:
        # Back only once it has answered for a while after its last failure: a server
        # shutting down still answers on some connections, and a read-only one answers
        # reads between failed writes; neither is the end of the outage.
        if self.lost_at is not None:
            now = time.monotonic()
            if now - self.last_failure >= SETTLE_SECONDS:
                seconds = self.last_failure - self.lost_at
                self.lost_at = None
                log.info("database available again", unavailable_seconds=round(seconds, 3))


_UNAVAILABLE_SQLSTATES = frozenset({"25006", "57014", "57P01", "57P02", "57P03", "53300"})
"""Read-only transaction (a standby after failover), statement timeout, administrator or
crash shutdown, cannot connect now (starting up, in recovery), too many connections."""


def unavailability(error: BaseException) -> str | None:
    """Why ``error`` means the database can't serve now, or ``None`` if it means something
    else (a constraint, a bug)."""
    if isinstance(error, DatabaseUnavailable):
        return error.detail
    if isinstance(error, PoolTimeout):
        return "no pooled connection came free in time"
    if isinstance(error, DisconnectionError):
        return "connections to the database keep failing"
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return "the connection to the database was lost"
        error = error.orig if error.orig is not None else error
    if isinstance(error, psycopg.Error):
        if isinstance(error, psycopg.InterfaceError) or (
            isinstance(error, psycopg.OperationalError) and error.sqlstate is None
        ):
            return _first_line(error)
        if error.sqlstate is not None and (
            error.sqlstate in _UNAVAILABLE_SQLSTATES or error.sqlstate.startswith("08")
        ):
            return _first_line(error)
    return None


def _first_line(error: BaseException) -> str:
    text_ = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text_[0] if text_ else ''}".rstrip(": ")


class _IdleCheck:
    """``pool_pre_ping`` without its round trip on every check-out.

    A connection that came back to the pool moments ago is alive; one that sat idle for
    ``idle_seconds`` (long enough for the server to have restarted or a firewall to have
    dropped it), or that was idle when another connection was found dead, is pinged before
    use and replaced if the ping fails, as ``pool_pre_ping`` would. The ping leaves the
    connection idle, outside any transaction, as every user of the pool expects.
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self.suspect_before = 0.0
        """Connections checked in before this moment are pinged whatever their idle time."""

    def install(self, engine: AsyncEngine) -> None:
        @event.listens_for(engine.sync_engine, "checkin")
        def _on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            record.info["idle_since"] = time.monotonic()

        @event.listens_for(engine.sync_engine, "checkout")
        def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
            idle_since = record.info.get("idle_since")
            if idle_since is None:
                return
            idle = time.monotonic() - idle_since
            if idle < self.idle_seconds and idle_since >= self.suspect_before:
                return
            try:
                cursor = dbapi_connection.cursor()
                cursor.execute("SELECT 1")
                cursor.close()
                dbapi_connection.rollback()
            except Exception as error:
                self.suspect_before = time.monotonic()
                raise DisconnectionError("an idle pooled connection failed its ping") from error
