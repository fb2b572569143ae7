"""What crohooks tells asyncpg, and what asyncpg's failures mean.

Timestamps travel in asyncpg's binary form; a connection goes back to the pool with no
transaction open; a connection is closed at once when a step is abandoned; a failure is
either the database being unavailable (``unavailability``) or something else; and
``LISTEN`` has a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from crohooks.errors import DatabaseUnavailable
from crohooks.store.connector import DatabaseLimits, log

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

_UNAVAILABLE_SQLSTATES = frozenset({"25006", "57014", "57P01", "57P02", "57P03", "53300"})
"""Read-only transaction (a standby after failover), statement timeout, administrator or
crash shutdown, cannot connect now (starting up, in recovery), too many connections."""

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECONDS = timedelta(microseconds=1)


def unavailability(error: BaseException) -> str | None:
    """Why ``error`` means the database can't serve now, or ``None`` if it means something
    else (a constraint, a bug)."""
    if isinstance(error, DatabaseUnavailable):
        return error.detail
    if isinstance(error, asyncpg.PostgresError):
        state = error.sqlstate or ""
        if state in _UNAVAILABLE_SQLSTATES or state.startswith("08"):
            return first_line(error)
        return None
    if isinstance(
        error,
        asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | asyncio.TimeoutError,
    ):
        return first_line(error)
    return None


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# ``timestamp`` columns hold naive UTC. Aware datetimes go in, aware UTC comes out, in
# asyncpg's binary form (microseconds since 2000-01-01): no text to format or parse.


def _encode_timestamp(value: datetime) -> tuple[int]:
    if value.tzinfo is None:
        raise ValueError("crohooks stores timezone-aware datetimes only")
    return ((value - _EPOCH) // _MICROSECONDS,)


def _decode_timestamp(value: tuple[int]) -> datetime:
    return _EPOCH + timedelta(microseconds=value[0])


async def adapt(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "timestamp",
        schema="pg_catalog",
        encoder=_encode_timestamp,
        decoder=_decode_timestamp,
        format="tuple",
    )


def close_at_once(conn: Conn) -> None:
    """Close a checked-out connection without a word to the server. The pool takes a
    closed connection back by itself and opens a new one when needed; one that broke on
    its own has been taken back already, and its proxy refuses every call."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def reset(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: no open transaction (asyncpg's
    default reset would spend a round trip on every release)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def listen(
    dsn: str, channel: str, limits: DatabaseLimits, *, wake: Callable[[], None]
) -> None:
    """LISTEN on ``channel`` on a connection of its own and ``wake()`` at every
    notification, until cancelled. The connection is pinged now and then so a dead one is
    noticed, and replaced; ``wake()`` also runs on every (re)connection, for whatever was
    announced while nobody listened. Polling covers the rest."""
    lost = False
    while True:
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(
                dsn, timeout=limits.connect_timeout, statement_cache_size=0
            )
            await conn.add_listener(channel, lambda *_: wake())
            if lost:
                log.info("LISTEN connection restored")
                lost = False
            wake()
            while True:
                await asyncio.sleep(limits.idle_check or 5.0)
                await asyncio.wait_for(conn.execute("SELECT 1"), limits.timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            if not lost:  # once per outage
                log.warning("LISTEN connection lost", error=first_line(error))
                lost = True
            await asyncio.sleep(1.0)
        finally:
            if conn is not None:
                conn.terminate()
