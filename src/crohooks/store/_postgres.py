"""PostgreSQL through asyncpg and its pool: statements, transactions, LISTEN/NOTIFY.

asyncpg rather than psycopg 3 by measurement (``python -m bench.drivers``, decisions.md):
on the statements every API request makes, a third to half of psycopg's client CPU, with
every statement prepared and cached per connection.

A lone statement is one round trip; a transaction is ``BEGIN`` … ``COMMIT``. A connection
goes back to the pool idle (what a caller left open is rolled back, what broke is
replaced), and one idle past ``DatabaseLimits.idle_check`` is pinged before use.

Every step (a check-out, a statement, a commit) is bounded by ``DatabaseLimits.timeout``:
a stalled server accepts TCP and never answers, and no server-side timeout fires. A step
that overruns is *abandoned*: the caller gets ``DatabaseUnavailable`` at once and the
connection is closed without a word to the server; the pool opens a new one when needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from crohooks.errors import DatabaseError, DatabaseUnavailable, DuplicateKey
from crohooks.store._asyncpg import (
    Conn,
    adapt,
    close_at_once,
    first_line,
    listen,
    reset,
    unavailability,
)
from crohooks.store.connect import conninfo_of
from crohooks.store.connector import (
    DatabaseLimits,
    Dialect,
    Health,
    Params,
    Row,
    Statement,
    wait_then_clear,
)

NOTIFY_CHANNEL = "crohooks_deliveries"
_T = TypeVar("_T")

_WRITABLE = "SELECT current_setting('transaction_read_only') = 'off'"


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str, limits: DatabaseLimits) -> None:
        self.limits = limits
        self._dsn = conninfo_of(url)
        self._health = Health()
        self._idle_since: dict[int, float] = {}
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Future[asyncpg.Pool] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._work = asyncio.Event()

    def _server_settings(self) -> dict[str, str]:
        """The server's own ``statement_timeout`` (so a statement the client gave up on
        does not run on) and UTC as the session's time zone."""
        return {
            "statement_timeout": str(math.ceil(self.limits.timeout * 1000)),
            "TimeZone": "UTC",
        }

    # -- the pool -------------------------------------------------------------------------

    async def _open_pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self.limits.pool_size,
            max_queries=10_000_000,
            max_inactive_connection_lifetime=300.0,
            init=adapt,
            reset=reset,
            timeout=self.limits.connect_timeout,
            server_settings=self._server_settings(),
        )

    async def _open(self) -> asyncpg.Pool:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open_pool())
        try:
            self._pool = await asyncio.shield(self._opening)
        except BaseException:
            if self._opening.done():
                self._opening = None  # try again next time
            raise
        return self._pool

    async def _checkout(self) -> Conn:
        pool = self._pool or await self._open()
        if pool.get_idle_size():
            conn: Conn = await pool.acquire()  # one is free: taken at once
        else:
            # During a known outage, fail fast instead of waiting the whole timeout. (Not
            # the pool's own timeout: it starts a task per wait.)
            wait = self.limits.pool_timeout if self._health.lost_at is None else 0.2
            async with asyncio.timeout(wait):
                conn = await pool.acquire()
        # Keyed by the server's process id: the pool hands out a new proxy object on
        # every check-out, but the connection, and its backend, stay the same.
        idle_since = self._idle_since.pop(conn.get_server_pid(), None)
        if idle_since is not None and time.monotonic() - idle_since >= self.limits.idle_check:
            try:
                await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                close_at_once(conn)
                raise
            except Exception:
                # Dead while it idled (a restart, a dropped link): replace it, once.
                close_at_once(conn)
                conn = await pool.acquire(timeout=wait)
        return conn

    async def _give_back(self, conn: Conn) -> None:
        if self._pool is None:
            return
        try:
            closed = conn.is_closed()
        except asyncpg.InterfaceError:
            return  # it broke, and the pool has taken it back already
        if not closed:
            if len(self._idle_since) > 4 * self.limits.pool_size:
                self._idle_since.clear()  # backends the pool has since closed
            self._idle_since[conn.get_server_pid()] = time.monotonic()
        await self._pool.release(cast("PoolConnectionProxy[Any]", conn))

    # -- bounded steps ----------------------------------------------------------------

    async def _bounded(
        self,
        work: Coroutine[Any, Any, _T],
        *,
        seconds: float | None = None,
        holding: _Steps | None = None,
    ) -> _T:
        """``work`` within the database timeout, its failures translated. If it overruns,
        or its caller is cancelled, ``holding`` (the connection it runs on) is abandoned:
        closed at once, without waiting for a server that may never answer. (asyncpg
        answers a cancelled query at once and asks the server to cancel it in the
        background, so the caller is never held up.)"""
        seconds = seconds or self.limits.timeout
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                result = await work
        except asyncio.CancelledError:
            self._abandon(holding)
            raise
        except Exception as error:
            if deadline.expired():
                self._abandon(holding)
                raise self._health.lost(f"no answer within {seconds:g} s") from None
            reason = unavailability(error)
            if reason is not None:
                raise self._health.lost(reason) from error
            self._health.answered()
            if isinstance(error, asyncpg.UniqueViolationError):
                raise DuplicateKey(error.constraint_name or "unique key") from error
            if isinstance(error, asyncpg.DataError) and isinstance(error.__cause__, ValueError):
                raise error.__cause__ from None  # a value our encoder refused (a naive datetime)
            if isinstance(error, asyncpg.PostgresError):
                raise DatabaseError(first_line(error)) from error
            raise
        self._health.answered()
        return result

    @staticmethod
    def _abandon(holding: _Steps | None) -> None:
        if holding is not None and holding.conn is not None and not holding.abandoned:
            holding.abandoned = True
            close_at_once(holding.conn)

    @asynccontextmanager
    async def _connection(self, seconds: float | None = None) -> AsyncIterator[_Steps]:
        conn = await self._bounded(self._checkout(), seconds=seconds)
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
            steps.pending = "BEGIN"  # sent with the first statement, if it can go along
            try:
                yield steps
            except BaseException:
                if not steps.abandoned and not steps.pending:
                    # The error that got here is the one to report; a connection that
                    # broke needs no rollback (the pool closes and replaces it).
                    with contextlib.suppress(Exception):
                        await steps.command("ROLLBACK")
                raise
            if steps.pending:  # no statement ran: no transaction to end
                steps.pending = ""
                if steps.announced:
                    await steps.command(f"NOTIFY {NOTIFY_CHANNEL}")
                return
            await steps.command(f"NOTIFY {NOTIFY_CHANNEL}; COMMIT" if steps.announced else "COMMIT")

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]:
        steps = _Steps(self, None)
        return await self._bounded(steps.alone(statement, params), holding=steps)

    async def write_alone(self, statement: Statement, params: Params = None) -> list[Row]:
        return await self.fetch(statement, params)  # a lone statement commits by itself

    async def check(self, *, within: float) -> None:
        async with self._connection(within) as steps:
            writable = await steps.run(steps.call("fetchval", _WRITABLE), seconds=within)
        if not writable:
            # A standby after a failover: every write would fail.
            raise self._health.lost("the database is read-only")

    async def wait_for_work(self, seconds: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                listen(self._dsn, NOTIFY_CHANNEL, self.limits, wake=self._work.set)
            )
        await wait_then_clear(self._work, seconds)

    async def dispose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        if self._pool is not None:
            try:  # gracefully, unless the server does not answer
                await asyncio.wait_for(self._pool.close(), timeout=self.limits.timeout)
            except TimeoutError:
                self._pool.terminate()
        elif self._opening is not None:
            self._opening.cancel()


class _Steps:
    """A checked-out connection whose every statement is a bounded step.

    Once a step is abandoned the connection is closed and nothing may touch it again.
    """

    __slots__ = ("_db", "abandoned", "announced", "conn", "pending")

    def __init__(self, db: PostgresDatabase, conn: Conn | None) -> None:
        self._db = db
        self.conn = conn
        self.abandoned = False
        self.announced = False
        self.pending = ""
        """A command not sent yet (a transaction's ``BEGIN``): it goes in front of the next
        statement without parameters, in the same round trip, or alone before one with."""

    async def alone(self, statement: Statement, params: Params) -> list[Row]:
        """Check out, run one statement (its own transaction), give back: all of it one
        step, under one deadline. (The hot path: bounding and wrapping the check-out and the
        statement apart cost more client CPU than the driver and its pool together.)"""
        conn = self.conn = await self._db._checkout()
        try:
            records = await conn.fetch(statement.numbered, *statement.arguments(params))
        except asyncio.CancelledError:
            self._db._abandon(self)  # mid-statement: the connection's state is unknown
            raise
        finally:
            if not self.abandoned:
                self.conn = None  # given back: whatever happens next, not ours to close
                await self._db._give_back(conn)
        return [dict(record) for record in records]

    async def run(self, work: Coroutine[Any, Any, _T], *, seconds: float | None = None) -> _T:
        if self.abandoned:
            work.close()
            raise DatabaseUnavailable("the connection was abandoned by an earlier step")
        return await self._db._bounded(work, seconds=seconds, holding=self)

    async def call(self, method: str, *args: Any) -> Any:
        """``self.conn.<method>(*args)``, awaited. A pooled connection that broke has been
        taken back by the pool, and its proxy refuses every call at once: called in here,
        that refusal happens inside the step and is translated like any lost connection."""
        return await getattr(self.conn, method)(*args)

    async def command(self, sql: str) -> str:
        """Statements without parameters, in one round trip (the simple query protocol):
        what is pending, then ``sql``. The status of the last one."""
        if self.pending:
            sql, self.pending = f"{self.pending}; {sql}", ""
        status: str = await self.run(self.call("execute", sql))
        return status

    async def _send_pending(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, ""
            await self.run(self.call("execute", pending))

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]:
        await self._send_pending()
        records = await self.run(
            self.call("fetch", statement.numbered, *statement.arguments(params))
        )
        return [dict(record) for record in records]

    async def execute(self, statement: Statement, params: Params = None) -> int:
        if statement.names:
            await self._send_pending()
            status = await self.run(
                self.call("execute", statement.numbered, *statement.arguments(params))
            )
        else:
            status = await self.command(statement.numbered)
        count = str(status).rpartition(" ")[2]
        return int(count) if count.isdigit() else 0

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self._send_pending()
            arguments = [statement.arguments(row) for row in rows]
            await self.run(self.call("executemany", statement.numbered, arguments))

    def announce_work(self) -> None:
        self.announced = True
