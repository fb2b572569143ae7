"""The delivery log's answers to malformed requests, and what an attempt records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crohooks.services import Services
from crohooks.store.outcomes import INSERT_ATTEMPT
from tests.support.receiver import Receiver, Reply

Auth = Callable[..., dict[str, str]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "explanation", "field"}
    return body


async def _hook(client: httpx.AsyncClient, auth: Auth, url: str = "https://a.example") -> int:
    response = await client.post("/hooks", json={"events": ["Job"], "url": url}, headers=auth())
    assert response.status_code == 200, response.text
    hook_id: int = response.json()["id"]
    return hook_id


async def test_a_delivery_id_that_is_no_uuid_is_400(client: httpx.AsyncClient, auth: Auth) -> None:
    hook_id = await _hook(client, auth)
    for method, path in (
        ("GET", f"/hooks/{hook_id}/deliveries/not-a-uuid"),
        ("POST", f"/hooks/{hook_id}/deliveries/not-a-uuid/redeliver"),
    ):
        response = await client.request(method, path, headers=auth())
        assert response.status_code == 400, path
        assert error_of(response)["field"] == "PathParameters.delivery_id"
    missing = await client.get(
        f"/hooks/{hook_id}/deliveries/00000000-0000-0000-0000-000000000000", headers=auth()
    )
    assert missing.status_code == 404


async def test_recover_with_until_not_after_since_is_400(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    hook_id = await _hook(client, auth)
    for until in ("2020-01-01T00:00:00", "2019-12-31T23:59:59"):
        response = await client.post(
            f"/hooks/{hook_id}/recover",
            json={"since": "2020-01-01T00:00:00", "until": until},
            headers=auth(),
        )
        assert response.status_code == 400
        assert error_of(response)["field"] == "RecoverModel.until"
    fine = await client.post(
        f"/hooks/{hook_id}/recover",
        json={"since": "2020-01-01T00:00:00", "until": "2020-01-02T00:00:00"},
        headers=auth(),
    )
    assert fine.status_code == 202
    assert fine.json() == {"recovered": 0}


async def test_an_attempt_answered_500_says_so_and_lists_headers_as_pairs(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.enqueue(
        Reply(500, headers=[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], body=b"oops")
    )
    hook_id = await _hook(client, auth, receiver.url)
    ping = (await client.get(f"/hooks/{hook_id}/ping", headers=auth())).json()
    # The ping answers in CRO's words whatever the status; the log says what it was.
    assert ping["http_status"] == 500
    assert ping["message"] == "No exceptions raised."
    detail = (
        await client.get(f"/hooks/{hook_id}/deliveries/{ping['delivery_id']}", headers=auth())
    ).json()
    assert detail["last_message"] == "HTTP 500 Internal Server Error"
    [attempt] = detail["attempts"]
    assert attempt["message"] == "HTTP 500 Internal Server Error"
    assert ["X-Cro-Delivery", ping["delivery_id"]] in attempt["request_headers"]
    assert all(len(pair) == 2 for pair in attempt["request_headers"])
    cookies = [value for name, value in attempt["response_headers"] if name == "Set-Cookie"]
    assert cookies == ["a=1", "b=2"]
    assert attempt["response_body"] == "oops"


async def test_a_2xx_attempt_keeps_cros_wording(
    client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.enqueue(204)
    hook_id = await _hook(client, auth, receiver.url)
    ping = (await client.get(f"/hooks/{hook_id}/ping", headers=auth())).json()
    assert ping["message"] == "No exceptions raised."
    detail = (
        await client.get(f"/hooks/{hook_id}/deliveries/{ping['delivery_id']}", headers=auth())
    ).json()
    assert detail["attempts"][0]["message"] == "No exceptions raised."


async def test_an_attempt_stored_before_this_release_still_renders(
    client: httpx.AsyncClient, auth: Auth, services: Services, receiver: Receiver
) -> None:
    """Rows written before the log said what a non-2xx was, as stored then: request
    headers as a JSON object, response headers as pairs, CRO's message for a 500."""
    hook_id = await _hook(client, auth, receiver.url)
    ping = (await client.get(f"/hooks/{hook_id}/ping", headers=auth())).json()
    old = {
        "delivery_id": ping["delivery_id"],
        "number": 2,
        "started_at": datetime(2022, 8, 20, 1, 45, 52, tzinfo=UTC),
        "duration_ms": 1.5,
        "http_status": 500,
        "message": "No exceptions raised.",
        "request_headers": '{"Content-Type": "application/json", "X-Cro-Event": "Ping"}',
        "response_headers": '[["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]',
        "response_body": "",
    }
    async with services.db.write() as conn:
        await conn.execute(INSERT_ATTEMPT, old)
    detail = await client.get(f"/hooks/{hook_id}/deliveries/{ping['delivery_id']}", headers=auth())
    assert detail.status_code == 200
    stored = next(a for a in detail.json()["attempts"] if a["number"] == 2)
    assert stored["request_headers"] == [
        ["Content-Type", "application/json"],
        ["X-Cro-Event", "Ping"],
    ]
    assert stored["response_headers"] == [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]
    assert stored["message"] == "No exceptions raised."
