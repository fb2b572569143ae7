"""Rate limits, body limits and slow bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from crohooks.services import Services
from tests.conftest import api_client, make_settings
from tests.support.receiver import Receiver

Auth = Callable[..., dict[str, str]]


async def test_api_is_limited_per_tenant(database_url: str, auth: Auth) -> None:
    services = Services.build(make_settings(database_url, rate_limit_api_per_minute=5))
    try:
        async with api_client(services) as client:
            statuses = [(await client.get("/hooks", headers=auth())).status_code for _ in range(6)]
            limited = await client.get("/hooks", headers=auth())
            other = await client.get("/hooks", headers=auth(tenant=35))
    finally:
        await services.aclose()
    assert statuses == [200] * 5 + [429]
    assert limited.status_code == 429
    assert set(limited.json()) == {"detail", "explanation", "field"}
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["x-request-id"]
    assert other.status_code == 200


@asynccontextmanager
async def two_api_processes(
    request: pytest.FixtureRequest, *, limit: int
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two API processes (two Services) on one PostgreSQL database, each tenant allowed
    ``limit`` requests a minute."""
    from tests.conftest import truncate_postgres

    url: str = request.getfixturevalue("postgres_database")
    truncate_postgres(url)
    first = Services.build(make_settings(url, rate_limit_api_per_minute=limit))
    second = Services.build(make_settings(url, rate_limit_api_per_minute=limit))
    try:
        async with api_client(first) as a, api_client(second) as b:
            yield a, b
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.postgres
async def test_postgres_limits_hold_across_processes(
    auth: Auth, request: pytest.FixtureRequest
) -> None:
    """Two API processes share one tenant's budget."""
    async with two_api_processes(request, limit=4) as (a, b):
        statuses = [
            (await client.get("/hooks", headers=auth())).status_code
            for client in (a, b, a, b, a, b)
        ]
    assert statuses == [200, 200, 200, 200, 429, 429]


@pytest.mark.postgres
async def test_postgres_processes_share_pins_beside_the_tenant_budget(
    auth: Auth, request: pytest.FixtureRequest
) -> None:
    """One statement counts a request and reads its client's pin: a pin named in one
    process holds in the other, on answers within the budget and on the 429 past it."""
    async with two_api_processes(request, limit=3) as (a, b):
        named = await a.get("/hooks", headers=auth(**{"x-api-version": "2021/11/04"}))
        answers = [named] + [await c.get("/hooks", headers=auth()) for c in (b, a, b)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [r.headers["x-api-version"] for r in answers] == ["2021/11/04"] * 4


async def test_ping_is_limited_per_hook(database_url: str, auth: Auth) -> None:
    services = Services.build(make_settings(database_url, rate_limit_ping_per_minute=2))
    try:
        async with Receiver() as receiver, api_client(services) as client:
            ids = []
            for path in ("/a", "/b"):
                created = await client.post(
                    "/hooks", json={"events": [], "url": receiver.url_for(path)}, headers=auth()
                )
                ids.append(created.json()["id"])
            pings = [
                (await client.get(f"/hooks/{ids[0]}/ping", headers=auth())).status_code
                for _ in range(3)
            ]
            other = await client.get(f"/hooks/{ids[1]}/ping", headers=auth())
            limited = await client.get(f"/hooks/{ids[0]}/ping", headers=auth())
    finally:
        await services.aclose()
    assert pings == [200, 200, 429]
    assert other.status_code == 200
    assert "retry-after" in limited.headers
    assert len([r for r in receiver.requests if r.path == "/a"]) == 2


async def test_a_pinged_hook_that_is_missing_counts_and_the_limit_answers_first(
    database_url: str, auth: Auth
) -> None:
    """The hook is looked up beside the rate-limit hit; over the limit, 429 wins over 404."""
    services = Services.build(make_settings(database_url, rate_limit_ping_per_minute=1))
    try:
        async with api_client(services) as client:
            first = await client.get("/hooks/999/ping", headers=auth())
            second = await client.get("/hooks/999/ping", headers=auth())
    finally:
        await services.aclose()
    assert first.status_code == 404
    assert first.json()["field"] == "PathParameters.hook_id"
    assert second.status_code == 429
    assert "retry-after" in second.headers


async def test_a_body_that_trickles_in_is_cut_off(database_url: str, auth: Auth) -> None:
    services = Services.build(make_settings(database_url, body_read_timeout=0.5))

    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"events": [], '
        await asyncio.sleep(3)
        yield b'"url": "https://slow.example"}'

    try:
        async with api_client(services) as client:
            response = await client.post("/hooks", content=trickle(), headers=auth())
            listed = await client.get("/hooks", headers=auth())
    finally:
        await services.aclose()
    assert response.status_code == 408
    assert set(response.json()) == {"detail", "explanation", "field"}
    assert listed.json()["total_count"] == 0


@pytest.mark.parametrize(
    ("path", "size"),
    [("/hooks", 64 * 1024), ("/events", 1024 * 1024), ("/events/batch", 16 * 1024 * 1024)],
)
async def test_bodies_over_the_limit_are_413(
    client: Any, auth: Auth, services: Services, path: str, size: int
) -> None:
    body = b'{"x": "' + b"a" * size + b'"}'
    response = await client.post(path, content=body, headers=auth(roles=["Admin"]))
    assert response.status_code == 413
    assert await services.housekeeping.counts() == {}
