"""The raw limit: an aiohttp client POSTing signed delivery bodies, with no database.

Run as ``python -m bench.baseline URL COUNT CONCURRENCY``: it renders COUNT bodies the way
crohooks does (outside the timing, as crohooks renders them at intake), then POSTs them
with CONCURRENCY requests in flight over one keep-alive pool, signing each at send time
exactly as a delivery attempt does, and prints the elapsed seconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import aiohttp
import uvloop

from bench.common import SECRET, TENANT, event_data
from crohooks.clock import to_cro, utc_now
from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.signing import sign_delivery


def bodies(count: int) -> list[tuple[str, bytes]]:
    timestamp = to_cro(utc_now())
    assert timestamp is not None
    rendered = []
    for number in range(count):
        delivery_id = str(uuid.uuid4())
        body = render_delivery_body(
            data_json=json.dumps(event_data(number), sort_keys=True),
            delivery_id=delivery_id,
            event="Job",
            event_id=str(uuid.uuid4()),
            hook_id=1 + number % 20,
            tenant_id=TENANT,
            timestamp=timestamp,
        )
        rendered.append((delivery_id, body.encode()))
    return rendered


async def post_all(url: str, items: list[tuple[str, bytes]], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    ) as session:
        queue = iter(items)
        failures = 0

        async def poster() -> None:
            nonlocal failures
            for delivery_id, body in queue:
                headers = sign_delivery(
                    body,
                    secret=SECRET,
                    delivery_id=delivery_id,
                    event="Job",
                    hook_id=1,
                    timestamp=int(time.time()),
                )
                async with session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(poster() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        if failures:
            raise SystemExit(f"{failures} requests failed")
        return elapsed


def main() -> None:
    url, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    items = bodies(count)
    elapsed = uvloop.run(post_all(url, items, concurrency))
    print(f"{elapsed:.6f} {len(items[0][1])}")


if __name__ == "__main__":
    main()
