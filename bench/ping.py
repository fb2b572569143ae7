"""Ping overhead: ``GET /hooks/{id}/ping`` against a direct POST to the same receiver.

One request at a time from this process, the two kinds alternating so both see the same
machine; the difference of their medians is what crohooks adds to a ping (parsing,
authorisation, reading the hook, signing, recording the delivery, answering).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import (
    SECRET,
    TENANT,
    BenchError,
    Receiver,
    api_process,
    median,
    percentile,
    process_env,
    run_cli,
    settings_for,
)
from crohooks.auth.local import mint_local_token
from crohooks.clock import to_cro, utc_now
from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.signing import sign_delivery

WARMUP = 50


@dataclass(frozen=True)
class PingFigures:
    ping_ms: list[float]
    direct_ms: list[float]

    @property
    def p50_overhead_ms(self) -> float:
        return median(self.ping_ms) - median(self.direct_ms)

    @property
    def p99_overhead_ms(self) -> float:
        return percentile(self.ping_ms, 0.99) - percentile(self.direct_ms, 0.99)


def _ping_like_body(hook_id: int, url: str) -> tuple[str, bytes]:
    delivery_id = str(uuid.uuid4())
    timestamp = to_cro(utc_now())
    assert timestamp is not None
    body = render_delivery_body(
        data_json=json.dumps({"hook_id": hook_id, "url": url}, sort_keys=True),
        delivery_id=delivery_id,
        event="Ping",
        event_id=str(uuid.uuid4()),
        hook_id=hook_id,
        tenant_id=TENANT,
        timestamp=timestamp,
    )
    return delivery_id, body.encode()


async def measure(
    receiver: Receiver, workdir: Path, database_url: str, *, requests: int
) -> PingFigures:
    env = process_env(database_url)
    await run_cli("migrate", env=env, workdir=workdir)
    token = mint_local_token(
        settings_for(database_url), subject="bench", roles=["Admin"], tenants=[TENANT]
    )
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": str(TENANT)}
    hook_url = receiver.url_for("/ping-target")
    async with (
        api_process("api-ping", env, workdir, worker=False) as base_url,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(
            f"{base_url}/hooks",
            json={"url": hook_url, "events": ["Job"], "secret": SECRET},
            headers=headers,
        ) as response:
            if response.status != 200:
                raise BenchError(f"creating the hook failed: {await response.text()}")
            hook_id = (await response.json())["id"]

        async def ping() -> float:
            started = time.perf_counter()
            async with http.get(f"{base_url}/hooks/{hook_id}/ping", headers=headers) as answer:
                result = await answer.json()
            elapsed = time.perf_counter() - started
            if answer.status != 200 or result["http_status"] != 200:
                raise BenchError(f"ping failed: {answer.status} {result}")
            return elapsed * 1000.0

        async def direct() -> float:
            delivery_id, body = _ping_like_body(hook_id, hook_url)
            started = time.perf_counter()
            signed = sign_delivery(
                body,
                secret=SECRET,
                delivery_id=delivery_id,
                event="Ping",
                hook_id=hook_id,
                timestamp=int(time.time()),
            )
            async with http.post(hook_url, data=body, headers=signed) as answer:
                await answer.read()
            elapsed = time.perf_counter() - started
            if answer.status != 200:
                raise BenchError(f"direct POST failed: {answer.status}")
            return elapsed * 1000.0

        for _ in range(WARMUP):
            await ping()
            await direct()
        pings: list[float] = []
        directs: list[float] = []
        for _ in range(requests):
            pings.append(await ping())
            directs.append(await direct())
    return PingFigures(pings, directs)
