"""Claim latency with a backlog of 1,000,000 due deliveries, against a nearly empty queue.

Both queues are filled with bulk SQL (``generate_series`` on PostgreSQL, a recursive CTE
on SQLite) and spread over 1,000 hooks, so the per-hook in-flight cap never runs out;
then the same claim a worker makes (``DeliveryQueue.claim``, 64 deliveries, default cap)
is timed ROUNDS times, each claimed batch being marked done between claims (untimed) as
a worker would. The "empty" queue holds just the deliveries those claims take.

The keyed variant (issue 15) queues the same rows over 10,000 ordering keys: only each
key's head is due, the rest wait behind it, as ordered delivery keeps them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.schema import CreateIndex

from bench.common import TENANT, BenchError, median, percentile
from crohooks.clock import utc_now
from crohooks.model import ClaimPolicy
from crohooks.store.connect import open_database
from crohooks.store.connector import Database, Statement
from crohooks.store.migrate import migrate, sync_url
from crohooks.store.queue import DeliveryQueue
from crohooks.store.schema import deliveries

HOOKS = 1000
ORDERING_KEYS = 10_000
LIMIT = 64
ROUNDS = int(__import__("os").environ.get("BENCH_ROUNDS", "30"))
BODY_BYTES = 100


@dataclass(frozen=True)
class ClaimFigures:
    rows: int
    insert_seconds: float
    claim_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return median(self.claim_ms)

    @property
    def p99_ms(self) -> float:
        return percentile(self.claim_ms, 0.99)


_HOOKS_SQL = """
INSERT INTO hooks (id, tenant_id, url, secret, events, created_at, updated_at)
SELECT i, :tenant, 'http://127.0.0.1:9/hook/' || i, 'VGhlIGxhenkgYnJvd24gZG9n', '["Job"]',
       :now, :now
FROM {series}
"""

_POSTGRES_SERIES = "generate_series(1, :n) AS i"

# With keys, row i is update (i - 1) // keys + 1 of key (i - 1) % keys, and only each
# key's first update (its head) has a next_attempt_at: the others wait (store/ordering.py).
_POSTGRES_DELIVERIES = """
INSERT INTO deliveries (id, tenant_id, hook_id, event_id, event, body, status, attempts,
                        next_attempt_at, created_at, updated_at, ordering_key, sequence)
SELECT lpad(to_hex(i), 8, '0') || '-0000-4000-8000-000000000000', :tenant, 1 + i % :hooks, NULL,
       'Job', repeat('x', :body), 'pending', 0,
       CASE WHEN :keys = 0 OR i - 1 < :keys THEN :start + i * interval '1 microsecond' END,
       :start, :start,
       CASE WHEN :keys > 0 THEN 'Job:' || ((i - 1) % :keys) END,
       CASE WHEN :keys > 0 THEN (i - 1) / :keys + 1 END
FROM generate_series(1, :n) AS i
"""

_SQLITE_SERIES = (
    "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) SELECT i FROM s)"
)

# SQLAlchemy keeps SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
_SQLITE_DELIVERIES = """
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
INSERT INTO deliveries (id, tenant_id, hook_id, event_id, event, body, status, attempts,
                        next_attempt_at, created_at, updated_at, ordering_key, sequence)
SELECT printf('%08x-0000-4000-8000-%012x', :offset + i, i), :tenant, 1 + i % :hooks, NULL,
       'Job', substr(:filler, 1, :body), 'pending', 0,
       CASE WHEN :keys = 0 OR i - 1 < :keys THEN
           strftime('%Y-%m-%d %H:%M:%S', :start, '+' || (i / 1000) || ' seconds')
           || printf('.%06d', (i % 1000) * 1000) END,
       :start_text, :start_text,
       CASE WHEN :keys > 0 THEN 'Job:' || ((i - 1) % :keys) END,
       CASE WHEN :keys > 0 THEN (i - 1) / :keys + 1 END
FROM s
"""


def _fill(conn: Connection, rows: int, offset: int, keys: int = 0) -> float:
    """Insert ``rows`` due deliveries (spread over the hooks, all due a day ago; with
    ``keys``, spread over that many ordering keys too, and only each key's head due).

    As any bulk load does, the secondary indexes are dropped first and built again after
    (from ``store.schema``, so they are exactly the production ones).
    """
    start = utc_now() - timedelta(days=1)
    naive = start.replace(tzinfo=None)
    started = time.perf_counter()
    for index in deliveries.indexes:
        conn.execute(text(f"DROP INDEX {index.name}"))
    if conn.dialect.name == "postgresql":
        conn.execute(
            text(_POSTGRES_DELIVERIES),
            {
                "tenant": TENANT,
                "hooks": HOOKS,
                "body": BODY_BYTES,
                "start": naive,
                "n": rows,
                "keys": keys,
            },
        )
    else:
        stamp = naive.strftime("%Y-%m-%d %H:%M:%S")
        conn.execute(
            text(_SQLITE_DELIVERIES),
            {
                "tenant": TENANT,
                "hooks": HOOKS,
                "body": BODY_BYTES,
                "filler": "x" * BODY_BYTES,
                "start": stamp,
                "start_text": stamp + ".000000",
                "n": rows,
                "offset": offset,
                "keys": keys,
            },
        )
    for index in deliveries.indexes:
        conn.execute(CreateIndex(index))
    conn.commit()
    conn.execute(text("ANALYZE deliveries"))
    conn.commit()
    return time.perf_counter() - started


def _load(database_url: str, rows: int, keys: int = 0) -> float:
    """The hooks and ``rows`` due deliveries, through SQLAlchemy (a fixture, not measured
    code: the schema's own index definitions are rebuilt after the bulk insert)."""
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            series = _POSTGRES_SERIES if conn.dialect.name == "postgresql" else _SQLITE_SERIES
            now = utc_now().replace(tzinfo=None)
            conn.execute(
                text(_HOOKS_SQL.format(series=series)), {"tenant": TENANT, "now": now, "n": HOOKS}
            )
            conn.commit()
            return _fill(conn, rows, offset=0, keys=keys)
    finally:
        engine.dispose()


_FINISH = Statement(
    "bench_finish",
    sqlite="UPDATE deliveries SET status = 'succeeded', lease_expires_at = NULL, leased_by = NULL"
    " WHERE id IN (SELECT value FROM json_each(:ids))",
    postgresql="UPDATE deliveries SET status = 'succeeded', lease_expires_at = NULL,"
    " leased_by = NULL WHERE id = ANY(%(ids)s::text[])",
)


async def _finish(db: Database, ids: list[str]) -> None:
    """Mark claimed deliveries done, as the worker would after delivering them (untimed)."""
    await db.write_alone(_FINISH, {"ids": json.dumps(ids) if db.dialect == "sqlite" else ids})


async def measure(database_url: str, *, rows: int, keys: int = 0) -> ClaimFigures:
    """Claim latency on a fresh database holding ``rows`` due deliveries (with ``keys``,
    spread over that many ordering keys, each key's head due and the rest waiting)."""
    migrate(database_url)
    insert_seconds = _load(database_url, rows, keys)
    db = open_database(database_url)
    try:
        queue = DeliveryQueue(db)
        policy = ClaimPolicy(
            limit=LIMIT, per_hook_cap=4, lease=timedelta(seconds=60), worker_id="bench"
        )
        # Warm up (connections, statement caches), as a running worker would be.
        await _finish(db, [delivery.id for delivery in await queue.claim(policy, now=utc_now())])
        latencies = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            claimed = await queue.claim(policy, now=utc_now())
            latencies.append((time.perf_counter() - started) * 1000.0)
            if len(claimed) != LIMIT:
                raise BenchError(f"a claim took {len(claimed)} deliveries, not {LIMIT}")
            await _finish(db, [delivery.id for delivery in claimed])
        return ClaimFigures(rows, insert_seconds, latencies)
    finally:
        await db.dispose()
