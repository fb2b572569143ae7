"""What the portal shows of a tenant's deliveries: outcomes per hour, attempt durations,
success rates, and the delivery log searched by status, event, time and id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from crohooks.model import Delivery
from crohooks.store.connector import Database, Statement

_COLUMNS = """id, tenant_id, hook_id, event_id, event, body, status, attempts, next_attempt_at,
    created_at, updated_at, completed_at, last_http_status, last_message"""

# Hours since ``since`` (0 for the oldest hour shown): each database has its own arithmetic.
_HOURLY = Statement(
    "insight_hourly",
    sqlite="""
    SELECT CAST((julianday(created_at) - julianday(:since)) * 24 AS INTEGER) AS hour,
           status, count(*) AS total
    FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND created_at >= :since
    GROUP BY 1, 2""",
    postgresql="""
    SELECT floor(extract(epoch FROM created_at - %(since)s) / 3600)::int AS hour,
           status, count(*) AS total
    FROM deliveries
    WHERE tenant_id = %(tenant_id)s AND hook_id = %(hook_id)s AND created_at >= %(since)s
    GROUP BY 1, 2""",
)
_RATES = Statement.shared(
    "insight_rates",
    """
    SELECT hook_id,
           sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) AS succeeded,
           sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed
    FROM deliveries
    WHERE tenant_id = :tenant_id AND created_at >= :since
    GROUP BY hook_id""",
)
_DURATION_COUNT = Statement.shared(
    "insight_duration_count",
    """
    SELECT count(*) AS total FROM attempts
    JOIN deliveries ON deliveries.id = attempts.delivery_id
    WHERE deliveries.tenant_id = :tenant_id AND deliveries.hook_id = :hook_id
      AND deliveries.created_at >= :since AND attempts.started_at >= :since""",
)
_DURATION_AT = Statement.shared(
    "insight_duration_at",
    """
    SELECT attempts.duration_ms FROM attempts
    JOIN deliveries ON deliveries.id = attempts.delivery_id
    WHERE deliveries.tenant_id = :tenant_id AND deliveries.hook_id = :hook_id
      AND deliveries.created_at >= :since AND attempts.started_at >= :since
    ORDER BY attempts.duration_ms LIMIT 1 OFFSET :offset""",
)
_DURATIONS = Statement(
    "insight_durations",
    sqlite="",  # no percentile functions: a count, then one ordered row per percentile
    postgresql="""
    SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY attempts.duration_ms) AS p50,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY attempts.duration_ms) AS p99
    FROM attempts JOIN deliveries ON deliveries.id = attempts.delivery_id
    WHERE deliveries.tenant_id = %(tenant_id)s AND deliveries.hook_id = %(hook_id)s
      AND deliveries.created_at >= %(since)s AND attempts.started_at >= %(since)s""",
)
# Each filter matches everything when its parameter is NULL (``COALESCE(:x, column)``); the
# time range is always bound, from the first to the last day a datetime can name.
_FILTERS = """
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id
      AND status = COALESCE(:status, status) AND event = COALESCE(:event, event)
      AND created_at >= :since AND created_at < :until
      AND (id = COALESCE(:search, id) OR event_id = :search)"""
_SEARCH_COUNT = Statement.shared(
    "insight_search_count",
    f"SELECT count(*) AS total FROM deliveries {_FILTERS}",  # noqa: S608 (constant text)
)
_SEARCH_PAGE = Statement.shared(
    "insight_search_page",
    f"""SELECT {_COLUMNS} FROM deliveries {_FILTERS}
    ORDER BY created_at DESC, id LIMIT :limit OFFSET :offset""",  # noqa: S608
)
_FAILED_IN_WINDOW = Statement.shared(
    "insight_failed_window",
    """
    SELECT count(*) AS total FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND status = 'failed'
      AND event <> 'Ping' AND created_at >= :since AND created_at < :until""",
)
_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LogFilter:
    status: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    """A delivery id or an event id (UUIDs)."""


@dataclass(frozen=True, slots=True)
class Durations:
    attempts: int
    p50_ms: float | None
    p99_ms: float | None


class Insights:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def hourly_outcomes(
        self, tenant_id: int, hook_id: int, *, since: datetime
    ) -> dict[tuple[int, str], int]:
        """``(hour since since, status) -> deliveries created then``."""
        rows = await self._db.fetch(
            _HOURLY, {"tenant_id": tenant_id, "hook_id": hook_id, "since": since}
        )
        return {(row["hour"], row["status"]): row["total"] for row in rows}

    async def success_rates(self, tenant_id: int, *, since: datetime) -> dict[int, tuple[int, int]]:
        """``hook id -> (succeeded, failed)`` among deliveries created since ``since``."""
        rows = await self._db.fetch(_RATES, {"tenant_id": tenant_id, "since": since})
        return {row["hook_id"]: (int(row["succeeded"]), int(row["failed"])) for row in rows}

    async def durations(self, tenant_id: int, hook_id: int, *, since: datetime) -> Durations:
        which = {"tenant_id": tenant_id, "hook_id": hook_id, "since": since}
        async with self._db.read() as conn:
            [counted] = await conn.fetch(_DURATION_COUNT, which)
            total = int(counted["total"])
            if not total:
                return Durations(0, None, None)
            if self._db.dialect == "postgresql":
                [row] = await conn.fetch(_DURATIONS, which)
                return Durations(total, row["p50"], row["p99"])
            found = []
            for share in (0.5, 0.99):
                offset = min(total - 1, int(share * total))
                [row] = await conn.fetch(_DURATION_AT, {**which, "offset": offset})
                found.append(float(row["duration_ms"]))
        return Durations(total, found[0], found[1])

    async def search_page(
        self, tenant_id: int, hook_id: int, found: LogFilter, *, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        which = {
            "tenant_id": tenant_id,
            "hook_id": hook_id,
            "status": found.status,
            "event": found.event,
            "since": found.since or _EARLIEST,
            "until": found.until or _LATEST,
            "search": found.search,
        }
        async with self._db.read() as conn:
            [counted] = await conn.fetch(_SEARCH_COUNT, which)
            rows = await conn.fetch(_SEARCH_PAGE, {**which, "limit": limit, "offset": offset})
        return [Delivery(**row) for row in rows], int(counted["total"])

    async def failed_in_window(
        self, tenant_id: int, hook_id: int, *, since: datetime, until: datetime
    ) -> int:
        """How many deliveries a recovery of this window would re-queue."""
        rows = await self._db.fetch(
            _FAILED_IN_WINDOW,
            {"tenant_id": tenant_id, "hook_id": hook_id, "since": since, "until": until},
        )
        return int(rows[0]["total"])
