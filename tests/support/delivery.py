"""Running a delivery worker until the queue is empty, for tests that need settled deliveries."""

from __future__ import annotations

import asyncio

from crohooks.delivery.worker import DeliveryWorker
from crohooks.model import DeliveryStatus
from crohooks.services import Services


async def deliver_until_idle(services: Services, *, timeout: float = 10.0) -> None:
    """Attempt every due delivery until none is pending (retries must not be scheduled)."""
    worker = DeliveryWorker(
        services.settings,
        services.queue,
        services.housekeeping,
        services.outbound,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while (await services.housekeeping.counts()).get(DeliveryStatus.PENDING, 0):
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await running
