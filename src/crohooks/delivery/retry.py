"""When a failed delivery is tried again, and when it stops (spec 3.2)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from crohooks.settings import Settings
from crohooks.store.deliveries import DeliveryStatus

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""The statuses whose ``Retry-After`` header is honoured."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: tuple[float, ...]
    jitter: float
    retry_after_max: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            schedule=settings.retry_schedule,
            jitter=settings.retry_jitter,
            retry_after_max=settings.retry_after_max_seconds,
        )

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    def decide(
        self,
        *,
        attempts_made: int,
        http_status: int,
        retry_after: str | None,
        now: datetime,
        rng: random.Random | None = None,
    ) -> tuple[DeliveryStatus, datetime | None]:
        """The delivery's next state after its ``attempts_made``-th attempt."""
        if 200 <= http_status < 300:
            return DeliveryStatus.SUCCEEDED, None
        if http_status == 410 or attempts_made >= self.max_attempts:
            return DeliveryStatus.FAILED, None
        delay = self.schedule[attempts_made - 1]
        jitter = (rng or random).uniform(-self.jitter, self.jitter)
        wait = delay * (1.0 + jitter)
        if http_status in RETRY_AFTER_STATUSES and retry_after is not None:
            asked = parse_retry_after(retry_after, now)
            if asked is not None:
                wait = min(max(asked, 1.0), self.retry_after_max)
        return DeliveryStatus.PENDING, now + timedelta(seconds=wait)


def parse_retry_after(value: str, now: datetime) -> float | None:
    """Seconds from ``Retry-After``: delta-seconds or an HTTP date; ``None`` if unreadable."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max((moment - now).total_seconds(), 0.0)
