"""What a worker does now and then besides delivering: auto-deactivation, retention, counts."""

from __future__ import annotations

from datetime import datetime, timedelta

from crohooks.store.connector import Database, Statement
from crohooks.store.hook_settings import HookSettingsRepository

AUTO_DISABLED_BY = "crohooks"
"""``disabled_by`` of a hook that housekeeping disabled."""

_FAILING_HOOKS = Statement.shared(
    "housekeeping_failing_hooks",
    """
    SELECT id, tenant_id FROM hooks
    WHERE deleted_at IS NULL AND disabled_at IS NULL
      AND failing_since IS NOT NULL AND failing_since < :since
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
_EXPIRE_HELD = Statement.shared(
    "housekeeping_expire_held",
    # A disabled hook's deliveries wait for it up to the retention period, no longer.
    """
    UPDATE deliveries SET status = 'cancelled', completed_at = :now, updated_at = :now,
                          next_attempt_at = NULL, lease_expires_at = NULL, leased_by = NULL,
                          last_message = 'expired while the hook was disabled'
    WHERE status = 'pending' AND created_at < :older_than
      AND hook_id IN (SELECT id FROM hooks WHERE disabled_at IS NOT NULL)""",
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
        """Disable hooks that have failed without one success for ``failing_for``; their
        ``(id, tenant_id)``. Disabled, not deleted: their deliveries wait and an owner can
        enable them again."""
        reason = f"auto-disabled: no success for {failing_for}"
        deactivated = []
        async with self._db.write() as conn:
            for row in await conn.fetch(_FAILING_HOOKS, {"since": now - failing_for}):
                hook_id, tenant_id = row["id"], row["tenant_id"]
                disabled = await HookSettingsRepository.disable_in(
                    conn, tenant_id, hook_id, reason=reason, by=AUTO_DISABLED_BY, now=now
                )
                if disabled is not None:
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

    async def expire_held(self, *, older_than: datetime, now: datetime) -> int:
        """Cancel the deliveries disabled hooks have held past retention (``purge`` then
        removes them); how many."""
        async with self._db.write() as conn:
            return await conn.execute(_EXPIRE_HELD, {"older_than": older_than, "now": now})

    async def counts(self) -> dict[str, int]:
        """Deliveries by status (the queue depth of /metrics)."""
        return {row["status"]: row["total"] for row in await self._db.fetch(_COUNTS)}
