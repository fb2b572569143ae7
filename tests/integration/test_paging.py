"""Walking every page of a real list yields each item exactly once, in order, for every size."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from crohooks.model import NewEvent, Tenant
from crohooks.services import Services

Auth = Callable[..., dict[str, str]]
HOOKS = 11
DELETED = {3, 4, 8}


async def _walk(client: httpx.AsyncClient, path: str, limit: int, headers: dict[str, str]) -> Any:
    """Every page from the first to one past the last; the items and the reported total."""
    separator = "&" if "?" in path else "?"
    items: list[dict[str, Any]] = []
    index, total_pages = 1, 1
    while index <= total_pages + 1:
        response = await client.get(
            f"{path}{separator}page_limit={limit}&page_index={index}", headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        total_pages = page["total_pages"]
        assert total_pages == math.ceil(page["total_count"] / limit)
        assert (page["current_limit"], page["current_page"]) == (limit, index)
        expected = max(0, min(limit, page["total_count"] - (index - 1) * limit))
        assert len(page["results"]) == expected, (path, limit, index)
        items.extend(page["results"])
        index += 1
    return items, page["total_count"]


@pytest.fixture
async def hook_ids(services: Services) -> list[int]:
    ids = []
    for n in range(1, HOOKS + 1):
        hook = await services.hooks.create(
            34, url=f"https://h{n}.example/", events=("Job",), secret=None, field="url"
        )
        ids.append(hook.id)
        if n in DELETED:
            await services.hooks.delete(34, hook.id)
    await services.hooks.create(
        35, url="https://other.example/", events=("Job",), secret=None, field="url"
    )
    return ids


@pytest.mark.parametrize(
    ("query", "wanted"),
    [
        ("", lambda n: True),
        ("?deleted=true", lambda n: n in DELETED),
        ("?deleted=FALSE", lambda n: n not in DELETED),
    ],
    ids=["all", "deleted", "active"],
)
async def test_hook_pages_of_every_size(
    client: httpx.AsyncClient,
    auth: Auth,
    hook_ids: list[int],
    query: str,
    wanted: Callable[[int], bool],
) -> None:
    expected = [hook_id for n, hook_id in enumerate(hook_ids, start=1) if wanted(n)]
    for limit in range(1, HOOKS + 2):
        items, total = await _walk(client, f"/hooks{query}", limit, auth())
        assert [item["id"] for item in items] == expected, limit
        assert total == len(expected)


async def test_delivery_pages_of_every_size(
    client: httpx.AsyncClient, auth: Auth, services: Services, hook_ids: list[int]
) -> None:
    """Deliveries of one event share a creation time; the order must still be total."""
    for batch in range(3):
        await services.intake.publish(
            34, [NewEvent("Job", {"batch": batch, "n": n}) for n in range(3)]
        )
    path = f"/hooks/{hook_ids[0]}/deliveries"
    all_items, total = await _walk(client, path, 1000, auth())
    assert total == 9
    for limit in range(1, total + 2):
        items, _ = await _walk(client, path, limit, auth())
        assert [item["delivery_id"] for item in items] == [
            item["delivery_id"] for item in all_items
        ]
        assert len({item["delivery_id"] for item in items}) == total
    pending, _ = await _walk(client, f"{path}?status=pending", 4, auth())
    assert len(pending) == total


async def test_tenant_pages_of_every_size(
    client: httpx.AsyncClient, token: Callable[..., str], services: Services
) -> None:
    granted = [2, 3, 5, 7, 11, 13, 17]
    for tenant_id in [*granted, 4, 6]:
        if tenant_id == 13:
            continue
        await services.tenants.add(
            Tenant(
                id=tenant_id,
                name=f"T{tenant_id}",
                code=f"T{tenant_id}",
                created_on=datetime(2022, 8, 20, tzinfo=UTC),
            )
        )
    headers = {"Authorization": f"Bearer {token(roles=['Driver'], tenants=granted)}"}
    for limit in range(1, len(granted) + 2):
        items, total = await _walk(client, "/tenants", limit, headers)
        assert [item["id"] for item in items] == [2, 3, 5, 7, 11, 17]
        assert total == 6
