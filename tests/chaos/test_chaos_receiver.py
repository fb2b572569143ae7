"""Receivers that misbehave (spec 3.2): failing, hanging, resetting, rate-limiting.

One hook per behaviour; each answers the first two arrivals of every delivery badly and
the third with a 200:

- ``fail``: 500;
- ``hang``: nothing until long after the attempt timeout (1 s here);
- ``reset``: the connection reset (a TCP RST) instead of an answer;
- ``limit``: 429 with ``Retry-After: 1``.

So every delivery must succeed at its third attempt, with each attempt in the delivery
log as it happened; the hung attempts given up at the attempt timeout; the rate-limited
ones retried no sooner than ``Retry-After`` asked (the schedule alone would retry after
0.2 s and 0.5 s). The API, probed meanwhile, answers successes throughout. No process
dies, the database answers throughout and a lease (2 s) outlasts an attempt, so nothing
arrives twice.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import suppress
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import HANG_SECONDS, ROUNDS, ChaosDatabase, Run, chaos_run
from tests.support.receiver import Reply

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.chaos]

EVENTS = 12 * ROUNDS
BAD_ARRIVALS = 2
ATTEMPT_TIMEOUT = 1.0
RETRY_AFTER = 1.0
BAD = {
    "fail": Reply(500),
    "hang": Reply(200, delay=HANG_SECONDS),
    "reset": Reply(reset=True),
    "limit": Reply(429, headers={"Retry-After": f"{RETRY_AFTER:g}"}),
}
LOGGED = {"fail": 500, "hang": -1, "reset": -1, "limit": 429}
"""The ``http_status`` the delivery log shows for a bad arrival (-1: no response)."""
MESSAGE = {"hang": "ReadTimeout", "reset": "ConnectionFailed"}


def misbehave(path: str, nth: int) -> Reply:
    return BAD[path] if nth <= BAD_ARRIVALS else Reply(200)


@pytest.mark.timeout(90 + 20 * ROUNDS)
async def test_misbehaving_receivers_get_every_delivery_at_the_third_attempt(
    chaos_database: ChaosDatabase, tmp_path: Path
) -> None:
    async with chaos_run(
        "receivers", chaos_database, tmp_path, apis=1, workers=2, behaviour=misbehave,
        hook_paths=list(BAD), attempt_timeout=ATTEMPT_TIMEOUT, lease_seconds=2,
        per_hook_inflight=6,
    ) as run:  # fmt: skip
        run.figures.rounds = ROUNDS
        await run.publish_load(EVENTS, batch=6)
        async with run.probing(loops=1):
            with suppress(TimeoutError):
                await run.sink.wait_for((BAD_ARRIVALS + 1) * EVENTS * len(BAD), timeout=30)
        await run.settle_and_check(duplicate_bound=0, outages_logged=0)
        await check_delivery_log(run)
        check_retry_after(run)
        run.conclude()


async def check_delivery_log(run: Run) -> None:
    path_of = dict(zip(run.hook_ids, BAD, strict=True))
    rows = await run.database.rows(
        "SELECT d.id, d.hook_id, a.number, a.http_status, a.duration_ms, a.message"
        " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id"
        " ORDER BY a.delivery_id, a.number"
    )
    attempts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        attempts[row["id"]].append(row)
    for delivery_id, logged in attempts.items():
        path = path_of[logged[0]["hook_id"]]
        statuses = [row["http_status"] for row in logged]
        expected = [LOGGED[path]] * BAD_ARRIVALS + [200]
        if statuses != expected:
            run.problems.append(f"{path} delivery {delivery_id} logged {statuses}, not {expected}")
            continue
        for row in logged[:BAD_ARRIVALS]:
            if path in MESSAGE and not row["message"].startswith(MESSAGE[path]):
                run.problems.append(f"{path} attempt logged as {row['message']!r}")
            seconds = row["duration_ms"] / 1000
            if path == "hang" and not ATTEMPT_TIMEOUT - 0.05 <= seconds <= ATTEMPT_TIMEOUT + 1:
                run.problems.append(
                    f"a hung attempt was given up after {seconds:.2f} s, not {ATTEMPT_TIMEOUT:g} s"
                )
    if len(attempts) != len(run.client.accepted) * len(BAD):
        run.problems.append(
            f"{len(attempts)} deliveries in the delivery log, "
            f"{len(run.client.accepted) * len(BAD)} expected"
        )


def check_retry_after(run: Run) -> None:
    for arrivals in run.sink.arrivals.values():
        if arrivals[0].path != "limit":
            continue
        gaps = [later.at - earlier.at for earlier, later in pairwise(arrivals)]
        if any(gap < RETRY_AFTER - 0.05 for gap in gaps):
            run.problems.append(
                f"Retry-After: {RETRY_AFTER:g} not honoured: arrivals "
                f"{[round(gap, 2) for gap in gaps]} s apart"
            )
