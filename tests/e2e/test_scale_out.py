"""Spec 4.4 with real processes: two API processes and three workers on one PostgreSQL.

Thousands of deliveries are published through both API processes at once while three
workers drain the queue into a healthy loopback receiver. The run happens once per
module; each test then checks one guarantee against what the receiver saw and what the
database holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy.engine import Row

from crohooks.store.connect import conninfo_of
from tests.conftest import fresh_postgres_database
from tests.e2e.processes import (
    Api,
    Publisher,
    Worker,
    api_server,
    mint_token,
    process_env,
    query,
    run_cli,
    worker,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(90)]

HOOKS = 5
EVENTS = 600
BATCH = 100
DELIVERIES = HOOKS * EVENTS
PER_HOOK_INFLIGHT = 4
API_PROCESSES = 2
WORKER_PROCESSES = 3
DELIVERED_WITHIN = 45.0
RECEIVER_WORK_SECONDS = 0.005
"""How long the receiver takes per request: the window in which a second, overlapping
request for the same delivery (or one hook over its cap) is seen."""


@dataclass
class Arrivals:
    """What the receiver saw, per delivery id and per hook."""

    count: Counter[str] = field(default_factory=Counter)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    header_mismatches: list[str] = field(default_factory=list)
    active: Counter[str] = field(default_factory=Counter)
    overlapping: set[str] = field(default_factory=set)
    active_per_hook: Counter[str] = field(default_factory=Counter)
    most_active_per_hook: Counter[str] = field(default_factory=Counter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        return sum(self.count.values())


@asynccontextmanager
async def counting_receiver(arrivals: Arrivals) -> AsyncIterator[str]:
    """A fast loopback receiver that answers 200 to every POST; yields its base URL."""

    async def handle(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        delivery_id = request.headers.get("X-Cro-Delivery", "")
        hook = request.headers.get("X-Cro-Hook-Id", "")
        if body.get("delivery_id") != delivery_id:
            arrivals.header_mismatches.append(delivery_id)
        arrivals.count[delivery_id] += 1
        arrivals.bodies[delivery_id] = body
        arrivals.active[delivery_id] += 1
        if arrivals.active[delivery_id] > 1:
            arrivals.overlapping.add(delivery_id)
        arrivals.active_per_hook[hook] += 1
        arrivals.most_active_per_hook[hook] = max(
            arrivals.most_active_per_hook[hook], arrivals.active_per_hook[hook]
        )
        try:
            await asyncio.sleep(RECEIVER_WORK_SECONDS)
        finally:
            arrivals.active[delivery_id] -= 1
            arrivals.active_per_hook[hook] -= 1
        arrivals.changed.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Leases:
    """What the database showed of the leases while the queue drained."""

    holders: set[str] = field(default_factory=set)
    """Every ``leased_by`` seen."""
    most_per_hook: Counter[int] = field(default_factory=Counter)
    """The most deliveries leased at once, per hook id."""


@dataclass(frozen=True)
class ScaleOutRun:
    published: set[tuple[str, int]]
    """(event_id, hook_id) of every delivery the API processes accepted."""
    arrivals: Arrivals
    deliveries: list[Row[Any]]
    attempts: list[Row[Any]]
    worker_ids: set[str]
    leases: Leases
    worker_errors: list[str]


async def watch_leases(database_url: str, leases: Leases, stop: asyncio.Event) -> None:
    """Poll the leases held (by which worker, on which hook) until ``stop``."""
    conn = await psycopg.AsyncConnection.connect(conninfo_of(database_url), autocommit=True)
    async with conn:
        while not stop.is_set():
            cursor = await conn.execute(
                "SELECT hook_id, leased_by FROM deliveries"
                " WHERE status = 'pending' AND leased_by IS NOT NULL"
            )
            per_hook: Counter[int] = Counter()
            for hook_id, leased_by in await cursor.fetchall():
                leases.holders.add(leased_by)
                per_hook[hook_id] += 1
            for hook_id, count in per_hook.items():
                leases.most_per_hook[hook_id] = max(leases.most_per_hook[hook_id], count)
            try:
                async with asyncio.timeout(0.05):
                    await stop.wait()
            except TimeoutError:
                pass


async def wait_until_delivered(
    database_url: str, arrivals: Arrivals, workers: list[Worker], apis: list[Api]
) -> None:
    deadline = time.monotonic() + DELIVERED_WITHIN
    while True:
        if arrivals.total >= DELIVERIES:
            rows = await query(
                database_url, "SELECT status, count(*) AS n FROM deliveries GROUP BY status"
            )
            if {row.status: row.n for row in rows} == {"succeeded": DELIVERIES}:
                return
        if time.monotonic() > deadline:
            logs = "\n".join(
                p.log_tail() for p in [*(w.process for w in workers), *(a.process for a in apis)]
            )
            pytest.fail(f"{arrivals.total} of {DELIVERIES} arrived in {DELIVERED_WITHIN} s\n{logs}")
        arrivals.changed.clear()
        try:
            async with asyncio.timeout(0.2):
                await arrivals.changed.wait()
        except TimeoutError:
            pass


async def publish_through(
    api: Api, publisher: Publisher, batches: list[list[dict[str, Any]]], hook_ids: list[int]
) -> set[tuple[str, int]]:
    published: set[tuple[str, int]] = set()
    for events in batches:
        results = await publisher.publish_batch(api.base_url, events)
        assert {result["hook_count"] for result in results} == {len(hook_ids)}
        published |= {(result["event_id"], hook_id) for result in results for hook_id in hook_ids}
    return published


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ScaleOutRun]:
    logdir = tmp_path_factory.mktemp("scale_out")
    with fresh_postgres_database("crohooks_e2e_scale") as url:
        env = process_env(url, per_hook_inflight=PER_HOOK_INFLIGHT)
        await run_cli("migrate", env=env, cwd=logdir)
        arrivals = Arrivals()
        leases = Leases()
        stop_watching = asyncio.Event()
        async with (
            counting_receiver(arrivals) as receiver_url,
            AsyncExitStack() as stack,
            httpx.AsyncClient(trust_env=False, timeout=30.0) as http,
        ):
            apis = [
                await stack.enter_async_context(api_server(f"api-{n}", env=env, logdir=logdir))
                for n in range(API_PROCESSES)
            ]
            workers = [
                await stack.enter_async_context(worker(f"worker-{n}", env=env, logdir=logdir))
                for n in range(WORKER_PROCESSES)
            ]
            publisher = Publisher(http, await mint_token(env, logdir))
            for api in apis:
                await api.ready()
            worker_ids = {await w.ready() for w in workers}

            hook_ids = [
                await publisher.create_hook(
                    apis[n % API_PROCESSES].base_url, f"{receiver_url}/hook/{n}", ["Job"]
                )
                for n in range(HOOKS)
            ]
            batches = [
                [{"event": "Job", "data": {"n": n}} for n in range(first, first + BATCH)]
                for first in range(0, EVENTS, BATCH)
            ]
            watcher = asyncio.create_task(watch_leases(url, leases, stop_watching))
            try:
                shares = await asyncio.gather(
                    *(
                        publish_through(api, publisher, batches[n::API_PROCESSES], hook_ids)
                        for n, api in enumerate(apis)
                    )
                )
                await wait_until_delivered(url, arrivals, workers, apis)
            finally:
                stop_watching.set()
                await watcher
            for w in workers:
                await w.stop()
            for api in apis:
                await api.stop()

        yield ScaleOutRun(
            published=set().union(*shares),
            arrivals=arrivals,
            deliveries=await query(
                url, "SELECT id, status, attempts, last_http_status FROM deliveries"
            ),
            attempts=await query(url, "SELECT delivery_id, number, http_status FROM attempts"),
            worker_ids=worker_ids,
            leases=leases,
            worker_errors=[
                f"{w.process.name}: {record.get('event')}"
                for w in workers
                for record in w.process.log_lines()
                if record.get("level") in ("error", "critical")
            ],
        )


def test_every_accepted_delivery_arrives_exactly_once_and_succeeds(run: ScaleOutRun) -> None:
    assert len(run.published) == DELIVERIES
    delivery_ids = {row.id for row in run.deliveries}
    assert len(delivery_ids) == DELIVERIES
    assert set(run.arrivals.count) == delivery_ids, "no delivery is lost"
    assert {(b["event_id"], b["hook_id"]) for b in run.arrivals.bodies.values()} == run.published
    assert run.arrivals.header_mismatches == []
    assert [d for d, n in run.arrivals.count.items() if n > 1] == [], "none arrives twice"

    assert {(row.status, row.attempts, row.last_http_status) for row in run.deliveries} == {
        ("succeeded", 1, 200)
    }
    assert len(run.attempts) == DELIVERIES
    assert {row.delivery_id for row in run.attempts} == delivery_ids
    assert {(row.number, row.http_status) for row in run.attempts} == {(1, 200)}


def test_no_delivery_is_sent_twice_at_the_same_time(run: ScaleOutRun) -> None:
    assert run.arrivals.overlapping == set()


def test_the_work_is_shared_between_workers(run: ScaleOutRun) -> None:
    assert len(run.worker_ids) == WORKER_PROCESSES
    assert run.leases.holders <= run.worker_ids
    assert len(run.leases.holders) >= 2, f"one worker did all the work: {run.leases.holders}"


def test_the_workers_log_no_errors(run: ScaleOutRun) -> None:
    assert run.worker_errors == []


def test_no_hook_has_more_than_its_cap_in_flight_across_workers(run: ScaleOutRun) -> None:
    """Spec 3.2 fairness: the per-hook cap holds for all workers together, not per worker.

    Seen at the receiver (requests being answered at once) and in the database (leases
    held at once, polled); either over the cap is a breach.
    """
    cap = PER_HOOK_INFLIGHT
    at_receiver = {h: n for h, n in run.arrivals.most_active_per_hook.items() if n > cap}
    in_database = {h: n for h, n in run.leases.most_per_hook.items() if n > cap}
    assert (at_receiver, in_database) == ({}, {}), f"in flight at once per hook id (cap {cap})"
