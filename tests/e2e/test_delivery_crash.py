"""Spec 3.2 with real processes: a worker killed mid-attempt loses nothing.

The hook URLs stall, so the first worker's requests are in flight when it gets SIGKILL;
its leases expire (CROHOOKS_LEASE_SECONDS=2) and a second worker delivers everything, at
least once, while the receiver now answers 200 at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_postgres_database
from tests.e2e.processes import (
    Publisher,
    api_server,
    mint_token,
    process_env,
    query,
    run_cli,
    worker,
)
from tests.support.receiver import ReceivedRequest, Receiver, Reply

HOOKS = 3
EVENTS = 6
PER_HOOK_INFLIGHT = 2
STALLED = HOOKS * PER_HOOK_INFLIGHT
"""How many requests the first worker has in flight when it dies; the rest wait unclaimed."""
DELIVERED_WITHIN = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
        return
    with fresh_postgres_database("crohooks_e2e_crash") as url:
        yield url


async def wait_until_all_succeeded(database_url: str, expected: int, logs: str) -> None:
    deadline = time.monotonic() + DELIVERED_WITHIN
    while True:
        rows = await query(
            database_url, "SELECT status, count(*) AS n FROM deliveries GROUP BY status"
        )
        counts = {row.status: row.n for row in rows}
        if counts == {"succeeded": expected}:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"deliveries after {DELIVERED_WITHIN} s: {counts}\n{logs}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_worker_killed_mid_attempt_loses_no_delivery(
    fresh_database_url: str, tmp_path: Path
) -> None:
    url = fresh_database_url
    # A short lease (and so a short attempt timeout: a lease must outlast an attempt)
    # makes the dead worker's deliveries claimable again within seconds.
    env = process_env(
        url,
        lease_seconds=2,
        attempt_timeout=1.5,
        retry_schedule="1,1,1,1,1",
        per_hook_inflight=PER_HOOK_INFLIGHT,
    )
    await run_cli("migrate", env=env, cwd=tmp_path)
    answered: list[ReceivedRequest] = []

    def answer_at_once(request: ReceivedRequest) -> Reply:
        answered.append(request)
        return Reply(200)

    async with (
        Receiver() as receiver,
        api_server("api", env=env, logdir=tmp_path) as api,
        httpx.AsyncClient(trust_env=False, timeout=10.0) as http,
    ):
        receiver.respond(200, delay=30)
        await api.ready()
        publisher = Publisher(http, await mint_token(env, tmp_path))
        hook_ids = [
            await publisher.create_hook(api.base_url, receiver.url_for(f"/hook/{n}"), ["Customer"])
            for n in range(HOOKS)
        ]
        results = await publisher.publish_batch(
            api.base_url, [{"event": "Customer", "data": {"n": n}} for n in range(EVENTS)]
        )
        assert [result["hook_count"] for result in results] == [HOOKS] * EVENTS
        published = {(result["event_id"], hook_id) for result in results for hook_id in hook_ids}

        async with worker("worker-1", env=env, logdir=tmp_path) as first:
            first_id = await first.ready()
            await receiver.wait_for_requests(STALLED, timeout=20)
            await first.process.kill()

        rows = await query(url, "SELECT id, status, attempts, leased_by FROM deliveries")
        assert len(rows) == HOOKS * EVENTS
        assert {(row.status, row.attempts) for row in rows} == {("pending", 0)}
        leased = {row.id for row in rows if row.leased_by == first_id}
        stalled = {request.header("X-Cro-Delivery") for request in receiver.requests}
        assert len(stalled) >= STALLED
        assert stalled <= leased, "what was in flight is still leased by the dead worker"
        assert await query(url, "SELECT id FROM attempts") == [], "no outcome was written"

        receiver.respond_with(answer_at_once)
        async with worker("worker-2", env=env, logdir=tmp_path) as second:
            await second.ready()
            await wait_until_all_succeeded(url, HOOKS * EVENTS, second.process.log_tail())
            await second.stop()
            errors = [r for r in second.process.log_lines() if r.get("level") == "error"]
            assert errors == [], second.process.log_tail()
        await api.stop()

    rows = await query(url, "SELECT id, last_http_status FROM deliveries")
    assert {row.last_http_status for row in rows} == {200}
    delivery_ids = {row.id for row in rows}

    bodies = [json.loads(request.body) for request in answered]
    for request, body in zip(answered, bodies, strict=True):
        assert body["delivery_id"] == request.header("X-Cro-Delivery")
    assert {(body["event_id"], body["hook_id"]) for body in bodies} == published
    answered_ids = {body["delivery_id"] for body in bodies}
    assert answered_ids == delivery_ids, "every delivery reached its hook and got a 200"

    logged = await query(url, "SELECT delivery_id, http_status FROM attempts")
    assert {row.delivery_id for row in logged if row.http_status == 200} == delivery_ids
