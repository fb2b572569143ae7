"""SIGKILL of API processes and workers at random moments while events are published.

Two API processes and three workers; two publishers send batches to random API processes
throughout. Each round, at a moment drawn from the seeded generator, an API process, a
worker or one of each gets SIGKILL and a replacement is started while publishing goes on.
A publish cut short by a kill is sent again later with the same idempotency keys.

Duplicates: a delivery is sent twice only if the worker holding its lease died after
sending it and before writing the outcome down; its lease then expires and another worker
sends it again. So every duplicate must be among the deliveries leased by a killed worker
at the moment it died (read from the database right after each kill, well within the
lease), and their number bounds the count.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from tests.chaos.harness import ROUNDS, ChaosDatabase, chaos_run, publish_continuously

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.chaos]

KILL_ROUNDS = 3 * ROUNDS
PUBLISHERS = 2


@pytest.mark.timeout(90 + 20 * KILL_ROUNDS)
async def test_processes_killed_at_random_while_publishing_lose_nothing(
    chaos_database: ChaosDatabase, tmp_path: Path, rng: random.Random
) -> None:
    async with chaos_run("sigkill", chaos_database, tmp_path, apis=2, workers=3) as run:
        deployment = run.deployment
        run.figures.rounds = KILL_ROUNDS
        stop = asyncio.Event()
        publishers = [
            asyncio.create_task(
                publish_continuously(
                    run.client, run.running_apis, stop, random.Random(f"{rng.random()}")
                )
            )
            for _ in range(PUBLISHERS)
        ]
        leased_by_the_killed: set[str] = set()
        try:
            for round_ in range(1, KILL_ROUNDS + 1):
                wait = rng.uniform(0.3, 2.0)
                victims = rng.choice(["api", "worker", "api and worker"])
                await asyncio.sleep(wait)
                killed = []
                if "api" in victims:
                    api = rng.choice(deployment.apis)
                    await deployment.kill_api(api)
                    killed.append(api.process.name)
                if "worker" in victims:
                    victim = rng.choice(deployment.workers)
                    worker_id = await deployment.kill_worker(victim)
                    leased = await run.leased(worker_id)
                    leased_by_the_killed |= leased
                    killed.append(f"{victim.process.name} ({len(leased)} leased)")
                run.note(f"round {round_}: after {wait:.2f} s, SIGKILL {', '.join(killed)}")
                await asyncio.gather(
                    deployment.add_apis(1) if "api" in victims else asyncio.sleep(0),
                    deployment.add_workers(1) if "worker" in victims else asyncio.sleep(0),
                )
        finally:
            stop.set()
            await asyncio.gather(*publishers)

        await run.settle_and_check(duplicate_bound=len(leased_by_the_killed), outages_logged=0)
        stray = set(run.sink.duplicates()) - leased_by_the_killed
        if stray:
            run.problems.append(
                f"{len(stray)} deliveries arrived twice without a killed worker holding them: "
                f"{sorted(stray)[:10]}"
            )
        run.conclude()
