"""The hook page's chart counted against the rows themselves, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crohooks.delivery.insights import CHARTED, HOURS_SHOWN
from crohooks.errors import NotFound
from crohooks.model import DeliveryStatus
from crohooks.services import Services
from crohooks.store.connector import Statement
from crohooks.store.insights import Insights

NOW = datetime(2026, 12, 2, 17, 42, 13, 250_000, tzinfo=UTC)
START = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
"""The chart's first hour at ``NOW``: the 24 hours end with the hour ``NOW`` is in."""

_DELIVERY = Statement.shared(
    "test_insights_delivery",
    """
    INSERT INTO deliveries (id, tenant_id, hook_id, event, body, status, attempts,
                            created_at, updated_at)
    VALUES (:id, :tenant_id, :hook_id, 'Job', '{}', :status, 0, :created_at, :created_at)""",
)


async def _hook(services: Services, tenant_id: int) -> int:
    hook = await services.hooks.create(
        tenant_id,
        url=f"https://hooks.example/{uuid.uuid4()}",
        events=("Job",),
        secret=None,
        field="url",
    )
    return hook.id


async def _write(services: Services, rows: list[dict[str, Any]]) -> None:
    async with services.db.write() as conn:
        await conn.execute_many(_DELIVERY, rows)


def _row(tenant_id: int, hook_id: int, status: DeliveryStatus, at: datetime) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "hook_id": hook_id,
        "status": status.value,
        "created_at": at,
    }


async def test_the_chart_counts_each_hours_rows_by_outcome(services: Services) -> None:
    hook_id = await _hook(services, 34)
    other_hook = await _hook(services, 34)
    shuffle = random.Random(13)
    statuses = list(DeliveryStatus)
    rows: list[dict[str, Any]] = []
    for _ in range(600):
        at = START - timedelta(hours=2) + timedelta(seconds=shuffle.uniform(0, 27 * 3600))
        rows.append(_row(34, hook_id, shuffle.choice(statuses), at))
    # The edges: an hour's first microsecond is in it, its end is in the next one, and the
    # chart's window neither starts earlier nor ends later.
    for status in CHARTED:
        rows += [
            _row(34, hook_id, status, START),
            _row(34, hook_id, status, START - timedelta(microseconds=1)),
            _row(34, hook_id, status, START + timedelta(hours=5)),
            _row(34, hook_id, status, START + timedelta(hours=HOURS_SHOWN)),
            _row(34, other_hook, status, START + timedelta(hours=3)),
        ]
    await _write(services, rows)

    health = await services.insights.health(34, hook_id, now=NOW)

    assert [hour.start for hour in health.hours] == [
        START + timedelta(hours=n) for n in range(HOURS_SHOWN)
    ]
    for hour in health.hours:
        expected = {
            status.value: sum(
                1
                for row in rows
                if row["hook_id"] == hook_id
                and row["status"] == status.value
                and hour.start <= row["created_at"] < hour.start + timedelta(hours=1)
            )
            for status in CHARTED
        }
        assert hour.counts == expected, hour.start


async def test_a_changed_outcome_moves_between_the_charts_bars(services: Services) -> None:
    hook_id = await _hook(services, 34)
    rows = [_row(34, hook_id, DeliveryStatus.PENDING, START + timedelta(hours=2)) for _ in range(3)]
    await _write(services, rows)
    before = await services.insights.health(34, hook_id, now=NOW)
    assert before.hours[2].counts == {"succeeded": 0, "failed": 0, "pending": 3}

    async with services.db.write() as conn:
        await conn.execute(
            Statement.shared(
                "test_insights_fail", "UPDATE deliveries SET status = 'failed' WHERE id = :id"
            ),
            {"id": rows[0]["id"]},
        )
    after = await services.insights.health(34, hook_id, now=NOW)
    assert after.hours[2].counts == {"succeeded": 0, "failed": 1, "pending": 2}


async def test_another_tenants_hook_has_no_chart(services: Services) -> None:
    hook_id = await _hook(services, 35)
    await _write(services, [_row(35, hook_id, DeliveryStatus.SUCCEEDED, START)])
    with pytest.raises(NotFound):
        await services.insights.health(34, hook_id, now=NOW)
    counted = await Insights(services.db).hourly_outcomes(
        34, hook_id, start=START, hours=HOURS_SHOWN, statuses=CHARTED
    )
    assert counted == [{"succeeded": 0, "failed": 0, "pending": 0}] * HOURS_SHOWN
    assert (await services.insights.health(35, hook_id, now=NOW)).hours[0].counts["succeeded"] == 1
