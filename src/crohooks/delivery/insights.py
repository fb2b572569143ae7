"""What the portal shows of a hook's deliveries, read within the caller's tenant: a hook of
another tenant is missing here as everywhere (``HookService.get``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from crohooks.hooks.service import HookService
from crohooks.model import Delivery, DeliveryStatus
from crohooks.store.insights import Durations, Insights, LogFilter

HOURS_SHOWN = 24
LATEST_ATTEMPTS = 1000
"""The attempt durations' percentiles are those of the latest attempts, at most this many."""
CHARTED = (DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.PENDING)


@dataclass(frozen=True, slots=True)
class HourCount:
    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class HookHealth:
    hours: list[HourCount]
    """The last ``HOURS_SHOWN`` hours, oldest first, deliveries created in each by status."""
    durations: Durations


@dataclass(frozen=True, slots=True)
class SuccessRate:
    succeeded: int
    failed: int

    @property
    def percent(self) -> float | None:
        finished = self.succeeded + self.failed
        return None if not finished else 100.0 * self.succeeded / finished


class HookInsights:
    def __init__(self, hooks: HookService, insights: Insights) -> None:
        self._hooks = hooks
        self._insights = insights

    async def health(self, tenant_id: int, hook_id: int, *, now: datetime) -> HookHealth:
        await self._hooks.get(tenant_id, hook_id)
        start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS_SHOWN - 1)
        counted = await self._insights.hourly_outcomes(
            tenant_id, hook_id, start=start, hours=HOURS_SHOWN, statuses=CHARTED
        )
        hours = [
            HourCount(
                start=start + timedelta(hours=hour),
                counts={status.value: found.get(status.value, 0) for status in CHARTED},
            )
            for hour, found in enumerate(counted)
        ]
        durations = await self._insights.durations(
            tenant_id, hook_id, since=now - timedelta(hours=HOURS_SHOWN), latest=LATEST_ATTEMPTS
        )
        return HookHealth(hours=hours, durations=durations)

    async def success_rates(self, tenant_id: int, *, now: datetime) -> dict[int, SuccessRate]:
        rates = await self._insights.success_rates(
            tenant_id, since=now - timedelta(hours=HOURS_SHOWN)
        )
        return {hook_id: SuccessRate(*counts) for hook_id, counts in rates.items()}

    async def search(
        self, tenant_id: int, hook_id: int, found: LogFilter, *, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        await self._hooks.get(tenant_id, hook_id)
        return await self._insights.search_page(
            tenant_id, hook_id, found, limit=limit, offset=offset
        )

    async def recoverable(
        self, tenant_id: int, hook_id: int, *, since: datetime, until: datetime
    ) -> int:
        """How many failed deliveries ``DeliveryLog.recover`` would re-queue for this window."""
        await self._hooks.get(tenant_id, hook_id)
        return await self._insights.failed_in_window(tenant_id, hook_id, since=since, until=until)
