"""What a tenant request settles before its own work: the API version its client is
pinned to (spec 1.3) and a hit on the tenant's rate limit.

With SQLite there is one process: pins are remembered in memory once read
(``VersionPinRepository``) and hits are counted in memory. With PostgreSQL every API
process shares both, so both are in the database, and one statement counts the hit and
reads the pin: one round trip per request where there were two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from crohooks.clock import utc_now
from crohooks.ratelimit import UNLIMITED, RateLimiter, Verdict, window_start
from crohooks.store.ratelimits import RateLimitCounters
from crohooks.store.versions import VersionPinRepository


@dataclass(frozen=True, slots=True)
class Admitted:
    pinned: str | None
    """The version the client is pinned to, if any."""
    verdict: Verdict


class Admission(Protocol):
    async def admit(self, client: str, key: str, *, limit: int) -> Admitted:
        """Read ``client``'s pin and count a hit on ``key`` (``limit`` a minute; 0: none)."""
        ...


class LocalAdmission:
    """The pin (remembered once read) and the hit (a ``MemoryRateLimiter``) one by one."""

    def __init__(self, pins: VersionPinRepository, limiter: RateLimiter) -> None:
        self._pins = pins
        self._limiter = limiter

    async def admit(self, client: str, key: str, *, limit: int) -> Admitted:
        pinned = await self._pins.get(client)
        verdict = await self._limiter.hit(key, limit=limit) if limit > 0 else UNLIMITED
        return Admitted(pinned, verdict)


class DatabaseAdmission:
    """The pin and the hit in one statement, shared by every process."""

    def __init__(self, pins: VersionPinRepository, counters: RateLimitCounters) -> None:
        self._pins = pins
        self._counters = counters

    async def admit(self, client: str, key: str, *, limit: int) -> Admitted:
        if limit <= 0:
            return Admitted(await self._pins.get(client), UNLIMITED)
        start, retry_after = window_start(utc_now())
        hits, pinned = await self._counters.hit_reading_pin(key, start, client=client)
        return Admitted(pinned, Verdict(hits <= limit, retry_after))
