"""PostgreSQL through psycopg 3 and its pool: statements, transactions, LISTEN/NOTIFY.

Pooled connections are in autocommit: a lone statement is one round trip, a transaction
is ``BEGIN`` … ``COMMIT`` issued by psycopg's ``transaction()``. The pool hands back every
connection idle (it rolls back what a caller left open and discards what broke), and a
connection idle past ``DatabaseLimits.idle_check`` is checked before use.

Every step (a check-out, a statement, a commit) is bounded by ``DatabaseLimits.timeout``:
a stalled server accepts TCP and never answers, no server-side timeout fires, and psycopg
answers a cancelled query by asking the server to cancel it and waiting up to ten seconds.
So a step that overruns is *abandoned*: it runs as its own task, the caller gets
``DatabaseUnavailable`` at once, and the task winds down in the background, after which
its connection is closed and given back (the pool then replaces it).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.abc import DumperKey
from psycopg.adapt import PyFormat
from psycopg.rows import dict_row
from psycopg.types.datetime import (
    DatetimeNoTzBinaryDumper,
    DatetimeNoTzDumper,
    TimestampBinaryLoader,
    TimestampLoader,
)

from crohooks.errors import DatabaseUnavailable, DuplicateKey
from crohooks.store.connect import conninfo_of
from crohooks.store.connector import (
    DatabaseLimits,
    Dialect,
    Health,
    Params,
    Row,
    Statement,
    log,
)

NOTIFY_CHANNEL = "crohooks_deliveries"
_T = TypeVar("_T")
_PgConnection = psycopg.AsyncConnection[Row]

_UNAVAILABLE_SQLSTATES = frozenset({"25006", "57014", "57P01", "57P02", "57P03", "53300"})
"""Read-only transaction (a standby after failover), statement timeout, administrator or
crash shutdown, cannot connect now (starting up, in recovery), too many connections."""


def unavailability(error: BaseException) -> str | None:
    """Why ``error`` means the database can't serve now, or ``None`` if it means something
    else (a constraint, a bug)."""
    if isinstance(error, DatabaseUnavailable):
        return error.detail
    if isinstance(error, psycopg_pool.PoolTimeout):
        return "no pooled connection came free in time"
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
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _naive_utc(obj: datetime) -> datetime:
    if obj.tzinfo is None:
        raise ValueError("crohooks stores timezone-aware datetimes only")
    return obj.astimezone(UTC).replace(tzinfo=None)


# Aware datetimes go to ``timestamp`` columns as naive UTC (a ``timestamptz`` parameter
# would make PostgreSQL convert the column instead, and skip its index); ``timestamp``
# columns hold naive UTC and come back aware. Text and binary alike.


class _UTCDumper(DatetimeNoTzDumper):
    def get_key(self, obj: datetime, format: PyFormat) -> DumperKey:
        return self.cls  # one dumper, aware or not: a naive datetime is refused

    def dump(self, obj: datetime) -> bytes | bytearray | memoryview | None:
        return super().dump(_naive_utc(obj))


class _UTCBinaryDumper(DatetimeNoTzBinaryDumper):
    def get_key(self, obj: datetime, format: PyFormat) -> DumperKey:
        return self.cls

    def dump(self, obj: datetime) -> bytes | bytearray | memoryview | None:
        return super().dump(_naive_utc(obj))


class _UTCLoader(TimestampLoader):
    def load(self, data: Any) -> datetime:
        return super().load(data).replace(tzinfo=UTC)


class _UTCBinaryLoader(TimestampBinaryLoader):
    def load(self, data: Any) -> datetime:
        return super().load(data).replace(tzinfo=UTC)


def _adapt(conn: psycopg.AsyncConnection[Any]) -> None:
    conn.adapters.register_dumper(datetime, _UTCDumper)
    conn.adapters.register_dumper(datetime, _UTCBinaryDumper)
    conn.adapters.register_loader("timestamp", _UTCLoader)
    conn.adapters.register_loader("timestamp", _UTCBinaryLoader)


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, limits: DatabaseLimits) -> None:
        self.limits = limits
        self._conninfo = conninfo_of(url)
        self._health = Health()
        self._idle_since: weakref.WeakKeyDictionary[_PgConnection, float] = (
            weakref.WeakKeyDictionary()
        )
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._pool = psycopg_pool.AsyncConnectionPool(
            self._conninfo,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                **self.connect_args(),
            },
            min_size=0,
            max_size=limits.pool_size,
            open=False,
            configure=self._configure,
            check=self._check_if_idle,
            reset=self._mark_idle,
            timeout=limits.pool_timeout,
            name="crohooks",
        )
        self._opening: asyncio.Future[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._work = asyncio.Event()

    def connect_args(self) -> dict[str, Any]:
        """libpq's connect timeout (whole seconds, at least 2), the server's own
        ``statement_timeout`` (so a statement the client gave up on does not run on),
        and UTC as the session's time zone."""
        return {
            "connect_timeout": max(2, math.ceil(self.limits.connect_timeout)),
            "options": f"-c statement_timeout={math.ceil(self.limits.timeout * 1000)}"
            " -c TimeZone=UTC",
        }

    # -- the pool -------------------------------------------------------------------------

    async def _configure(self, conn: _PgConnection) -> None:
        _adapt(conn)

    async def _mark_idle(self, conn: _PgConnection) -> None:
        self._idle_since[conn] = time.monotonic()

    async def _check_if_idle(self, conn: _PgConnection) -> None:
        idle_since = self._idle_since.get(conn)
        if idle_since is not None and time.monotonic() - idle_since >= self.limits.idle_check:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def _checkout(self) -> _PgConnection:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._pool.open(wait=False))
        await self._opening
        # During a known outage, fail fast instead of waiting the whole check-out timeout.
        wait = self.limits.pool_timeout if self._health.lost_at is None else 0.2
        return await self._pool.getconn(timeout=wait)

    async def _give_back(self, conn: _PgConnection) -> None:
        await self._pool.putconn(conn)

    # -- bounded steps ----------------------------------------------------------------

    async def _bounded(
        self,
        work: Coroutine[Any, Any, _T],
        *,
        seconds: float | None = None,
        holding: _Steps | None = None,
    ) -> _T:
        """``work`` within the database timeout, its failures translated. If it overruns,
        ``holding`` (the connection it runs on) is marked abandoned at once, and closed
        and given back once the work has wound down."""
        seconds = seconds or self.limits.timeout
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait((task,), timeout=seconds)
        except asyncio.CancelledError:
            self._abandon(task, holding)
            raise
        if not done:
            self._abandon(task, holding)
            raise self._health.lost(f"no answer within {seconds:g} s")
        error = task.exception()
        if error is None:
            self._health.answered()
            return task.result()
        reason = unavailability(error)
        if reason is not None:
            raise self._health.lost(reason) from error
        self._health.answered()
        if isinstance(error, psycopg.errors.UniqueViolation):
            raise DuplicateKey(error.diag.constraint_name or "unique key") from error
        raise error

    def _abandon(self, task: asyncio.Task[Any], holding: _Steps | None) -> None:
        task.cancel()
        if holding is not None:
            holding.abandoned = True

        async def wind_down() -> None:
            await asyncio.wait((task,))
            failed = task.cancelled() or task.exception() is not None
            if holding is not None:
                conn: _PgConnection | None = holding.conn
            else:  # a check-out: it may have completed after all
                conn = None if failed else task.result()
            if conn is not None:
                try:
                    await conn.close()
                    await self._give_back(conn)
                except Exception as error:  # it is being thrown away anyway
                    log.debug("releasing an abandoned connection failed", error=repr(error))

        cleanup = asyncio.get_running_loop().create_task(wind_down())
        self._abandoned.add(cleanup)
        cleanup.add_done_callback(self._abandoned.discard)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Steps]:
        conn = await self._bounded(self._checkout())
        steps = _Steps(self, conn)
        try:
            yield steps
        finally:
            if not steps.abandoned:
                await self._give_back(conn)

    # -- Database ---------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Steps]:
        async with self.write() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Steps]:
        async with self._connection() as steps:
            await steps.run(steps.conn.execute("BEGIN"))
            try:
                yield steps
            except BaseException:
                if not steps.abandoned:
                    await steps.run(steps.conn.execute("ROLLBACK"))
                raise
            if steps.announced:
                await steps.run(steps.conn.execute(f"NOTIFY {NOTIFY_CHANNEL}"))
            await steps.run(steps.conn.execute("COMMIT"))

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]:
        async with self._connection() as steps:
            return await steps.fetch(statement, params)

    async def write_alone(self, statement: Statement, params: Params = None) -> list[Row]:
        async with self._connection() as steps:
            return await steps.fetch(statement, params)

    async def check(self, *, within: float) -> None:
        async def ping() -> None:
            conn = await self._checkout()
            try:
                await conn.execute("SELECT 1")
            finally:
                await self._give_back(conn)

        await self._bounded(ping(), seconds=within)

    async def wait_for_work(self, seconds: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        try:
            await asyncio.wait_for(self._work.wait(), timeout=seconds)
        except TimeoutError:
            return
        finally:
            self._work.clear()

    async def _listen(self) -> None:
        """LISTEN on a connection of its own; polling covers whatever it misses."""
        lost = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, **self.connect_args()
                )
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if lost:
                        log.info("LISTEN connection restored")
                        lost = False
                    self._work.set()  # whatever was announced while nobody listened
                    async for _ in conn.notifies():
                        self._work.set()
            except (psycopg.Error, OSError) as error:
                if not lost:  # once per outage
                    log.warning("LISTEN connection lost", error=str(error))
                    lost = True
                await asyncio.sleep(1.0)

    async def dispose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._abandoned:
            await asyncio.wait(self._abandoned)
        if self._opening is not None:
            await self._pool.close()


class _Steps:
    """A checked-out connection whose every statement is a bounded step.

    Once a step is abandoned the connection belongs to that step's clean-up; nothing else
    may touch it.
    """

    __slots__ = ("_db", "abandoned", "announced", "conn")

    def __init__(self, db: PostgresDatabase, conn: _PgConnection) -> None:
        self._db = db
        self.conn = conn
        self.abandoned = False
        self.announced = False

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        if self.abandoned:
            work.close()
            raise DatabaseUnavailable("the connection was abandoned by an earlier step")
        return await self._db._bounded(work, holding=self)

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]:
        async def go() -> list[Row]:
            cursor = await self.conn.execute(statement.postgresql, params)
            return await cursor.fetchall() if cursor.description is not None else []

        return await self.run(go())

    async def execute(self, statement: Statement, params: Params = None) -> int:
        async def go() -> int:
            cursor = await self.conn.execute(statement.postgresql, params)
            return cursor.rowcount

        return await self.run(go())

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0

        async def go() -> int:
            async with self.conn.cursor() as cursor:
                await cursor.executemany(statement.postgresql, rows)
                return cursor.rowcount

        return await self.run(go())

    def announce_work(self) -> None:
        self.announced = True
