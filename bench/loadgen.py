"""A bounded closed-loop HTTP load generator, for machines without ``wrk``.

Run as ``python -m bench.loadgen URL SECONDS CONNECTIONS [Header: value ...]``: it keeps
CONNECTIONS GET requests in flight over keep-alive connections for SECONDS and prints
``<requests per second> <non-200 responses>``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import uvloop


async def load(url: str, seconds: float, connections: int, headers: dict[str, str]) -> None:
    connector = aiohttp.TCPConnector(limit=connections)
    done = 0
    bad = 0
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done, bad
            while time.perf_counter() < deadline:
                async with session.get(url) as response:
                    await response.read()
                    done += 1
                    bad += response.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    print(f"{done / elapsed:.1f} {bad}")


def main() -> None:
    url, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    headers = dict(item.split(": ", 1) for item in sys.argv[4:])
    uvloop.run(load(url, seconds, connections, headers))


if __name__ == "__main__":
    main()
