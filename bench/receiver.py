"""The fast webhook receiver of the benchmarks: a bare aiohttp server that counts arrivals.

Run as ``python -m bench.receiver``: it listens on a free loopback port, prints
``ready <port>`` and answers every POST with an empty 200. ``GET /_count`` returns
``<requests> <unique webhook-ids>`` and ``POST /_reset`` zeroes both.

For the latency benchmark: when a delivery's body carries ``"bench_sent": <unix time>``
(the publisher's scheduled send time, in the event's ``data``), the first arrival of each
``webhook-id`` records ``arrival - bench_sent`` in seconds (wall clock, ``time.time()``;
publisher and receiver share the machine). ``GET /_latencies`` returns them, one a line;
``POST /_reset`` clears them too.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time

import uvloop
from aiohttp import web

SENT = re.compile(rb'"bench_sent":\s*([0-9.eE+-]+)')


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.ids: set[str] = set()
        self.latencies: list[float] = []

    async def handle(self, request: web.BaseRequest) -> web.Response:
        if request.method == "GET" and request.path == "/_count":
            return web.Response(text=f"{self.requests} {len(self.ids)}")
        if request.method == "GET" and request.path == "/_latencies":
            return web.Response(text="\n".join(map(repr, self.latencies)))
        if request.path == "/_reset":
            self.requests = 0
            self.ids.clear()
            self.latencies.clear()
            return web.Response()
        body = await request.read()
        arrived = time.time()
        self.requests += 1
        delivery = request.headers.get("webhook-id")
        if delivery is not None and delivery not in self.ids:
            self.ids.add(delivery)
            sent = SENT.search(body)
            if sent is not None:
                self.latencies.append(arrived - float(sent.group(1)))
        return web.Response()


async def serve() -> None:
    counter = Counter()
    server = web.Server(counter.handle, access_log=None)
    loop = asyncio.get_running_loop()
    tcp = await loop.create_server(server, "127.0.0.1", 0, backlog=1024)
    port = tcp.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {port}", flush=True)
    await stop.wait()
    tcp.close()
    await server.shutdown(timeout=1.0)


if __name__ == "__main__":
    uvloop.run(serve())
    sys.exit(0)
