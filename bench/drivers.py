"""PostgreSQL drivers side by side on crohooks' hot statements: psycopg 3 or asyncpg.

``python -m bench.drivers`` runs, on one fresh database and in one process, the two
statements every API request makes on PostgreSQL (a version-pin read by key and a
rate-limit counter upsert) through each driver: one connection in autocommit, prepared
statements (psycopg prepares a statement after its fifth execution by default; asyncpg
always), sequential round trips. It prints the time and the process CPU per statement,
and psycopg's ratio to asyncpg (psycopg stays a dependency for Alembic).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import psycopg

from bench.common import postgres_database
from crohooks.store.connect import conninfo_of
from crohooks.store.migrate import migrate

ROUNDS = 5000
READ = "SELECT version FROM api_version_pins WHERE client = {}"
BUMP = (
    "INSERT INTO rate_limits (key, window_start, hits) VALUES ({}, {}, 1)"
    " ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1"
    " RETURNING hits"
)


async def _timed(run: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    """Microseconds of wall time and of process CPU per statement."""
    for number in range(200):
        await run(number)  # warm: connections, prepared statements
    wall, cpu = time.perf_counter(), time.process_time()
    for number in range(ROUNDS):
        await run(number)
    return (
        (time.perf_counter() - wall) / ROUNDS * 1e6,
        (time.process_time() - cpu) / ROUNDS * 1e6,
    )


async def psycopg_figures(conninfo: str) -> dict[str, tuple[float, float]]:
    window = datetime(2026, 1, 1, tzinfo=UTC)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        read, bump = READ.format("%s"), BUMP.format("%s", "%s")

        async def one_read(_: int) -> object:
            return await (await conn.execute(read, ("client",))).fetchall()

        async def one_bump(_: int) -> object:
            return await (await conn.execute(bump, ("key", window))).fetchall()

        return {"pin read": await _timed(one_read), "counter upsert": await _timed(one_bump)}


async def asyncpg_figures(conninfo: str) -> dict[str, tuple[float, float]]:
    import asyncpg

    window = datetime(2026, 1, 1)
    conn = await asyncpg.connect(conninfo)
    try:
        read, bump = READ.format("$1"), BUMP.format("$1", "$2")

        async def one_read(_: int) -> object:
            return await conn.fetch(read, "client")

        async def one_bump(_: int) -> object:
            return await conn.fetch(bump, "key", window)

        return {"pin read": await _timed(one_read), "counter upsert": await _timed(one_bump)}
    finally:
        await conn.close()


async def main() -> int:
    with postgres_database("crohooks_bench_drivers") as url:
        migrate(url)
        conninfo = conninfo_of(url)
        ours = await psycopg_figures(conninfo)
        theirs = await asyncpg_figures(conninfo)
    print(f"{'statement':<16} {'psycopg µs':>12} {'asyncpg µs':>12} {'ratio':>7}   (CPU µs)")
    for name, (wall, cpu) in ours.items():
        other_wall, other_cpu = theirs[name]
        print(
            f"{name:<16} {wall:>12.1f} {other_wall:>12.1f} {wall / other_wall:>7.2f}"
            f"   ({cpu:.1f} vs {other_cpu:.1f})"
        )
    return 0


if __name__ == "__main__":
    import uvloop

    raise SystemExit(uvloop.run(main()))
