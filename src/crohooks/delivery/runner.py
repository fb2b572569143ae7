"""``crohooks worker``: one delivery worker process, stopped cleanly by SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

import uvloop
from prometheus_client import start_http_server

from crohooks.delivery.outbound import OutboundClient
from crohooks.delivery.worker import DeliveryWorker
from crohooks.heap import freeze_startup_objects
from crohooks.settings import Settings
from crohooks.store.database import Database
from crohooks.store.deliveries import DeliveryStore


async def run_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    db = Database.for_settings(settings)
    try:
        async with OutboundClient(settings) as client:
            worker = DeliveryWorker(settings, DeliveryStore(db), client, concurrency=concurrency)
            freeze_startup_objects()
            await worker.run(stop)
    finally:
        await db.dispose()


def run_worker_process(settings: Settings, *, concurrency: int | None) -> int:
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    uvloop.run(run_worker(settings, concurrency=concurrency))
    return 0
