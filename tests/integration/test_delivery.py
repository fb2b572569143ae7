"""Publishing events and delivering them, with an in-process worker and real receivers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from crohooks.delivery.worker import DeliveryWorker
from crohooks.services import Services
from crohooks.store.connector import Statement
from tests.conftest import api_client, make_settings
from tests.support.receiver import Receiver, Reply

Auth = Callable[..., dict[str, str]]
SECRET = "VGhlIGxhenkgYnJvd24gZG9n"
ATTEMPTS_AND_DEFERRALS = Statement.shared(
    "attempts_and_deferrals", "SELECT attempts, deferrals FROM deliveries WHERE id = :id"
)


@dataclass
class Env:
    services: Services
    client: httpx.AsyncClient


@asynccontextmanager
async def running(database_url: str, **overrides: Any) -> AsyncIterator[Env]:
    """The API and one in-process worker on a shortened retry schedule."""
    values: dict[str, Any] = {
        "retry_schedule": "0.2,0.2,0.2",
        "retry_jitter": 0.0,
        "poll_interval": 0.1,
        "attempt_timeout": 5.0,
    }
    values.update(overrides)
    services = Services.build(make_settings(database_url, **values))
    stop = asyncio.Event()
    worker = DeliveryWorker(
        services.settings,
        services.queue,
        services.housekeeping,
        services.outbound,
    )
    task = asyncio.create_task(worker.run(stop))
    try:
        async with api_client(services) as client:
            yield Env(services, client)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=20)
        await services.aclose()


async def make_hook(env: Env, auth: Auth, url: str, events: list[str], tenant: int = 34) -> int:
    response = await env.client.post(
        "/hooks", json={"events": events, "url": url, "secret": SECRET}, headers=auth(tenant=tenant)
    )
    assert response.status_code == 200, response.text
    hook_id: int = response.json()["id"]
    return hook_id


async def publish(
    env: Env, auth: Auth, event: str, data: dict[str, Any], tenant: int = 34, **extra: Any
) -> dict[str, Any]:
    response = await env.client.post(
        "/events",
        json={"event": event, "data": data, **extra},
        headers=auth(tenant=tenant, roles=["System"]),
    )
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def delivery_statuses(env: Env, auth: Auth, hook_id: int) -> Counter[str]:
    listed = await env.client.get(f"/hooks/{hook_id}/deliveries?page_limit=1000", headers=auth())
    return Counter(d["status"] for d in listed.json()["results"])


async def test_every_hook_gets_exactly_its_deliveries(database_url: str, auth: Auth) -> None:
    async with (
        Receiver() as a,
        Receiver() as b,
        Receiver() as other_tenant,
        running(database_url) as env,
    ):
        hook_a = await make_hook(env, auth, a.url, ["Job", "Truck"])
        hook_b = await make_hook(env, auth, b.url, ["Job"])
        await make_hook(env, auth, other_tenant.url, ["Job", "Truck"], tenant=35)
        deleted = await make_hook(env, auth, b.url_for("/deleted"), ["Job"])
        await env.client.delete(f"/hooks/{deleted}", headers=auth())

        jobs = [await publish(env, auth, "Job", {"job": i}) for i in range(6)]
        trucks = [await publish(env, auth, "Truck", {"truck": i}) for i in range(4)]
        customer = await publish(env, auth, "Customer", {"x": 1})
        assert [j["hook_count"] for j in jobs] == [2] * 6
        assert [t["hook_count"] for t in trucks] == [1] * 4
        assert customer["hook_count"] == 0

        await a.wait_for_requests(10)
        await b.wait_for_requests(6)
        await wait_until(
            lambda: _all_succeeded(env, auth, [hook_a, hook_b], expected=16), timeout=10
        )

    assert len(a.requests) == 10
    assert len(b.requests) == 6
    assert other_tenant.requests == []
    assert all(r.path == "/" for r in b.requests)
    for received, hook_id in [(r, hook_a) for r in a.requests] + [(r, hook_b) for r in b.requests]:
        headers = dict(received.headers)
        payload = Webhook(SECRET).verify(received.body, headers)
        assert payload["hook_id"] == hook_id
        assert payload["tenant_id"] == 34
        assert payload["delivery_id"] == headers["X-Cro-Delivery"] == headers["webhook-id"]
        assert received.body == json.dumps(payload, sort_keys=True).encode()
    sent_jobs = {json.loads(r.body)["event_id"] for r in b.requests}
    assert sent_jobs == {j["event_id"] for j in jobs}
    data = sorted(json.loads(r.body)["data"].get("truck", -1) for r in a.requests)
    assert data == [-1] * 6 + [0, 1, 2, 3]


async def _all_succeeded(env: Env, auth: Auth, hook_ids: list[int], expected: int) -> bool:
    total = Counter[str]()
    for hook_id in hook_ids:
        total += await delivery_statuses(env, auth, hook_id)
    return total == Counter({"succeeded": expected})


async def test_a_receiver_that_comes_back_gets_the_delivery(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        receiver.enqueue(503, 500)
        hook_id = await make_hook(env, auth, receiver.url, ["Customer"])
        await publish(env, auth, "Customer", {"id": 7})
        requests = await receiver.wait_for_requests(3)
        await wait_until(lambda: _all_succeeded(env, auth, [hook_id], expected=1), timeout=10)
        ids = {r.header("X-Cro-Delivery") for r in requests}
        assert len(ids) == 1
        [delivery_id] = ids
        detail = (
            await env.client.get(f"/hooks/{hook_id}/deliveries/{delivery_id}", headers=auth())
        ).json()
    assert [a["http_status"] for a in detail["attempts"]] == [503, 500, 200]
    assert [a["number"] for a in detail["attempts"]] == [1, 2, 3]
    assert detail["attempt_count"] == 3
    assert detail["status"] == "succeeded"
    timestamps = [int(r.header("webhook-timestamp") or 0) for r in requests]
    assert timestamps == sorted(timestamps)
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    assert all(gap >= 0.15 for gap in gaps)


async def test_exhausted_and_gone_deliveries_stop(database_url: str, auth: Auth) -> None:
    async with Receiver() as failing, Receiver() as gone, running(database_url) as env:
        failing.respond(500)
        gone.respond(410)
        failing_hook = await make_hook(env, auth, failing.url, ["Job"])
        gone_hook = await make_hook(env, auth, gone.url, ["Job"])
        await publish(env, auth, "Job", {})
        await failing.wait_for_requests(4)
        await wait_until(lambda: _status_is(env, auth, failing_hook, "failed"), timeout=10)
        await wait_until(lambda: _status_is(env, auth, gone_hook, "failed"), timeout=10)
        await asyncio.sleep(0.5)
    assert len(failing.requests) == 4
    assert len(gone.requests) == 1


async def _status_is(env: Env, auth: Auth, hook_id: int, status: str) -> bool:
    return await delivery_statuses(env, auth, hook_id) == Counter({status: 1})


async def test_retry_after_is_respected(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        receiver.enqueue(Reply(429, headers={"Retry-After": "2"}))
        hook_id = await make_hook(env, auth, receiver.url, ["Job"])
        await publish(env, auth, "Job", {})
        first, second = await receiver.wait_for_requests(2, timeout=10)
        await wait_until(lambda: _status_is(env, auth, hook_id, "succeeded"))
    assert second.received_at - first.received_at >= 1.9


async def test_a_short_retry_after_does_not_use_up_the_schedule(
    database_url: str, auth: Auth
) -> None:
    """Issue 11: a receiver throttling with ``Retry-After: 1`` for more requests than the
    schedule has attempts still gets the delivery once it recovers, and the throttled
    attempts spent none of the schedule's retries."""
    throttled = 5  # the schedule below allows 4 attempts
    async with Receiver() as receiver, running(database_url, retry_schedule="3,3,3") as env:
        receiver.enqueue(*[Reply(429, headers={"Retry-After": "1"})] * throttled)
        hook_id = await make_hook(env, auth, receiver.url, ["Job"])
        await publish(env, auth, "Job", {})
        requests = await receiver.wait_for_requests(throttled + 1, timeout=20)
        await wait_until(lambda: _status_is(env, auth, hook_id, "succeeded"))
        [delivery_id] = {r.header("X-Cro-Delivery") for r in requests}
        detail = (
            await env.client.get(f"/hooks/{hook_id}/deliveries/{delivery_id}", headers=auth())
        ).json()
        (stored,) = await env.services.db.fetch(ATTEMPTS_AND_DEFERRALS, {"id": delivery_id})
    assert len(requests) == throttled + 1
    assert [a["http_status"] for a in detail["attempts"]] == [429] * throttled + [200]
    assert [a["number"] for a in detail["attempts"]] == list(range(1, throttled + 2))
    assert detail["attempt_count"] == throttled + 1
    # Every throttled attempt was a deferral: only the successful one used a step.
    assert (stored["attempts"], stored["deferrals"]) == (throttled + 1, throttled)
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    assert all(gap >= 0.9 for gap in gaps)


async def test_a_slow_hook_does_not_hold_back_others(database_url: str, auth: Auth) -> None:
    async with Receiver() as slow, Receiver() as fast:
        slow.respond(200, delay=30)
        async with running(database_url, worker_concurrency=8, per_hook_inflight=2) as env:
            await make_hook(env, auth, slow.url, ["Job"])
            fast_hook = await make_hook(env, auth, fast.url, ["Job"])
            for i in range(20):
                await publish(env, auth, "Job", {"n": i})
            started = time.monotonic()
            await fast.wait_for_requests(20, timeout=10)
            elapsed = time.monotonic() - started
            await wait_until(lambda: _fast_done(env, auth, fast_hook))
            in_flight_slow = len(slow.requests)
            await slow.close()
    assert elapsed < 5
    assert in_flight_slow <= 2


async def _fast_done(env: Env, auth: Auth, hook_id: int) -> bool:
    return await delivery_statuses(env, auth, hook_id) == Counter({"succeeded": 20})


async def test_idempotency_key_queues_once(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        await make_hook(env, auth, receiver.url, ["Truck"])
        first = await publish(env, auth, "Truck", {"a": 1}, idempotency_key="truck-7")
        again = await publish(env, auth, "Truck", {"a": 2}, idempotency_key="truck-7")
        other_tenant = await publish(
            env, auth, "Truck", {"a": 3}, tenant=35, idempotency_key="truck-7"
        )
        assert again == first
        assert other_tenant["event_id"] != first["event_id"]
        await receiver.wait_for_requests(1)
        await asyncio.sleep(0.3)
    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0].body)["data"] == {"a": 1}


async def test_batch_publishes_in_order(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        await make_hook(env, auth, receiver.url, ["Job", "Customer"])
        events = [{"event": "Job", "data": {"n": i}} for i in range(50)]
        events.append({"event": "Truck", "data": {}})
        response = await env.client.post(
            "/events/batch", json={"events": events}, headers=auth(roles=["Admin"])
        )
        assert response.status_code == 202
        results = response.json()["results"]
        assert [r["hook_count"] for r in results] == [1] * 50 + [0]
        await receiver.wait_for_requests(50)
    assert {json.loads(r.body)["event_id"] for r in receiver.requests} == {
        r["event_id"] for r in results[:50]
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"event": "Ping", "data": {}}, 400),
        ({"event": "Job", "data": []}, 400),
        ({"event": "Job"}, 400),
        ({"event": "Job", "data": {}, "extra": 1}, 400),
        ({"event": "Job", "data": {}, "idempotency_key": ""}, 400),
        ({"event": "Job", "data": {"x": "y" * (1024 * 1024)}}, 413),
    ],
)
async def test_bad_events_are_rejected_and_queue_nothing(
    client: httpx.AsyncClient, auth: Auth, services: Services, body: dict[str, Any], status: int
) -> None:
    await client.post(
        "/hooks", json={"events": ["Job"], "url": "https://a.example"}, headers=auth()
    )
    response = await client.post("/events", json=body, headers=auth(roles=["System"]))
    assert response.status_code == status
    assert set(response.json()) == {"detail", "explanation", "field"}
    assert await services.housekeeping.counts() == {}


async def test_batch_rejects_bad_items_and_queues_nothing(
    client: httpx.AsyncClient, auth: Auth, services: Services
) -> None:
    await client.post(
        "/hooks", json={"events": ["Job"], "url": "https://a.example"}, headers=auth()
    )
    events: list[dict[str, Any]] = [{"event": "Job", "data": {}}] * 3 + [
        {"event": "Nope", "data": {}}
    ]
    response = await client.post("/events/batch", json={"events": events}, headers=auth())
    assert response.status_code == 400
    assert response.json()["field"] == "PublishBatchModel.events"
    too_many = {"events": [{"event": "Job", "data": {}}] * 1001}
    assert (await client.post("/events/batch", json=too_many, headers=auth())).status_code == 400
    assert await services.housekeeping.counts() == {}


@pytest.mark.parametrize("role", ["Dispatcher", "Driver", "Public"])
async def test_only_system_and_admin_publish(
    client: httpx.AsyncClient, auth: Auth, role: str
) -> None:
    response = await client.post(
        "/events", json={"event": "Job", "data": {}}, headers=auth(roles=[role])
    )
    assert response.status_code == 403


async def test_redeliver_and_recover(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        receiver.respond(500)
        hook_id = await make_hook(env, auth, receiver.url, ["Job"])
        window_start = (await env.client.get(f"/hooks/{hook_id}", headers=auth())).json()
        for i in range(3):
            await publish(env, auth, "Job", {"n": i})
        await wait_until(lambda: _count_is(env, auth, hook_id, "failed", 3))
        failed = (
            await env.client.get(f"/hooks/{hook_id}/deliveries?status=failed", headers=auth())
        ).json()
        assert failed["total_count"] == 3
        receiver.respond(200)
        target = failed["results"][0]["delivery_id"]
        redo = await env.client.post(
            f"/hooks/{hook_id}/deliveries/{target}/redeliver", headers=auth()
        )
        assert redo.status_code == 202
        assert redo.json()["status"] == "pending"
        await wait_until(lambda: _count_is(env, auth, hook_id, "succeeded", 1))
        ids = [r.header("X-Cro-Delivery") for r in receiver.requests]
        assert ids[-1] == target

        again = await env.client.post(
            f"/hooks/{hook_id}/deliveries/{target}/redeliver", headers=auth()
        )
        assert again.status_code == 202
        await wait_until(lambda: _count_is(env, auth, hook_id, "succeeded", 1))

        recovered = await env.client.post(
            f"/hooks/{hook_id}/recover", json={"since": "2000-01-01T00:00:00"}, headers=auth()
        )
        assert recovered.status_code == 202
        assert recovered.json() == {"recovered": 2}
        await wait_until(lambda: _count_is(env, auth, hook_id, "succeeded", 3))

        foreign = await env.client.get(f"/hooks/{hook_id}/deliveries", headers=auth(tenant=35))
        assert foreign.status_code == 404
        foreign_one = await env.client.post(
            f"/hooks/{hook_id}/deliveries/{target}/redeliver", headers=auth(tenant=35)
        )
        assert foreign_one.status_code == 404
        bad = await env.client.post(
            f"/hooks/{hook_id}/recover", json={"since": "yesterday"}, headers=auth()
        )
        assert bad.status_code == 400
        assert bad.json()["field"] == "RecoverModel.since"
        missing = await env.client.get(
            f"/hooks/{hook_id}/deliveries/00000000-0000-0000-0000-000000000000", headers=auth()
        )
        assert missing.status_code == 404
    assert window_start["deleted_at"] is None


async def _count_is(env: Env, auth: Auth, hook_id: int, status: str, count: int) -> bool:
    return (await delivery_statuses(env, auth, hook_id))[status] == count


async def test_deleting_a_hook_cancels_its_queue(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver:
        receiver.respond(500)
        async with running(database_url, retry_schedule="30,30") as env:
            hook_id = await make_hook(env, auth, receiver.url, ["Job"])
            await publish(env, auth, "Job", {})
            await receiver.wait_for_requests(1)
            await wait_until(lambda: _attempted(env, auth, hook_id))
            await env.client.delete(f"/hooks/{hook_id}", headers=auth())
            statuses = await delivery_statuses(env, auth, hook_id)
    assert statuses == Counter({"cancelled": 1})
    assert len(receiver.requests) == 1


async def _attempted(env: Env, auth: Auth, hook_id: int) -> bool:
    listed = (await env.client.get(f"/hooks/{hook_id}/deliveries", headers=auth())).json()
    return bool(listed["results"]) and listed["results"][0]["attempt_count"] == 1


async def test_a_deep_backlog_on_a_slow_hook_does_not_starve_the_others(
    database_url: str, auth: Auth
) -> None:
    async with Receiver() as slow, Receiver() as fast:
        slow.respond(200, delay=30)
        async with running(database_url, worker_concurrency=8, per_hook_inflight=2) as env:
            await make_hook(env, auth, slow.url, ["Job"])
            fast_hook = await make_hook(env, auth, fast.url, ["Truck"])
            backlog = [{"event": "Job", "data": {"n": i}} for i in range(200)]
            response = await env.client.post(
                "/events/batch", json={"events": backlog}, headers=auth()
            )
            assert response.status_code == 202
            await slow.wait_for_requests(2)
            for i in range(10):
                await publish(env, auth, "Truck", {"n": i})
            await fast.wait_for_requests(10, timeout=10)
            await wait_until(lambda: _count_is(env, auth, fast_hook, "succeeded", 10))
            in_flight_slow = len(slow.requests)
            await slow.close()
    assert in_flight_slow == 2


async def test_metrics_count_deliveries(database_url: str, auth: Auth) -> None:
    from tests.integration.test_ops import metric

    async with Receiver() as receiver, running(database_url) as env:
        before = (await env.client.get("/metrics")).text
        receiver.enqueue(500)
        hook_id = await make_hook(env, auth, receiver.url, ["Job"])
        await publish(env, auth, "Job", {})
        await wait_until(lambda: _status_is(env, auth, hook_id, "succeeded"))
        after = (await env.client.get("/metrics")).text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("crohooks_deliveries_total", outcome="retrying") == 1
    assert grew("crohooks_deliveries_total", outcome="succeeded") == 1
    assert grew("crohooks_delivery_attempt_seconds_count") == 2
    assert metric(after, "crohooks_queue_depth", state="succeeded") == 1
    assert metric(after, "crohooks_queue_depth", state="pending") == 0
