"""Delivery workers with an event loop of their own.

``crohooks worker`` is one in a process of its own, stopped cleanly by SIGTERM or SIGINT.
``crohooks serve`` runs one in a thread of its own (``worker_thread``): on the API's event
loop, every step of a delivery (claim, connect, send, read, record) waited behind every
ready request callback, so under API load the worker's turns came too seldom to keep up
with the events the API accepted. With a loop of its own, its steps wait only for each
other, and CPython's GIL hands the interpreter to a waiting thread after at most
``sys.getswitchinterval()`` (5 ms): a busy API can take at most about half of the
process's interpreter time from a worker with work to do.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress

import structlog
import uvloop
from prometheus_client import start_http_server

from crohooks.delivery.outbound import OutboundClient
from crohooks.delivery.worker import DeliveryWorker
from crohooks.heap import freeze_startup_objects
from crohooks.settings import Settings
from crohooks.store.connect import open_database
from crohooks.store.connector import DatabaseLimits
from crohooks.store.housekeeping import Housekeeping
from crohooks.store.queue import DeliveryQueue

log = structlog.get_logger("crohooks.worker")


async def deliver(
    settings: Settings,
    stop: asyncio.Event,
    *,
    concurrency: int | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Run a worker with a database and an outbound client of its own until ``stop``."""
    db = open_database(settings.database_url, DatabaseLimits.of(settings))
    try:
        async with OutboundClient(settings) as client:
            worker = DeliveryWorker(
                settings,
                DeliveryQueue(db),
                Housekeeping(db),
                client,
                concurrency=concurrency,
            )
            if started is not None:
                started()
            await worker.run(stop)
    finally:
        await db.dispose()


async def run_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await deliver(settings, stop, concurrency=concurrency, started=freeze_startup_objects)


def run_worker_process(settings: Settings, *, concurrency: int | None) -> int:
    if settings.worker_metrics_port is not None:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    uvloop.run(run_worker(settings, concurrency=concurrency))
    return 0


class _Handle:
    """What the API's loop holds of the worker's: its loop and the event that stops it."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()

    def set_threadsafe(self, event: asyncio.Event) -> None:
        # Once the worker's thread has ended its loop is closed, and nothing is left to tell.
        with suppress(RuntimeError):
            self.loop.call_soon_threadsafe(event.set)


@asynccontextmanager
async def worker_thread(settings: Settings) -> AsyncIterator[None]:
    """A delivery worker in a thread with its own event loop, database and client.

    It wakes when a transaction of the API's announces work (the store's wake-ups reach
    other threads and processes). On the way out the worker finishes what is in flight
    and writes it down, as on SIGTERM.
    """
    ready: Future[_Handle] = Future()

    async def main() -> None:
        handle = _Handle()
        await deliver(settings, handle.stop, started=lambda: ready.set_result(handle))

    def run() -> None:
        try:
            uvloop.run(main())
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            else:
                log.exception("the in-process worker stopped on an error")

    thread = threading.Thread(target=run, name="crohooks-worker", daemon=True)
    thread.start()
    handle = await asyncio.wrap_future(ready)
    try:
        yield
    finally:
        handle.set_threadsafe(handle.stop)
        await asyncio.to_thread(thread.join)
