"""PostgreSQL mode when the database idles, stalls or goes away (issue: 500s and hangs).

The database is the real server; a loopback relay in front of it (tests/support/dbproxy)
freezes the path (a stalled server: connections open, no answer) or refuses it (a server
that is down), and restores it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from crohooks.auth.local import mint_local_token
from crohooks.clock import utc_now
from crohooks.services import Services
from crohooks.store.connect import open_database
from crohooks.store.connector import SETTLE_SECONDS, DatabaseLimits, Statement
from crohooks.store.migrate import migrate
from crohooks.store.ratelimits import RateLimitCounters
from tests.conftest import (
    POSTGRES_ADMIN_URL,
    api_client,
    fresh_postgres_database,
    make_settings,
    truncate_postgres,
)
from tests.support.dbproxy import DatabaseProxy, database_proxy

pytestmark = pytest.mark.postgres

IDLE_CHECK = 0.05
STEP_TIMEOUT = 1.0
READINESS_TIMEOUT = 0.5
MARGIN = 1.0
"""Scheduling slack on a busy two-core machine, on top of each configured bound."""

_PIN = Statement.shared("pin", "SELECT version FROM api_version_pins WHERE client = :c")
_ADD_PIN = Statement.shared(
    "add_pin",
    "INSERT INTO api_version_pins (client, version, updated_at) VALUES (:c, :version, :at)",
)
_REPIN = Statement.shared("repin", "UPDATE api_version_pins SET version = :version")
_LISTED = Statement(
    "listed",
    sqlite="SELECT client FROM api_version_pins"
    " WHERE client IN (SELECT value FROM json_each(:clients))",
    postgresql="SELECT client FROM api_version_pins WHERE client = ANY(%(clients)s)",
)


@pytest.fixture(scope="module")
def outage_database() -> Iterator[str]:
    with fresh_postgres_database("crohooks_outage") as url:
        migrate(url)
        yield url


async def test_a_healthy_connection_idle_past_the_idle_check_serves_every_path(
    outage_database: str,
) -> None:
    """The idle check ran SELECT 1 outside autocommit and left the connection in a
    transaction, so the next lone statement could not switch to autocommit: a 500 after
    a few idle seconds. One connection, so every path gets the connection that idled."""
    truncate_postgres(outage_database)
    db = open_database(outage_database, DatabaseLimits(idle_check=IDLE_CHECK, pool_size=1))

    async def transaction_write() -> object:
        async with db.write() as conn:
            return await conn.execute(_REPIN, {"version": "2021/04/07"})

    async def transaction_read() -> object:
        async with db.read() as conn:
            return await conn.fetch(_PIN, {"c": "idle"})

    paths: list[Callable[[], Awaitable[object]]] = [
        lambda: db.write_alone(_ADD_PIN, {"c": "idle", "version": "v", "at": utc_now()}),
        lambda: db.fetch(_PIN, {"c": "idle"}),
        lambda: db.fetch(_LISTED, {"clients": ["idle", "other"]}),
        lambda: RateLimitCounters(db).hit("idle-key", utc_now()),
        transaction_read,
        transaction_write,
    ]
    try:
        for path in paths:
            await asyncio.sleep(IDLE_CHECK * 3)
            await path()
        assert [row["version"] for row in await db.fetch(_PIN, {"c": "idle"})] == ["2021/04/07"]
    finally:
        await db.dispose()


async def test_the_api_answers_after_idle_gaps(outage_database: str) -> None:
    truncate_postgres(outage_database)
    settings = make_settings(outage_database, database_idle_check_seconds=IDLE_CHECK)
    services = Services.build(settings)
    try:
        async with api_client(services) as client:
            headers = _headers(services)
            created = await client.post(
                "/hooks", json={"events": ["Job"], "url": "http://127.0.0.1:9/"}, headers=headers
            )
            assert created.status_code == 200, created.text
            hook_url = f"/hooks/{created.json()['id']}"
            for _ in range(3):
                await asyncio.sleep(IDLE_CHECK * 3)
                statuses = await asyncio.gather(
                    *(client.get(hook_url, headers=headers) for _ in range(4)),
                    client.post("/events", json={"event": "Job", "data": {}}, headers=headers),
                    client.get("/readyz"),
                )
                assert [r.status_code for r in statuses] == [200, 200, 200, 200, 202, 200]
    finally:
        await services.aclose()


async def test_a_frozen_database_is_a_prompt_503(outage_database: str) -> None:
    """A stalled server used to hang every database-backed route, /readyz included."""
    truncate_postgres(outage_database)
    async with (
        database_proxy(outage_database) as proxy,
        _outage_api(proxy, outage_database) as (client, hook),
    ):
        headers = _headers(client.services)
        proxy.freeze()
        try:
            ready, ready_seconds = await _timed(client.http.get("/readyz"))
            assert ready.status_code == 503
            assert ready_seconds < READINESS_TIMEOUT + MARGIN
            answers = await asyncio.gather(
                _timed(client.http.get(hook, headers=headers)),
                _timed(client.http.get("/hooks", headers=headers)),
                _timed(client.http.post("/events", json=_event(), headers=headers)),
                _timed(client.http.get(hook + "/deliveries", headers=headers)),
            )
            for response, seconds in answers:
                _assert_unavailable(response)
                assert seconds < STEP_TIMEOUT + MARGIN
            # Still bounded once the pool's connections are all stuck behind the freeze.
            response, seconds = await _timed(client.http.get(hook, headers=headers))
            _assert_unavailable(response)
            assert seconds < STEP_TIMEOUT + MARGIN
        finally:
            await proxy.restore()
        await _recovers(client, hook)


async def test_a_stopped_database_is_503_with_retry_after_logged_once(
    outage_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    truncate_postgres(outage_database)
    async with (
        database_proxy(outage_database) as proxy,
        _outage_api(proxy, outage_database) as (client, hook),
    ):
        headers = _headers(client.services)
        capsys.readouterr()
        await proxy.refuse()
        for _ in range(5):
            answers = await asyncio.gather(
                client.http.get(hook, headers=headers),
                client.http.post("/events", json=_event(), headers=headers),
                client.http.get("/readyz"),
            )
            for response in answers:
                _assert_unavailable(response)
        await proxy.restore()
        await _recovers(client, hook)
        await asyncio.sleep(SETTLE_SECONDS)  # back only once it has answered for a while
        assert (await client.http.get(hook, headers=headers)).status_code == 200
        logged = capsys.readouterr().err
    assert logged.count("database unavailable") == 1, logged
    assert logged.count("database available again") == 1, logged
    assert "Traceback" not in logged
    assert "unhandled error" not in logged


async def test_a_read_only_database_refuses_writes_with_503(outage_database: str) -> None:
    """What a client meets after a failover to a standby that is not yet promoted."""
    truncate_postgres(outage_database)
    name = make_url(outage_database).database
    services = Services.build(make_settings(outage_database))
    try:
        async with api_client(services) as client:
            headers = _headers(services)
            created = await client.post(
                "/hooks", json={"events": ["Job"], "url": "http://127.0.0.1:9/"}, headers=headers
            )
            assert created.status_code == 200
            _admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            await services.db.dispose()  # new sessions take the setting
            try:
                hook = await client.get(f"/hooks/{created.json()['id']}", headers=headers)
                patched = await client.patch(
                    f"/hooks/{created.json()['id']}",
                    json={"url": "http://127.0.0.1:10/"},
                    headers=headers,
                )
                published = await client.post("/events", json=_event(), headers=headers)
            finally:
                _admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    finally:
        await services.aclose()
    # Every request counts against its tenant's rate limit in the database: a write too.
    _assert_unavailable(hook)
    _assert_unavailable(patched)
    _assert_unavailable(published)


def _admin(statement: str) -> None:
    conninfo = make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(statement)


@dataclass(frozen=True, slots=True)
class _Client:
    http: httpx.AsyncClient
    services: Services


@asynccontextmanager
async def _outage_api(
    proxy: DatabaseProxy, database_url: str
) -> AsyncIterator[tuple[_Client, str]]:
    """The app on the relayed database with short bounds, and one hook (the pool warm)."""
    settings = make_settings(
        proxy.url_for(database_url),
        database_timeout=STEP_TIMEOUT,
        database_pool_timeout=STEP_TIMEOUT,
        database_connect_timeout=2,
        readiness_timeout=READINESS_TIMEOUT,
    )
    services = Services.build(settings)
    try:
        async with api_client(services) as http:
            created = await http.post(
                "/hooks",
                json={"events": ["Job"], "url": "http://127.0.0.1:9/"},
                headers=_headers(services),
            )
            assert created.status_code == 200, created.text
            try:
                yield _Client(http, services), f"/hooks/{created.json()['id']}"
            finally:
                await proxy.restore()
    finally:
        await services.aclose()


async def _recovers(client: _Client, hook: str) -> None:
    """Once the path is back, the API answers normally again within a few seconds."""
    headers = _headers(client.services)
    deadline = time.monotonic() + 15
    while True:
        response = await client.http.get(hook, headers=headers)
        if response.status_code == 200:
            break
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the API did not recover"
        await asyncio.sleep(0.1)
    assert (await client.http.get("/readyz")).status_code == 200
    published = await client.http.post("/events", json=_event(), headers=headers)
    assert published.status_code == 202


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert set(response.json()) == {"detail", "explanation", "field"}


async def _timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


def _event() -> dict[str, object]:
    return {"event": "Job", "data": {"id": 1}}


def _headers(services: Services) -> dict[str, str]:
    token = mint_local_token(
        services.settings, subject="outage", roles=["Admin"], tenants=[34], ttl_seconds=600
    )
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "x-tenant-id": "34",
    }
