"""PostgreSQL failing under a running deployment: restarted, crash-restarted, stopped for
several seconds, frozen for longer than DATABASE_TIMEOUT, read-only for several seconds;
and left idle for longer than every idle interval.

Each outage comes mid-delivery: a load of events is published and the database goes once
the receiver has seen a fifth of it. Three loops probe every API process meanwhile (publish
one event, list the hooks, ``/readyz``), each request with a client-side deadline, so a
hang is seen as one. What must hold (spec 3.2, issue 11): every answer is a success or a
503 with ``Retry-After`` and CRO's error body, within DATABASE_TIMEOUT (READINESS_TIMEOUT
for ``/readyz``) plus a margin; inside a window where the database was certainly out, only
503s; every API answer a success again within RECOVER_WITHIN of the database's return;
one log line each way per outage and no traceback; workers resume alone and nothing
accepted is lost or left pending.

Duplicates: a delivery is sent again only if its lease expired before its worker could
write the outcome down, which an outage longer than the lease causes for the deliveries
leased when it began. The per-hook cap bounds the leases held at once across all workers,
so each outage adds at most HOOKS x PER_HOOK_INFLIGHT duplicates.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from pathlib import Path

import pytest

from tests.chaos.cluster import ThrowawayCluster
from tests.chaos.harness import (
    DATABASE_TIMEOUT,
    HOOKS,
    PER_HOOK_INFLIGHT,
    RECOVER_WITHIN,
    ROUNDS,
    ChaosDatabase,
    Outage,
    Run,
    chaos_run,
)
from tests.e2e.processes import Api

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.chaos]

LOAD_EVENTS = 100
OUTAGE_SECONDS = 4.0
FREEZE_SECONDS = DATABASE_TIMEOUT + 2.0
IDLE_GAPS = 3 * ROUNDS
IDLE_GAP_SECONDS = 2.5
"""Longer than DATABASE_IDLE_CHECK_SECONDS and uvicorn's keep-alive (both 1 s here)."""


async def disrupt(kind: str, cluster: ThrowawayCluster) -> Outage:
    if kind == "stop":
        began = time.monotonic()
        await cluster.stop()
        down = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        ended = time.monotonic()
        await cluster.start()
        return Outage(kind, began, time.monotonic(), certain=(down, ended))
    if kind == "freeze":
        cluster.freeze()
        began = time.monotonic()
        await asyncio.sleep(FREEZE_SECONDS)
        ended = time.monotonic()
        cluster.thaw()
        return Outage(kind, began, ended, certain=(began, ended))
    if kind == "read-only":
        began = time.monotonic()
        await cluster.set_read_only(True)
        await asyncio.sleep(OUTAGE_SECONDS)
        ended = time.monotonic()
        await cluster.set_read_only(False)
        # Sessions take the change at their next statement after the reload: allow a moment.
        return Outage(
            kind,
            began,
            time.monotonic(),
            certain=(began + 0.5, ended),
            refused=frozenset({"publish"}),
        )
    began = time.monotonic()
    await cluster.restart("immediate" if kind == "crash-restart" else "fast")
    return Outage(kind, began, time.monotonic())


@pytest.mark.parametrize("kind", ["restart", "crash-restart", "stop", "freeze", "read-only"])
@pytest.mark.timeout(90 + 40 * ROUNDS)
async def test_database_outage_mid_delivery(
    kind: str, chaos_database: ChaosDatabase, tmp_path: Path
) -> None:
    async with chaos_run(kind, chaos_database, tmp_path, apis=2, workers=2) as run:
        run.figures.rounds = ROUNDS
        for round_ in range(1, ROUNDS + 1):
            under_way = run.sink.total + LOAD_EVENTS * HOOKS // 5
            await run.publish_load(LOAD_EVENTS)
            with suppress(TimeoutError):
                await run.sink.wait_for(under_way, timeout=20)
            async with run.probing():
                await asyncio.sleep(0.3)
                leased = len(await run.leased())
                outage = await disrupt(kind, chaos_database.cluster)
                run.outages.append(outage)
                run.note(
                    f"round {round_}: {kind} with {leased} deliveries leased, "
                    f"database back after {outage.back - outage.began:.2f} s"
                )
                await asyncio.sleep(outage.back + RECOVER_WITHIN + 1.0 - time.monotonic())

        strict = kind in ("stop", "freeze")
        await run.settle_and_check(
            duplicate_bound=ROUNDS * HOOKS * PER_HOOK_INFLIGHT,
            outages_logged=ROUNDS if strict else None,
        )
        run.conclude()


@pytest.mark.timeout(90 + 15 * IDLE_GAPS)
async def test_idle_gaps_longer_than_every_idle_interval(
    chaos_database: ChaosDatabase, tmp_path: Path
) -> None:
    """Issue 11's first symptom: a 500 after a few seconds idle. Every burst after a gap
    must be answered with successes only, and its deliveries sent: the API processes'
    pooled connections and kept-alive HTTP connections were idle past their limits.

    No process dies and no lease can expire (the database answers throughout), so no
    delivery may arrive twice.
    """
    async with chaos_run(
        "idle", chaos_database, tmp_path, apis=2, workers=2,
        keep_alive=True, server_keep_alive_timeout=1,
    ) as run:  # fmt: skip
        run.figures.rounds = IDLE_GAPS
        for gap in range(IDLE_GAPS + 1):
            if gap:
                await asyncio.sleep(IDLE_GAP_SECONDS)
                run.note(f"gap {gap}: idle {IDLE_GAP_SECONDS:g} s")
            await asyncio.gather(*(burst(run, api) for api in run.deployment.apis))
            with suppress(TimeoutError):
                await run.sink.wait_for(len(run.client.accepted) * HOOKS, timeout=10)
        await run.settle_and_check(duplicate_bound=0, outages_logged=0)
        run.conclude()


async def burst(run: Run, api: Api) -> None:
    """Requests at once to one API process, so it uses several pooled connections."""
    client = run.client
    await asyncio.gather(
        client.publish(api, client.new_events(5)),
        client.publish(api, client.new_events(1)),
        client.list_hooks(api),
        client.list_hooks(api),
        client.readiness(api),
        client.readiness(api),
    )
