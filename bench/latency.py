"""Single-event latency (issue 17): publish → receive under an open-loop load.

An open-loop publisher (``bench.publisher``, a process of its own) sends single events
(``POST /events``) at a fixed rate for a fixed time, each at its scheduled moment whatever
the answers, to H hooks that all subscribe to them. Each event's data carries its
scheduled send time; the receiver (``bench.receiver``) records, for the first arrival of
each delivery, arrival time - scheduled send time (wall clock, one machine). A saturated
server therefore shows as growing latency, not as a slower publisher. Deliveries still
missing ``WAIT_SECONDS`` after the last send are counted as unarrived.

Set-ups: SQLite, one ``crohooks serve`` with its in-process worker; PostgreSQL,
``crohooks serve --no-worker`` plus one ``crohooks worker``. After an unmeasured warm-up
at the lowest rate (``WARMUP_SECONDS``), the rates run in increasing order. They stop at
the first rate that loses deliveries or is refused events (the server is saturated), or
after ``MISSES_IN_A_ROW`` rates in a row whose p99 exceeds ``P99_LIMIT_MS``: one slow tail
at a low rate (a checkpoint, a scheduler hiccup on a shared machine) does not end the run,
so the reported figure, the highest rate sustained, does not hang on a single stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import (
    CLI,
    TENANT,
    BenchError,
    Receiver,
    api_process,
    bench_env,
    percentile,
    process_env,
    run_cli,
    started,
    wait_log,
)
from bench.delivery import bench_token, create_hooks

P99_LIMIT_MS = 50.0
WAIT_SECONDS = 10.0
WARMUP_SECONDS = 3.0
PUBLISHER_GRACE_SECONDS = 60.0
MISSES_IN_A_ROW = 2


@dataclass(frozen=True)
class RateFigures:
    rate: int
    sent: int
    accepted: int
    failed: int
    expected: int
    latencies_ms: list[float]
    publisher_late_ms: float

    @property
    def missing(self) -> int:
        return self.expected - len(self.latencies_ms)

    def quantile(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)

    @property
    def p99_ms(self) -> float:
        return self.quantile(0.99)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms, default=float("nan"))

    @property
    def complete(self) -> bool:
        """Every event accepted and every delivery arrived."""
        return self.failed == 0 and self.accepted == self.sent and self.missing == 0

    @property
    def sustained(self) -> bool:
        return self.complete and self.p99_ms <= P99_LIMIT_MS

    def summary(self) -> str:
        return (
            f"{self.rate:,}/s: p50 {self.quantile(0.5):.1f} / p90 {self.quantile(0.9):.1f} / "
            f"p99 {self.p99_ms:.1f} / max {self.max_ms:.1f} ms"
        )

    def detail(self) -> str:
        return (
            f"{self.summary()}; {self.accepted:,}/{self.sent:,} accepted, {self.failed} failed, "
            f"{self.missing:,} of {self.expected:,} deliveries unarrived; "
            f"publisher at most {self.publisher_late_ms:.0f} ms behind schedule"
        )


async def _publish(base_url: str, token: str, rate: int, seconds: float, workdir: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.publisher", f"{base_url}/events", str(rate), str(seconds),
        token, str(TENANT), cwd=workdir, env=bench_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(seconds + PUBLISHER_GRACE_SECONDS):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"the publisher did not finish at {rate}/s") from None
    if process.returncode != 0:
        raise BenchError(f"the publisher failed: {stderr.decode()[-2000:]}")
    return stdout.decode()


async def _one_rate(
    receiver: Receiver, base_url: str, token: str, workdir: Path, *, rate: int, seconds: float,
    hooks: int,
) -> RateFigures:  # fmt: skip
    await receiver.reset()
    output = await _publish(base_url, token, rate, seconds, workdir)
    accepted, failed, late = output.split()
    expected = int(accepted) * hooks
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        _, unique = await receiver.count()
        if unique >= expected:
            break
        await asyncio.sleep(0.05)
    latencies = [value * 1000.0 for value in await receiver.latencies()]
    return RateFigures(
        rate=rate,
        sent=round(rate * seconds),
        accepted=int(accepted),
        failed=int(failed),
        expected=expected,
        latencies_ms=latencies,
        publisher_late_ms=float(late),
    )


async def measure(
    receiver: Receiver,
    workdir: Path,
    database_url: str,
    *,
    hooks: int,
    workers: int,
    rates: Sequence[int],
    seconds: float,
) -> list[RateFigures]:
    """Figures for each rate in turn, until the server saturates (see the module's text).

    ``workers == 0`` is ``crohooks serve`` with its in-process worker; otherwise an API
    without a worker and that many ``crohooks worker`` processes.
    """
    env = process_env(database_url)
    await run_cli("migrate", env=env, workdir=workdir)
    token = bench_token(database_url)
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": str(TENANT)}
    figures: list[RateFigures] = []
    async with (
        api_process("api", env, workdir, worker=workers == 0) as base_url,
        aiohttp.ClientSession() as http,
        contextlib.AsyncExitStack() as stack,
    ):
        await create_hooks(http, base_url, headers, receiver, hooks)
        for number in range(workers):
            process = await stack.enter_async_context(
                started(f"worker-{number}", [*CLI, "worker"], env=env, workdir=workdir)
            )
            stack.push_async_callback(process.stop)
            await wait_log(process, "worker started")
        await asyncio.sleep(0.5)
        # Unmeasured: first connections, first claims and lazy imports stay out of the figures.
        await _one_rate(
            receiver, base_url, token, workdir, rate=rates[0],
            seconds=min(seconds, WARMUP_SECONDS), hooks=hooks,
        )  # fmt: skip
        misses = 0
        for rate in rates:
            result = await _one_rate(
                receiver, base_url, token, workdir, rate=rate, seconds=seconds, hooks=hooks
            )
            figures.append(result)
            print(f"  {result.detail()}", flush=True)
            misses = 0 if result.sustained else misses + 1
            if not result.complete or misses >= MISSES_IN_A_ROW:
                break
    return figures
