"""The delivery log of a hook: pages, one delivery with its attempts, redelivery, recovery,
and the pings recorded in it."""

from __future__ import annotations

import json
from datetime import datetime

from crohooks.model import Attempt, AttemptRecord, Delivery, DeliveryStatus
from crohooks.store.connector import Database, Row, Statement
from crohooks.store.ordering import lock_keys, settle_keys
from crohooks.store.outcomes import INSERT_ATTEMPT, RECORD_HOOK_OUTCOME, HookOutcomes, attempt_row

_COLUMNS = """id, tenant_id, hook_id, event_id, event, body, status, attempts, next_attempt_at,
    created_at, updated_at, completed_at, last_http_status, last_message"""
"""The columns of a ``Delivery``."""

# ``status = COALESCE(:status, status)``: without a status filter, every status matches.
_COUNT = Statement.shared(
    "log_count",
    """
    SELECT count(*) AS total FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND status = COALESCE(:status, status)""",
)
_PAGE = Statement.shared(
    "log_page",
    f"""
    SELECT {_COLUMNS} FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND status = COALESCE(:status, status)
    ORDER BY created_at DESC, id LIMIT :limit OFFSET :offset""",  # noqa: S608 (constant columns)
)
_ONE = Statement.shared(
    "log_delivery",
    f"""
    SELECT {_COLUMNS} FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND id = :id""",  # noqa: S608
)
_ATTEMPTS = Statement.shared(
    "log_attempts",
    """
    SELECT number, started_at, duration_ms, http_status, message, request_headers,
           response_headers, response_body
    FROM attempts WHERE delivery_id = :id ORDER BY number, id""",
)


# The id stays the same: receivers deduplicate on it. A keyed delivery waits for its turn
# in its key (``store/ordering.py``): its settling right after makes it due when it is.
def _with_due(name: str, sql: str) -> Statement:
    """``{due}`` in ``sql`` is ``:now``, typed on PostgreSQL (inside a CASE it can't infer
    the type from the column)."""
    return Statement(
        name,
        sqlite=sql.replace("{due}", ":now"),
        postgresql=Statement.shared(name, sql.replace("{due}", ":now::timestamp")).postgresql,
    )


_REDELIVER = _with_due(
    "log_redeliver",
    f"""
    UPDATE deliveries SET status = 'pending', completed_at = NULL, updated_at = :now,
                          next_attempt_at = CASE WHEN ordering_key IS NULL THEN {{due}} END,
                          lease_expires_at = NULL, leased_by = NULL, redelivered = true
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND id = :id AND status <> 'pending'
    RETURNING {_COLUMNS}, ordering_key""",  # noqa: S608
)
_RECOVER = _with_due(
    "log_recover",
    """
    UPDATE deliveries SET status = 'pending', completed_at = NULL, updated_at = :now,
                          next_attempt_at = CASE WHEN ordering_key IS NULL THEN {due} END,
                          redelivered = true
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND status = 'failed'
      AND event <> 'Ping' AND created_at >= :since AND created_at < :until
    RETURNING ordering_key""",
)
# The keys a redeliver or recover is about to change, read first so their locks are taken
# before the deliveries' rows, in the order every other writer of a key takes them.
_REDELIVER_KEY = Statement.shared(
    "log_redeliver_key",
    """
    SELECT ordering_key FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND id = :id
      AND ordering_key IS NOT NULL""",
)
_RECOVER_KEYS = Statement.shared(
    "log_recover_keys",
    """
    SELECT DISTINCT ordering_key FROM deliveries
    WHERE tenant_id = :tenant_id AND hook_id = :hook_id AND status = 'failed'
      AND event <> 'Ping' AND created_at >= :since AND created_at < :until
      AND ordering_key IS NOT NULL""",
)
_INSERT_PING = Statement.shared(
    "ping_insert",
    """
    INSERT INTO deliveries (id, tenant_id, hook_id, event_id, event, body, status, attempts,
                            deferrals, created_at, updated_at, completed_at,
                            last_http_status, last_message)
    VALUES (:delivery_id, :tenant_id, :hook_id, NULL, 'Ping', :body, :status, 1,
            0, :started_at, :now, :now, :http_status, :message)""",
)
# PostgreSQL: the ping's delivery and attempt and its hook's outcome in one statement, one
# round trip instead of five (BEGIN, three statements, COMMIT), still all or nothing. The
# attempt's foreign key is checked at the statement's end, after both inserts.
_RECORD_PING = Statement(
    "ping_record",
    sqlite="",  # no data-modifying WITH: three statements in a transaction instead
    postgresql=f"""
    WITH ping_delivery AS ({_INSERT_PING.postgresql}),
         ping_attempt AS ({INSERT_ATTEMPT.postgresql})
    {RECORD_HOOK_OUTCOME.postgresql}""",
)


class DeliveryRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_page(
        self, tenant_id: int, hook_id: int, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        """A page of a hook's deliveries, newest first, and how many there are in all."""
        which = {"tenant_id": tenant_id, "hook_id": hook_id, "status": status}
        async with self._db.read() as conn:
            [counted] = await conn.fetch(_COUNT, which)
            rows = await conn.fetch(_PAGE, {**which, "limit": limit, "offset": offset})
        return [_delivery(row) for row in rows], counted["total"]

    async def get(
        self, tenant_id: int, hook_id: int, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]] | None:
        async with self._db.read() as conn:
            found = await conn.fetch(
                _ONE, {"tenant_id": tenant_id, "hook_id": hook_id, "id": delivery_id}
            )
            if not found:
                return None
            attempts = await conn.fetch(_ATTEMPTS, {"id": delivery_id})
        return _delivery(found[0]), [_attempt(row) for row in attempts]

    async def redeliver(
        self, tenant_id: int, hook_id: int, delivery_id: str, *, now: datetime
    ) -> Delivery | None:
        """Make a finished delivery due again now, or a keyed one as soon as the head of its
        key has finished; ``None`` if it is pending or missing."""
        which = {"tenant_id": tenant_id, "hook_id": hook_id, "id": delivery_id, "now": now}
        async with self._db.write() as conn:
            rows = await conn.fetch(_REDELIVER, which)
            if not rows:
                return None
            key = rows[0].pop("ordering_key")
            if key is not None:
                await lock_keys(conn, self._db.dialect, [(hook_id, key)])
                await settle_keys(conn, self._db.dialect, [(hook_id, key)], now=now, collapse=False)
            conn.announce_work()
        return _delivery(rows[0])

    async def recover(
        self, tenant_id: int, hook_id: int, *, since: datetime, until: datetime, now: datetime
    ) -> int:
        """Re-queue the failed event deliveries of a window (pings are not re-sent); keyed
        ones take their turn in their keys, by sequence number."""
        which = {"tenant_id": tenant_id, "hook_id": hook_id, "since": since, "until": until}
        async with self._db.write() as conn:
            keyed = await conn.fetch(_RECOVER_KEYS, which)
            locked = {(hook_id, row["ordering_key"]) for row in keyed}
            await lock_keys(conn, self._db.dialect, locked)
            rows = await conn.fetch(_RECOVER, {**which, "now": now})
            keys = {(hook_id, row["ordering_key"]) for row in rows if row["ordering_key"]}
            # A delivery that failed in between: its key is locked now, out of order.
            await lock_keys(conn, self._db.dialect, keys - locked)
            await settle_keys(conn, self._db.dialect, keys, now=now, collapse=False)
            if rows:
                conn.announce_work()
        return len(rows)

    async def record_ping(
        self,
        *,
        delivery_id: str,
        tenant_id: int,
        hook_id: int,
        body: str,
        attempt: AttemptRecord,
        now: datetime,
    ) -> None:
        """A ping is a delivery of its own, attempted once, never retried."""
        succeeded = 200 <= attempt.http_status < 300
        outcome = HookOutcomes(tenant_id, hook_id)
        outcome.add(succeeded, attempt.started_at)
        params = {
            **attempt_row(delivery_id, 1, attempt),
            **outcome.params(),
            "body": body,
            "status": (DeliveryStatus.SUCCEEDED if succeeded else DeliveryStatus.FAILED).value,
            "now": now,
        }
        if self._db.dialect == "postgresql":
            await self._db.write_alone(_RECORD_PING, params)
            return
        async with self._db.write() as conn:
            await conn.execute(_INSERT_PING, params)
            await conn.execute(INSERT_ATTEMPT, params)
            await conn.execute(RECORD_HOOK_OUTCOME, params)


def _delivery(row: Row) -> Delivery:
    return Delivery(**row)


def _attempt(row: Row) -> Attempt:
    return Attempt(
        number=row["number"],
        started_at=row["started_at"],
        duration_ms=row["duration_ms"],
        http_status=row["http_status"],
        message=row["message"],
        request_headers=json.loads(row["request_headers"]),
        response_headers=json.loads(row["response_headers"]) if row["response_headers"] else None,
        response_body=row["response_body"],
    )
