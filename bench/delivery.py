"""Delivery throughput against the raw HTTP limit, and the worker's memory.

crohooks: E events are published through batch intake (``POST /events/batch``, 1000 a
request) to H hooks that all subscribe to them; the clock runs from the first publish
until the receiver has counted every delivery *and* the database records every one as
succeeded. Baseline: ``bench.baseline`` POSTs the same number of same-sized signed bodies
to the same receiver with the worker's concurrency, and no database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import (
    CLI,
    SECRET,
    TENANT,
    BenchError,
    Process,
    Receiver,
    api_process,
    bench_env,
    event_data,
    machine_cpu_seconds,
    process_env,
    run_cli,
    settings_for,
    started,
    sync_query,
    wait_log,
)
from crohooks.auth.local import mint_local_token

BATCH = 1000
DEADLINE_SECONDS = 240.0


@dataclass(frozen=True)
class Throughput:
    deliveries: int
    seconds: float
    intake_seconds: float
    received: int
    unique: int
    cpu_seconds: float
    """Busy CPU time of the whole machine while it ran (crohooks, PostgreSQL, receiver)."""
    rss_start_mib: float | None = None
    rss_end_mib: float | None = None

    @property
    def cpu_ms_per_delivery(self) -> float:
        return self.cpu_seconds * 1000.0 / self.deliveries

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds


@dataclass(frozen=True)
class BaselineFigures:
    per_second: float
    cpu_ms_per_delivery: float
    """Machine CPU per delivery, the client's interpreter start-up included."""


async def baseline(
    receiver: Receiver, workdir: Path, *, count: int, concurrency: int
) -> BaselineFigures:
    """Deliveries per second of the raw aiohttp client (``bench.baseline``)."""
    await receiver.reset()
    cpu_before = machine_cpu_seconds()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.baseline",
        receiver.url_for("/baseline"),
        str(count),
        str(concurrency),
        cwd=workdir,
        env=bench_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    cpu_seconds = machine_cpu_seconds() - cpu_before
    if process.returncode != 0:
        raise BenchError(f"the baseline client failed: {stderr.decode()[-2000:]}")
    received, _ = await receiver.count()
    if received != count:
        raise BenchError(f"the baseline sent {count} requests but {received} arrived")
    seconds = float(stdout.split()[0])
    return BaselineFigures(count / seconds, cpu_seconds * 1000.0 / count)


def bench_token(database_url: str) -> str:
    return mint_local_token(
        settings_for(database_url),
        subject="bench",
        roles=["System", "Admin"],
        tenants=[TENANT],
        ttl_seconds=3600,
    )


FILTER = 'event == "Job" && data.status != "cancelled" && data.customer.id == 4711'
"""A payload filter every benchmark event passes (so the deliveries are the same), reading
nested fields of the event as a real one would."""


async def create_hooks(
    http: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    receiver: Receiver,
    n: int,
    *,
    payload_filter: str | None = None,
) -> None:
    for number in range(n):
        async with http.post(
            f"{base_url}/hooks",
            json={"url": receiver.url_for(f"/hook/{number}"), "events": ["Job"], "secret": SECRET},
            headers=headers,
        ) as response:
            if response.status != 200:
                raise BenchError(f"creating a hook failed: {await response.text()}")
            hook_id = (await response.json())["id"]
        if payload_filter is not None:
            async with http.patch(
                f"{base_url}/hooks/{hook_id}/settings",
                json={"filter": f"{payload_filter} && {hook_id} > 0"},
                headers=headers,
            ) as response:
                if response.status != 200:
                    raise BenchError(f"setting a filter failed: {await response.text()}")


async def _publish(
    http: aiohttp.ClientSession,
    base_url: str,
    headers: dict[str, str],
    events: int,
    keys: int | None = None,
) -> None:
    for start in range(0, events, BATCH):
        batch: list[dict[str, object]] = [
            {"event": "Job", "data": event_data(n)}
            for n in range(start, min(events, start + BATCH))
        ]
        if keys is not None:
            for n, event in enumerate(batch, start):
                event["ordering_key"] = f"Job:{n % keys}"
        async with http.post(
            f"{base_url}/events/batch", json={"events": batch}, headers=headers
        ) as response:
            if response.status != 202:
                raise BenchError(f"publishing failed: {response.status} {await response.text()}")


async def _wait_delivered(receiver: Receiver, database_url: str, expected: int) -> tuple[int, int]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        _, unique = await receiver.count()
        if unique >= expected:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"only {unique} of {expected} deliveries arrived")
        await asyncio.sleep(0.05)
    while True:
        [(succeeded,)] = await asyncio.to_thread(
            sync_query, database_url, "SELECT count(*) FROM deliveries WHERE status = 'succeeded'"
        )
        if succeeded >= expected:
            return await receiver.count()
        if time.monotonic() > deadline:
            raise BenchError(f"only {succeeded} of {expected} deliveries recorded as succeeded")
        await asyncio.sleep(0.05)


async def crohooks(
    receiver: Receiver,
    workdir: Path,
    database_url: str,
    *,
    events: int,
    hooks: int,
    workers: int,
    measure_rss: bool = False,
    keys: int | None = None,
    per_hook_inflight: int | None = None,
    filtered: bool = False,
) -> Throughput:
    """Throughput of crohooks itself.

    ``workers == 0`` is the one-process set-up (``crohooks serve`` with its in-process
    worker, as with SQLite); otherwise an API without a worker and that many ``crohooks
    worker`` processes. With ``keys``, event n carries the ordering key ``Job:{n % keys}``.
    ``filtered``: every hook has a payload filter (each its own text, so no evaluation
    is shared) that every event passes.
    """
    settings = {} if per_hook_inflight is None else {"per_hook_inflight": per_hook_inflight}
    env = process_env(database_url, **settings)
    await run_cli("migrate", env=env, workdir=workdir)
    await receiver.reset()
    headers = {"Authorization": f"Bearer {bench_token(database_url)}", "x-tenant-id": str(TENANT)}
    async with (
        api_process("api", env, workdir, worker=workers == 0) as base_url,
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as stack,
    ):
        await create_hooks(
            http, base_url, headers, receiver, hooks, payload_filter=FILTER if filtered else None
        )
        worker_processes: list[Process] = [
            await stack.enter_async_context(
                started(f"worker-{number}", [*CLI, "worker"], env=env, workdir=workdir)
            )
            for number in range(workers)
        ]
        for process in worker_processes:
            stack.push_async_callback(process.stop)
            await wait_log(process, "worker started")
        await asyncio.sleep(0.5)
        rss_start = worker_processes[0].rss_mib() if measure_rss and worker_processes else None
        expected = events * hooks
        started_at = time.perf_counter()
        cpu_before = machine_cpu_seconds()
        await _publish(http, base_url, headers, events, keys)
        intake = time.perf_counter() - started_at
        received, unique = await _wait_delivered(receiver, database_url, expected)
        seconds = time.perf_counter() - started_at
        cpu_seconds = machine_cpu_seconds() - cpu_before
        rss_end = worker_processes[0].rss_mib() if measure_rss and worker_processes else None
    return Throughput(
        deliveries=expected,
        seconds=seconds,
        intake_seconds=intake,
        received=received,
        unique=unique,
        cpu_seconds=cpu_seconds,
        rss_start_mib=rss_start,
        rss_end_mib=rss_end,
    )
