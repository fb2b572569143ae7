"""Housekeeping a worker does on its own: auto-deactivation and retention."""

from __future__ import annotations

from datetime import timedelta

from crohooks.clock import utc_now
from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.worker import DeliveryWorker
from crohooks.model import ClaimPolicy, NewEvent
from crohooks.services import Services
from crohooks.store.connector import Statement
from crohooks.store.hooks import HookRepository
from crohooks.store.intake import Intake
from tests.conftest import make_settings

STATUS_BY_HOOK = Statement.shared("status_by_hook", "SELECT hook_id, status FROM deliveries")
STATUS_AND_AGE = Statement.shared(
    "status_and_age", "SELECT hook_id, status, last_message, created_at FROM deliveries"
)
ALL_SUCCEEDED = Statement.shared("all_succeeded", "UPDATE deliveries SET status = 'succeeded'")
LEFT = Statement.shared(
    "left",
    "SELECT (SELECT count(*) FROM deliveries) AS deliveries,"
    " (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM attempts) AS attempts",
)


def _worker(services: Services) -> DeliveryWorker:
    return DeliveryWorker(
        services.settings, services.queue, services.housekeeping, services.outbound
    )


async def test_a_hook_failing_for_days_is_disabled_not_deleted(database_url: str) -> None:
    """Auto-deactivation disables: the hook stays, with reason and time shown, its queued
    delivery waits instead of being cancelled, and ``enable`` revives it."""
    services = Services.build(make_settings(database_url, auto_deactivate_after_seconds=86400))
    try:
        now = utc_now()
        failing = await services.hooks.create(
            34, url="https://f.example", events=("Job",), secret=None, field="x"
        )
        recovering = await services.hooks.create(
            34, url="https://r.example", events=("Job",), secret=None, field="x"
        )
        fresh = await services.hooks.create(
            34, url="https://n.example", events=("Job",), secret=None, field="x"
        )
        async with services.db.write() as conn:
            for hook in (failing, recovering):
                await HookRepository.record_outcome(
                    conn, 34, hook.id, succeeded=False, at=now - timedelta(days=3)
                )
            await HookRepository.record_outcome(
                conn, 34, recovering.id, succeeded=True, at=now - timedelta(hours=1)
            )
            await HookRepository.record_outcome(
                conn, 34, fresh.id, succeeded=False, at=now - timedelta(hours=2)
            )
        await Intake(services.db, render_delivery_body).accept(
            34, [NewEvent("Job", {})], now=now, idempotency_window=timedelta(hours=24)
        )
        await _worker(services).maintain()

        assert not (await services.hooks.get(34, failing.id)).is_deleted
        disabled = await services.hook_settings.get(34, failing.id)
        assert disabled.disabled_at is not None
        assert disabled.disabled_by == "crohooks"
        assert disabled.disabled_reason == "auto-disabled: no success for 1 day, 0:00:00"
        for other in (recovering, fresh):
            assert (await services.hook_settings.get(34, other.id)).disabled_at is None
        rows = await services.db.fetch(STATUS_BY_HOOK)
        by_hook = {row["hook_id"]: row["status"] for row in rows}
        assert by_hook == {failing.id: "pending", recovering.id: "pending", fresh.id: "pending"}
        claimed = await services.queue.claim(_policy(), now=utc_now())
        assert sorted(d.hook_id for d in claimed) == [recovering.id, fresh.id]

        enabled = await services.hook_settings.enable(34, failing.id)
        assert (enabled.disabled_at, enabled.disabled_reason, enabled.disabled_by) == (
            None,
            None,
            None,
        )
        await _worker(services).maintain()
        assert (await services.hook_settings.get(34, failing.id)).disabled_at is None
        [revived] = await services.queue.claim(_policy(), now=utc_now())
        assert revived.hook_id == failing.id
    finally:
        await services.aclose()


def _policy() -> ClaimPolicy:
    return ClaimPolicy(limit=10, per_hook_cap=4, lease=timedelta(minutes=1), worker_id="t")


async def test_old_finished_deliveries_are_purged(database_url: str) -> None:
    services = Services.build(make_settings(database_url, retention_days=30))
    try:
        now = utc_now()
        await services.hooks.create(
            34, url="https://a.example", events=("Job",), secret=None, field="x"
        )
        window = timedelta(hours=24)
        await Intake(services.db, render_delivery_body).accept(
            34,
            [NewEvent("Job", {"old": i}) for i in range(700)],
            now=now - timedelta(days=40),
            idempotency_window=window,
        )
        await Intake(services.db, render_delivery_body).accept(
            34,
            [NewEvent("Job", {"recent": 1})],
            now=now - timedelta(days=1),
            idempotency_window=window,
        )
        await services.db.write_alone(ALL_SUCCEEDED)
        await Intake(services.db, render_delivery_body).accept(
            34,
            [NewEvent("Job", {"old-but-pending": 1})],
            now=now - timedelta(days=40),
            idempotency_window=window,
        )
        await _worker(services).maintain()
        (left,) = await services.db.fetch(LEFT)
        assert left == {"deliveries": 2, "events": 2, "attempts": 0}
    finally:
        await services.aclose()


async def test_a_disabled_hook_holds_its_deliveries_up_to_retention(database_url: str) -> None:
    """Older than retention, what a disabled hook held is cancelled and purged like any
    finished delivery; younger, it keeps waiting; an enabled hook's pending ones stay."""
    services = Services.build(make_settings(database_url, retention_days=30))
    try:
        now = utc_now()
        held = await services.hooks.create(
            34, url="https://held.example", events=("Job",), secret=None, field="x"
        )
        active = await services.hooks.create(
            34, url="https://active.example", events=("Job",), secret=None, field="x"
        )
        await services.hook_settings.disable(34, held.id, reason="migration", by="t")
        intake = Intake(services.db, render_delivery_body)
        for age in (timedelta(days=40), timedelta(days=1)):
            await intake.accept(
                34, [NewEvent("Job", {})], now=now - age, idempotency_window=timedelta(hours=24)
            )
        await _worker(services).maintain()
        rows = await services.db.fetch(STATUS_AND_AGE)
        cutoff = now - timedelta(days=30)
        found = sorted((r["hook_id"], r["status"], int(r["created_at"] < cutoff)) for r in rows)
        assert found == sorted(
            [(held.id, "pending", 0), (active.id, "pending", 1), (active.id, "pending", 0)]
        )
    finally:
        await services.aclose()
