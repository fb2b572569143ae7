"""The delivery log's answers to malformed requests, and what an attempt records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

Auth = Callable[..., dict[str, str]]


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
