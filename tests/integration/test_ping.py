"""Ping Hook (the seed page) against real receivers on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from crohooks.services import Services
from tests.conftest import api_client, make_settings
from tests.support.receiver import Receiver, unused_port

Auth = Callable[..., dict[str, str]]
SECRET = "VGhlIGxhenkgYnJvd24gZG9n"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def _hook(client: httpx.AsyncClient, auth: Auth, url: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(
        "/hooks", json={"events": [], "url": url, "secret": SECRET, **extra}, headers=auth()
    )
    assert response.status_code == 200, response.text
    hook: dict[str, Any] = response.json()
    return hook


async def test_ping_delivers_a_signed_ping(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    hook = await _hook(client, auth, receiver.url)
    response = await client.get(f"/hooks/{hook['id']}/ping/", headers=auth())
    assert response.status_code == 200
    result = response.json()
    assert set(result) == {"delivery_id", "http_status", "message"}
    assert result["http_status"] == 200
    assert result["message"] == "No exceptions raised."
    assert response.headers["allow"] == "GET"
    assert response.content == json.dumps(result, sort_keys=True).encode()

    [received] = receiver.requests
    body = received.body
    payload = json.loads(body)
    assert payload == {
        "data": {"hook_id": hook["id"], "url": receiver.url},
        "delivery_id": result["delivery_id"],
        "event": "Ping",
        "event_id": payload["event_id"],
        "hook_id": hook["id"],
        "tenant_id": 34,
        "timestamp": payload["timestamp"],
    }
    assert body == json.dumps(payload, sort_keys=True).encode()
    assert received.header("X-Cro-Event") == "Ping"
    assert received.header("X-Cro-Delivery") == result["delivery_id"]
    assert received.header("X-Cro-Hook-Id") == str(hook["id"])
    assert received.header(
        "User-Agent",
    ).startswith("crohooks/")  # type: ignore[union-attr]
    sha1 = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    sha256 = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert received.header("X-Cro-Signature") == f"sha1={sha1}"
    assert received.header("X-Cro-Signature-256") == f"sha256={sha256}"
    assert response.headers["x-cro-signature"] == received.header("X-Cro-Signature")
    headers = {k: v for k, v in received.headers}
    assert Webhook(SECRET).verify(body, headers) == payload
    assert abs(int(received.header("webhook-timestamp") or 0) - time.time()) < 60

    got = (await client.get(f"/hooks/{hook['id']}", headers=auth())).json()
    assert got["last_http_success"] is not None
    assert got["last_http_fail"] is None


@pytest.mark.parametrize("status", [500, 404, 302, 301, 201])
async def test_ping_reports_the_receivers_status(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver, status: int
) -> None:
    receiver.respond(status, headers={"Location": receiver.url_for("/elsewhere")})
    hook = await _hook(client, auth, receiver.url)
    result = (await client.get(f"/hooks/{hook['id']}/ping", headers=auth())).json()
    assert result["http_status"] == status
    assert result["message"] == "No exceptions raised."
    assert [r.path for r in receiver.requests] == ["/"]
    got = (await client.get(f"/hooks/{hook['id']}", headers=auth())).json()
    if status == 201:
        assert got["last_http_success"] is not None
        assert got["last_http_fail"] is None
    else:
        assert got["last_http_fail"] is not None
        assert got["last_http_success"] is None


async def test_ping_of_a_closed_port_is_minus_one(client: httpx.AsyncClient, auth: Auth) -> None:
    hook = await _hook(client, auth, f"http://127.0.0.1:{unused_port()}/")
    response = await client.get(f"/hooks/{hook['id']}/ping", headers=auth())
    assert response.status_code == 200
    result = response.json()
    assert result["http_status"] == -1
    assert result["message"].startswith("ConnectionRefused: ")
    got = (await client.get(f"/hooks/{hook['id']}", headers=auth())).json()
    assert got["last_http_fail"] is not None


async def test_ping_of_a_stalling_receiver_times_out(
    database_url: str, auth: Auth, receiver: Receiver
) -> None:
    receiver.respond(200, delay=30)
    services = Services.build(make_settings(database_url, ping_timeout=1.0))
    try:
        async with api_client(services) as client:
            hook = await _hook(client, auth, receiver.url)
            started = time.monotonic()
            result = (await client.get(f"/hooks/{hook['id']}/ping", headers=auth())).json()
            elapsed = time.monotonic() - started
    finally:
        await services.aclose()
    assert result["http_status"] == -1
    assert result["message"].startswith("ReadTimeout: ")
    assert elapsed < 5


async def test_ping_to_a_blocked_destination_sends_nothing(
    database_url: str, auth: Auth, receiver: Receiver
) -> None:
    # A literal loopback URL is refused at create without an allowed network, so the hook
    # is made while loopback is allowed and pinged once the operator has narrowed it.
    allowing = Services.build(make_settings(database_url))
    try:
        async with api_client(allowing) as client:
            hook = await _hook(client, auth, receiver.url)
    finally:
        await allowing.aclose()
    services = Services.build(make_settings(database_url, allowed_networks=""))
    try:
        async with api_client(services) as client:
            result = (await client.get(f"/hooks/{hook['id']}/ping", headers=auth())).json()
            detail = (
                await client.get(
                    f"/hooks/{hook['id']}/deliveries/{result['delivery_id']}", headers=auth()
                )
            ).json()
    finally:
        await services.aclose()
    assert result["http_status"] == -1
    assert result["message"] == "DestinationBlocked: 127.0.0.1 is not a public address"
    assert receiver.connections_accepted == 0
    assert detail["status"] == "failed"
    assert detail["attempts"][0]["http_status"] == -1


async def test_each_ping_is_a_recorded_delivery(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    hook = await _hook(client, auth, receiver.url)
    receiver.enqueue(200, 503)
    first = (await client.get(f"/hooks/{hook['id']}/ping", headers=auth())).json()
    second = (await client.get(f"/hooks/{hook['id']}/ping", headers=auth())).json()
    assert first["delivery_id"] != second["delivery_id"]
    assert second["http_status"] == 503
    listed = (await client.get(f"/hooks/{hook['id']}/deliveries", headers=auth())).json()
    assert {d["delivery_id"] for d in listed["results"]} == {
        first["delivery_id"],
        second["delivery_id"],
    }
    detail = (
        await client.get(f"/hooks/{hook['id']}/deliveries/{second['delivery_id']}", headers=auth())
    ).json()
    assert detail["event"] == "Ping"
    assert detail["status"] == "failed"
    assert detail["next_attempt_at"] is None
    [attempt] = detail["attempts"]
    assert attempt["http_status"] == 503
    assert ["X-Cro-Delivery", second["delivery_id"]] in attempt["request_headers"]
    assert json.loads(detail["request_body"])["delivery_id"] == second["delivery_id"]
    assert len(receiver.requests) == 2
    got = (await client.get(f"/hooks/{hook['id']}", headers=auth())).json()
    assert got["last_http_success"] < got["last_http_fail"]


async def test_ping_of_deleted_or_foreign_hook_is_404(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    hook = await _hook(client, auth, receiver.url)
    foreign = await client.get(f"/hooks/{hook['id']}/ping", headers=auth(tenant=35))
    assert foreign.status_code == 404
    await client.delete(f"/hooks/{hook['id']}", headers=auth())
    deleted = await client.get(f"/hooks/{hook['id']}/ping", headers=auth())
    assert deleted.status_code == 404
    assert set(deleted.json()) == {"detail", "explanation", "field"}
    assert receiver.requests == []


async def test_ping_signs_with_the_rotated_secret_too(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    hook = await _hook(client, auth, receiver.url)
    new_secret = base64.b64encode(b"a brand new secret key!!").decode()
    await client.patch(
        f"/hooks/{hook['id']}", json={"url": receiver.url, "secret": new_secret}, headers=auth()
    )
    await client.get(f"/hooks/{hook['id']}/ping", headers=auth())
    [received] = receiver.requests
    headers = {k: v for k, v in received.headers}
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(received.body, headers)
    Webhook(new_secret).verify(received.body, headers)
    sha256 = hmac.new(new_secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert headers["X-Cro-Signature-256"] == f"sha256={sha256}"
