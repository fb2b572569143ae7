"""Fixed-window hit counters in the database, shared by every API process."""

from __future__ import annotations

from datetime import datetime

from crohooks.store.connector import Database, Statement

_HIT = Statement.shared(
    "rate_limit_hit",
    'INSERT INTO rate_limits ("key", window_start, hits) VALUES (:key, :window_start, 1)'
    ' ON CONFLICT ("key", window_start) DO UPDATE SET hits = rate_limits.hits + 1'
    " RETURNING hits",
)
_HIT_READING_PIN = Statement.shared(
    "rate_limit_hit_reading_pin",
    'INSERT INTO rate_limits ("key", window_start, hits) VALUES (:key, :window_start, 1)'
    ' ON CONFLICT ("key", window_start) DO UPDATE SET hits = rate_limits.hits + 1'
    " RETURNING hits,"
    " (SELECT version FROM api_version_pins WHERE client = :client) AS version",
)
_PURGE = Statement.shared(
    "rate_limit_purge", "DELETE FROM rate_limits WHERE window_start < :before"
)


class RateLimitCounters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def hit(self, key: str, window_start: datetime) -> int:
        """Count one hit in the window and return the window's count, atomically."""
        # One statement, its own transaction; the table is UNLOGGED on PostgreSQL, so the
        # commit does not wait for a WAL flush (counters are lost on a crash: by design).
        rows = await self._db.write_alone(_HIT, {"key": key, "window_start": window_start})
        count: int = rows[0]["hits"]
        return count

    async def hit_reading_pin(
        self, key: str, window_start: datetime, *, client: str
    ) -> tuple[int, str | None]:
        """``hit``, and the API version ``client`` is pinned to, in the same round trip."""
        rows = await self._db.write_alone(
            _HIT_READING_PIN, {"key": key, "window_start": window_start, "client": client}
        )
        return rows[0]["hits"], rows[0]["version"]

    async def purge(self, *, before: datetime) -> None:
        await self._db.write_alone(_PURGE, {"before": before})
