"""When a failed delivery is tried again, and when it stops (spec 3.2)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from crohooks.model import DeliveryStatus
from crohooks.settings import Settings

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""The statuses whose ``Retry-After`` header is honoured."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """A delivery's next state after one attempt, as the outcome write stores it."""

    status: DeliveryStatus
    next_attempt_at: datetime | None
    deferred: bool = False
    """A short ``Retry-After`` was honoured without using a step of the schedule."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The retry schedule, and how ``Retry-After`` on 429/503 bends it.

    A delivery is at schedule step ``attempts - deferrals``. An attempt answered 429 or
    503 whose honoured ``Retry-After`` is shorter than the delay of that step (before
    jitter) is a *deferral*: the next attempt comes after the asked wait and the step is
    not used up, so a receiver asking for a short pause doesn't spend the day of retries
    the schedule promises. A deferral is granted at most ``max_deferrals`` times per
    delivery, and only while the deferred attempt stays within ``budget`` of the
    delivery's creation; otherwise the 429/503 uses its step like any failure, and waits
    the step's delay or the asked wait, whichever is longer. The last step has no delay to
    compare with and nothing to postpone: a 429/503 there ends the delivery.
    """

    schedule: tuple[float, ...]
    jitter: float
    retry_after_max: float
    max_deferrals: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            schedule=settings.retry_schedule,
            jitter=settings.retry_jitter,
            retry_after_max=settings.retry_after_max_seconds,
            max_deferrals=settings.retry_after_max_deferrals,
        )

    @property
    def max_attempts(self) -> int:
        """Attempts that use a step; deferrals come on top of them."""
        return len(self.schedule) + 1

    @property
    def budget(self) -> timedelta:
        """How long after its creation a delivery may still be deferred: the schedule's span."""
        return timedelta(seconds=sum(self.schedule))

    def decide(
        self,
        *,
        attempts_made: int,
        deferrals: int,
        created_at: datetime,
        http_status: int,
        retry_after: str | None,
        now: datetime,
        rng: random.Random | None = None,
    ) -> RetryDecision:
        """The delivery's next state after its ``attempts_made``-th attempt.

        ``deferrals`` is how many earlier attempts were deferrals; ``retry_after`` is the
        header of a 429/503 answer, ``None`` otherwise.
        """
        if 200 <= http_status < 300:
            return RetryDecision(DeliveryStatus.SUCCEEDED, None)
        if http_status == 410:
            return RetryDecision(DeliveryStatus.FAILED, None)
        steps_used = attempts_made - deferrals
        if steps_used >= self.max_attempts:
            return RetryDecision(DeliveryStatus.FAILED, None)
        delay = self.schedule[steps_used - 1]
        asked = self._asked_wait(http_status, retry_after, now)
        if (
            asked is not None
            and asked < delay
            and deferrals < self.max_deferrals
            and now + timedelta(seconds=asked) <= created_at + self.budget
        ):
            return RetryDecision(
                DeliveryStatus.PENDING, now + timedelta(seconds=asked), deferred=True
            )
        wait = delay * (1.0 + (rng or random).uniform(-self.jitter, self.jitter))
        if asked is not None:
            wait = max(wait, asked)
        return RetryDecision(DeliveryStatus.PENDING, now + timedelta(seconds=wait))

    def _asked_wait(self, http_status: int, retry_after: str | None, now: datetime) -> float | None:
        """The honoured ``Retry-After`` in seconds, within 1 s and ``retry_after_max``."""
        if http_status not in RETRY_AFTER_STATUSES or retry_after is None:
            return None
        asked = parse_retry_after(retry_after, now)
        if asked is None:
            return None
        return min(max(asked, 1.0), self.retry_after_max)


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
