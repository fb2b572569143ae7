"""Rate limits: per tenant on the API, per hook on ping (fixed one-minute windows).

With PostgreSQL several API processes serve one tenant, so the counters live in the
database; with SQLite there is one process by design and counting in memory is exact
and spares a write per request.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from crohooks.clock import utc_now
from crohooks.store.ratelimits import RateLimitCounters

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int


class RateLimiter(Protocol):
    async def hit(self, key: str, *, limit: int) -> Verdict: ...


UNLIMITED = Verdict(allowed=True, retry_after=0)


def _window(now: datetime) -> tuple[int, int]:
    """The number of the window ``now`` falls in, and the seconds until the next one."""
    epoch = now.timestamp()
    window = math.floor(epoch / WINDOW_SECONDS)
    return window, max(1, math.ceil((window + 1) * WINDOW_SECONDS - epoch))


def window_start(now: datetime) -> tuple[datetime, int]:
    """When the window ``now`` falls in began, and the seconds until the next one."""
    window, retry_after = _window(now)
    return datetime.fromtimestamp(window * WINDOW_SECONDS, UTC), retry_after


class MemoryRateLimiter:
    def __init__(self) -> None:
        self._window: int | None = None
        self._hits: Counter[str] = Counter()

    async def hit(self, key: str, *, limit: int) -> Verdict:
        window, retry_after = _window(utc_now())
        if window != self._window:
            self._window, self._hits = window, Counter()
        self._hits[key] += 1
        return Verdict(self._hits[key] <= limit, retry_after)


class DatabaseRateLimiter:
    def __init__(self, counters: RateLimitCounters) -> None:
        self._counters = counters

    async def hit(self, key: str, *, limit: int) -> Verdict:
        start, retry_after = window_start(utc_now())
        count = await self._counters.hit(key, start)
        return Verdict(count <= limit, retry_after)
