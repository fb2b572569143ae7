"""Ordering keys over HTTP: intake validation, the ordering setting, and what a real
receiver gets (body fields and ``X-Cro-Sequence``) from an in-process worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.test_delivery import make_hook, publish, running, wait_until
from tests.support.receiver import ReceivedRequest, Receiver, Reply

Auth = Callable[..., dict[str, str]]


@pytest.mark.parametrize(
    "ordering_key",
    ["", "k" * 257, 4711, None, ["Job:1"], "Job\x00:1"],
    ids=["empty", "too-long", "number", "null", "list", "nul"],
)
async def test_a_bad_ordering_key_is_a_400_and_queues_nothing(
    client: httpx.AsyncClient, auth: Auth, ordering_key: Any
) -> None:
    event = {"event": "Job", "data": {}, "ordering_key": ordering_key}
    for path, body, field in (
        ("/events", event, "PublishEventModel.ordering_key"),
        ("/events/batch", {"events": [event]}, "PublishBatchModel.events"),
    ):
        response = await client.post(path, json=body, headers=auth(roles=["System"]))
        assert response.status_code == 400, response.text
        error = response.json()
        assert set(error) == {"detail", "explanation", "field"}
        assert error["field"] == field
        assert "ordering_key" in error["detail"]


async def test_an_ordering_key_of_256_characters_is_accepted(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    body = {"event": "Job", "data": {}, "ordering_key": "k" * 256}
    response = await client.post("/events", json=body, headers=auth(roles=["System"]))
    assert response.status_code == 202, response.text


async def _create(client: httpx.AsyncClient, auth: Auth, url: str, tenant: int = 34) -> int:
    response = await client.post(
        "/hooks", json={"events": ["Job"], "url": url}, headers=auth(tenant=tenant)
    )
    assert response.status_code == 200, response.text
    hook_id: int = response.json()["id"]
    return hook_id


async def _settings(client: httpx.AsyncClient, auth: Auth, hook_id: int) -> dict[str, Any]:
    response = await client.get(f"/hooks/{hook_id}/settings", headers=auth())
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_the_ordering_mode_is_a_hook_setting(client: httpx.AsyncClient, auth: Auth) -> None:
    hook_id = await _create(client, auth, "https://a.example/")
    path = f"/hooks/{hook_id}/settings"
    dispatcher = auth(roles=["Dispatcher"])

    got = await client.get(path, headers=dispatcher)
    assert (got.status_code, got.json()["ordering"]) == (200, "all")
    changed = await client.patch(path + "/", json={"ordering": "latest"}, headers=dispatcher)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**got.json(), "ordering": "latest"}
    assert (await _settings(client, auth, hook_id))["ordering"] == "latest"
    # Other settings sent alone leave it as it is; null sets the default back.
    capped = await client.patch(path, json={"max_in_flight": 2}, headers=auth())
    assert capped.json()["ordering"] == "latest"
    reset = await client.patch(path, json={"ordering": None}, headers=auth())
    assert (reset.status_code, reset.json()["ordering"]) == (200, "all")
    # The CRO hook model is untouched by it, and the temporary resource is gone.
    assert "ordering" not in (await client.get(f"/hooks/{hook_id}", headers=auth())).json()
    gone = await client.patch(
        f"/hooks/{hook_id}/ordering", json={"ordering": "latest"}, headers=auth()
    )
    assert gone.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"ordering": "fifo"},
        {"ordering": "Latest"},
        {"ordering": 1},
        {"ordering": ["latest"]},
        {"ordering": "latest", "max_in_flight": 0},
    ],
    ids=["unknown", "case", "number", "list", "with-a-bad-neighbour"],
)
async def test_a_bad_ordering_mode_is_a_400_and_changes_nothing(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, Any]
) -> None:
    hook_id = await _create(client, auth, "https://a.example/")
    before = await _settings(client, auth, hook_id)
    response = await client.patch(f"/hooks/{hook_id}/settings", json=body, headers=auth())
    assert response.status_code == 400, response.text
    error = response.json()
    assert set(error) == {"detail", "explanation", "field"}
    bad = "max_in_flight" if "max_in_flight" in body else "ordering"
    assert error["field"] == f"HookSettingsModel.{bad}"
    assert await _settings(client, auth, hook_id) == before


async def test_the_ordering_setting_keeps_the_hooks_rules(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    hook_id = await _create(client, auth, "https://a.example/")
    other = await _create(client, auth, "https://b.example/", tenant=35)
    path = f"/hooks/{hook_id}/settings"
    latest = {"ordering": "latest"}

    foreign = await client.patch(f"/hooks/{other}/settings", json=latest, headers=auth())
    assert foreign.status_code == 404
    assert (await _settings(client, lambda **_: auth(tenant=35), other))["ordering"] == "all"
    assert (
        await client.patch("/hooks/999999/settings", json=latest, headers=auth())
    ).status_code == 404
    driver = auth(roles=["Driver"])
    assert (await client.patch(path, json=latest, headers=driver)).status_code == 403
    assert (await client.patch(path, json=latest)).status_code == 401
    await client.delete(f"/hooks/{hook_id}", headers=auth())
    assert (await client.patch(path, json=latest, headers=auth())).status_code == 409
    assert (await _settings(client, auth, hook_id))["ordering"] == "all"


async def test_the_ordering_setting_is_in_the_openapi_document(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    assert "/hooks/{hook_id}/ordering" not in document["paths"]
    schemas = document["components"]["schemas"]
    request = schemas["HookSettingsModel"]["properties"]["ordering"]
    assert {"type": "string", "enum": ["all", "latest"]} in request["anyOf"]
    assert schemas["HookSettingsResultModel"]["properties"]["ordering"]["enum"] == ["all", "latest"]
    assert "ordering" in schemas["HookSettingsResultModel"]["required"]
    publish_fields = schemas["PublishEventModel"]["properties"]
    assert publish_fields["ordering_key"]["maxLength"] == 256


async def test_a_receiver_gets_each_keys_updates_in_order_with_their_sequence(
    database_url: str, auth: Auth
) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        hook_id = await make_hook(env, auth, receiver.url, ["Job"])
        # Job:1's first update fails twice (retried 0.2 s apart); its others must wait.
        failures = [500, 500]

        def answer(request: ReceivedRequest) -> Reply:
            body = json.loads(request.body)
            if (body.get("ordering_key"), body.get("sequence")) == ("Job:1", 1) and failures:
                return Reply(failures.pop())
            return Reply(200)

        receiver.respond_with(answer)
        await publish(env, auth, "Job", {"state": "Scheduled"}, ordering_key="Job:1")
        await receiver.wait_for_requests(1)
        for state in ("Dispatched", "Completed"):
            await publish(env, auth, "Job", {"state": state}, ordering_key="Job:1")
        await publish(env, auth, "Job", {"state": "Scheduled"}, ordering_key="Job:2")
        await publish(env, auth, "Job", {"unkeyed": True})
        requests = await receiver.wait_for_requests(7)

        job1 = [r for r in requests if json.loads(r.body).get("ordering_key") == "Job:1"]
        bodies = [json.loads(r.body) for r in job1]
        assert [(b["sequence"], b["data"]["state"]) for b in bodies] == [
            (1, "Scheduled"),
            (1, "Scheduled"),
            (1, "Scheduled"),
            (2, "Dispatched"),
            (3, "Completed"),
        ]
        assert [r.header("X-Cro-Sequence") for r in job1] == ["1", "1", "1", "2", "3"]
        [job2] = [r for r in requests if json.loads(r.body).get("ordering_key") == "Job:2"]
        assert (json.loads(job2.body)["sequence"], job2.header("X-Cro-Sequence")) == (1, "1")
        # Job:2 did not wait for Job:1's failures.
        assert requests.index(job2) < requests.index(job1[-1])
        [unkeyed] = [r for r in requests if "unkeyed" in json.loads(r.body)["data"]]
        assert set(json.loads(unkeyed.body)) == {
            "data",
            "delivery_id",
            "event",
            "event_id",
            "hook_id",
            "tenant_id",
            "timestamp",
        }
        assert unkeyed.header("X-Cro-Sequence") is None

        # A redelivered update comes again with its old number, marked.
        first_id = bodies[0]["delivery_id"]

        async def settled() -> bool:
            listed = await env.client.get(
                f"/hooks/{hook_id}/deliveries?status=pending", headers=auth()
            )
            return bool(listed.json()["total_count"] == 0)

        await wait_until(settled)
        redeliver = await env.client.post(
            f"/hooks/{hook_id}/deliveries/{first_id}/redeliver", headers=auth()
        )
        assert redeliver.status_code == 202, redeliver.text
        [*_, again] = await receiver.wait_for_requests(8)
        assert json.loads(again.body)["delivery_id"] == first_id
        assert (again.header("X-Cro-Sequence"), again.header("X-Cro-Redelivery")) == ("1", "true")
