"""What a worker does now and then besides delivering: auto-deactivation, retention, counts."""

from __future__ import annotations

from datetime import datetime, timedelta

from crohooks.store.connector import Database, Statement
from crohooks.store.hooks import HookRepository

_FAILING_HOOKS = Statement.shared(
    "housekeeping_failing_hooks",
    """
    SELECT id, tenant_id FROM hooks
    WHERE deleted_at IS NULL AND failing_since IS NOT NULL AND failing_since < :since
    ORDER BY id""",
)
_OLD_FINISHED_DELIVERIES = Statement.shared(
    "housekeeping_old_deliveries",
    """
    SELECT id FROM deliveries WHERE created_at < :older_than AND status <> 'pending'
    LIMIT :batch""",
)
_DELETE_ATTEMPTS = Statement.shared(
    "housekeeping_delete_attempts", "DELETE FROM attempts WHERE delivery_id = :id"
)
_DELETE_DELIVERY = Statement.shared(
    "housekeeping_delete_delivery", "DELETE FROM deliveries WHERE id = :id"
)
_DELETE_OLD_EVENTS = Statement.shared(
    "housekeeping_delete_events",
    # Events whose deliveries are all purged (or that had none).
    """
    DELETE FROM events WHERE id IN (
      SELECT e.id FROM events AS e
      WHERE e.accepted_at < :older_than
        AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id)
      LIMIT :batch)""",
)
_COUNTS = Statement.shared(
    "housekeeping_counts", "SELECT status, count(*) AS total FROM deliveries GROUP BY status"
)


class Housekeeping:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def deactivate_failing_hooks(
        self, *, failing_for: timedelta, now: datetime
    ) -> list[tuple[int, int]]:
        """Soft-delete hooks that have failed without one success for ``failing_for``;
        their ``(id, tenant_id)``."""
        reason = f"auto-deactivated: no success for {failing_for}"
        deactivated = []
        async with self._db.write() as conn:
            for row in await conn.fetch(_FAILING_HOOKS, {"since": now - failing_for}):
                hook_id, tenant_id = row["id"], row["tenant_id"]
                deleted = await HookRepository.soft_delete_in(
                    conn, tenant_id, hook_id, now=now, reason=reason
                )
                if deleted is not None:
                    deactivated.append((hook_id, tenant_id))
        return deactivated

    async def purge(self, *, older_than: datetime, batch: int = 500) -> int:
        """Delete one small batch of finished deliveries (with their attempts) and of events
        older than a time; how many deliveries went."""
        async with self._db.write() as conn:
            rows = await conn.fetch(
                _OLD_FINISHED_DELIVERIES, {"older_than": older_than, "batch": batch}
            )
            await conn.execute_many(_DELETE_ATTEMPTS, rows)
            await conn.execute_many(_DELETE_DELIVERY, rows)
            await conn.execute(_DELETE_OLD_EVENTS, {"older_than": older_than, "batch": batch})
        return len(rows)

    async def counts(self) -> dict[str, int]:
        """Deliveries by status (the queue depth of /metrics)."""
        return {row["status"]: row["total"] for row in await self._db.fetch(_COUNTS)}
