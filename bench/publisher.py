"""An open-loop publisher for the latency benchmark.

Run as ``python -m bench.publisher URL RATE SECONDS TOKEN TENANT``: it sends RATE single
events a second for SECONDS (``POST URL/events``, one ``Job`` event each) on a fixed
schedule, whatever the answers: each send is a task of its own, started at its scheduled
time, so a slow answer never delays the next. Each event's ``data`` carries its scheduled
send time as ``bench_sent`` (unix seconds). It prints ``<accepted> <failed> <late ms>``:
202 answers, other answers or errors, and how late the latest send started.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import uvloop

from bench.common import event_data

START_DELAY = 0.2
CONNECTIONS = 512


async def publish(url: str, rate: float, seconds: float, headers: dict[str, str]) -> None:
    accepted = 0
    failed = 0
    late = 0.0
    count = round(rate * seconds)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def send(number: int, scheduled: float) -> None:
            nonlocal accepted, failed
            data = {**event_data(number), "bench_sent": scheduled}
            try:
                async with session.post(url, json={"event": "Job", "data": data}) as response:
                    await response.read()
                    if response.status == 202:
                        accepted += 1
                    else:
                        failed += 1
            except aiohttp.ClientError:
                failed += 1

        tasks: set[asyncio.Task[None]] = set()
        start = time.time() + START_DELAY
        for number in range(count):
            scheduled = start + number / rate
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            task = asyncio.create_task(send(number, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    print(f"{accepted} {failed} {late * 1000:.1f}")


def main() -> None:
    url, rate, seconds, token, tenant = sys.argv[1:6]
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": tenant}
    uvloop.run(publish(url, float(rate), float(seconds), headers))


if __name__ == "__main__":
    main()
