"""crohooks' own settings of a hook (its controls), always read and written within one tenant.

They live in columns of ``hooks`` beside CRO's fields, read and written here (the queue's
claim reads what a delivery needs); the CRO model (``store/hooks.py``) never sees them.
A new setting is one column, named in each statement's column list, and one field of
``HookSettings``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from crohooks.model import HookSettings, Ordering, RateLimit, ReceiverAuth
from crohooks.store.connector import Connection, Database, Row, Statement

# Every statement that hands back settings names the columns ``_settings`` reads.
_ONE = Statement.shared(
    "hook_settings_one",
    "SELECT id, tenant_id, deleted_at, headers, auth, max_in_flight, filter,"
    " rate_per_second, rate_burst, ordering,"
    " disabled_at, disabled_reason, disabled_by"
    " FROM hooks WHERE tenant_id = :tenant_id AND id = :hook_id",
)
_WRITE = Statement.shared(
    "hook_settings_write",
    "UPDATE hooks SET headers = :headers, auth = :auth, max_in_flight = :max_in_flight,"
    " filter = :filter, rate_per_second = :rate_per_second, rate_burst = :rate_burst,"
    " ordering = :ordering,"
    " rate_next_at = CASE WHEN :rate_changed = 1 THEN NULL ELSE rate_next_at END,"
    " updated_at = :now"
    " WHERE tenant_id = :tenant_id AND id = :hook_id AND deleted_at IS NULL"
    " RETURNING id, tenant_id, deleted_at, headers, auth, max_in_flight, filter,"
    " rate_per_second, rate_burst, ordering,"
    " disabled_at, disabled_reason, disabled_by",
)
# Disabling a disabled hook changes nothing: the first reason, time and author stay.
_DISABLE = Statement.shared(
    "hook_settings_disable",
    "UPDATE hooks SET disabled_at = COALESCE(disabled_at, :now),"
    " disabled_reason = CASE WHEN disabled_at IS NULL THEN :reason ELSE disabled_reason END,"
    " disabled_by = CASE WHEN disabled_at IS NULL THEN :by ELSE disabled_by END"
    " WHERE tenant_id = :tenant_id AND id = :hook_id AND deleted_at IS NULL"
    " RETURNING id, tenant_id, deleted_at, headers, auth, max_in_flight, filter,"
    " rate_per_second, rate_burst, ordering,"
    " disabled_at, disabled_reason, disabled_by",
)
# Enabling starts the failure clock again: a hook enabled after a fix is not disabled
# again by the next housekeeping round for failures from before it.
_ENABLE = Statement.shared(
    "hook_settings_enable",
    "UPDATE hooks SET disabled_at = NULL, disabled_reason = NULL, disabled_by = NULL,"
    " failing_since = NULL"
    " WHERE tenant_id = :tenant_id AND id = :hook_id AND deleted_at IS NULL"
    " RETURNING id, tenant_id, deleted_at, headers, auth, max_in_flight, filter,"
    " rate_per_second, rate_burst, ordering,"
    " disabled_at, disabled_reason, disabled_by",
)


def _settings(row: Row) -> HookSettings:
    auth: dict[str, Any] | None = json.loads(row["auth"]) if row["auth"] else None
    return HookSettings(
        hook_id=row["id"],
        tenant_id=row["tenant_id"],
        deleted_at=row["deleted_at"],
        headers=json.loads(row["headers"]) if row["headers"] else {},
        auth=ReceiverAuth(**auth) if auth is not None else None,
        max_in_flight=row["max_in_flight"],
        filter=row["filter"],
        rate_limit=RateLimit(row["rate_per_second"], row["rate_burst"] or 0)
        if row["rate_per_second"] is not None
        else None,
        ordering=ordering_mode(row["ordering"]),
        disabled_at=row["disabled_at"],
        disabled_reason=row["disabled_reason"],
        disabled_by=row["disabled_by"],
    )


def ordering_mode(stored: str) -> Ordering:
    """The ``ordering`` column as the mode it names (only ``all`` and ``latest`` are written)."""
    if stored not in ("all", "latest"):
        raise ValueError(f"unknown ordering mode {stored!r}")
    return "latest" if stored == "latest" else "all"


def stored_headers(headers: dict[str, str]) -> str | None:
    """The ``headers`` column's text (``None`` when there are none)."""
    return json.dumps(headers, sort_keys=True) if headers else None


def stored_auth(auth: ReceiverAuth | None) -> str | None:
    """The ``auth`` column's text."""
    if auth is None:
        return None
    return json.dumps(
        {"scheme": auth.scheme, "credential": auth.credential, "username": auth.username},
        sort_keys=True,
    )


def outbound_headers(headers: str | None, auth: str | None) -> dict[str, str]:
    """The receiver headers of a hook from its two columns, as the queue's claim reads them."""
    found: dict[str, str] = json.loads(headers) if headers else {}
    if auth:
        found["Authorization"] = ReceiverAuth(**json.loads(auth)).header()
    return found


class HookSettingsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, tenant_id: int, hook_id: int) -> HookSettings | None:
        rows = await self._db.fetch(_ONE, {"tenant_id": tenant_id, "hook_id": hook_id})
        return _settings(rows[0]) if rows else None

    async def update(
        self,
        tenant_id: int,
        hook_id: int,
        change: Callable[[HookSettings], HookSettings],
        *,
        now: datetime,
    ) -> HookSettings | None:
        """Apply ``change`` to the current settings in one transaction; ``None`` if the hook
        is missing or deleted."""
        async with self._db.write() as conn:
            rows = await conn.fetch(_ONE, {"tenant_id": tenant_id, "hook_id": hook_id})
            if not rows or rows[0]["deleted_at"] is not None:
                return None
            current = _settings(rows[0])
            wanted = change(current)
            written = await conn.fetch(
                _WRITE,
                {
                    "tenant_id": tenant_id,
                    "hook_id": hook_id,
                    "headers": stored_headers(dict(wanted.headers)),
                    "auth": stored_auth(wanted.auth),
                    "max_in_flight": wanted.max_in_flight,
                    "filter": wanted.filter,
                    "rate_per_second": wanted.rate_limit.per_second if wanted.rate_limit else None,
                    "rate_burst": wanted.rate_limit.burst if wanted.rate_limit else None,
                    "rate_changed": int(wanted.rate_limit != current.rate_limit),
                    "ordering": wanted.ordering,
                    "now": now,
                },
            )
            if written and (wanted.max_in_flight, wanted.rate_limit) != (
                current.max_in_flight,
                current.rate_limit,
            ):
                conn.announce_work()  # a raised cap or rate makes room at once
        return _settings(written[0]) if written else None

    async def disable(
        self, tenant_id: int, hook_id: int, *, reason: str, by: str, now: datetime
    ) -> HookSettings | None:
        """Disable an active hook (its deliveries wait); ``None`` if missing or deleted."""
        async with self._db.write() as conn:
            return await self.disable_in(conn, tenant_id, hook_id, reason=reason, by=by, now=now)

    @staticmethod
    async def disable_in(
        conn: Connection, tenant_id: int, hook_id: int, *, reason: str, by: str, now: datetime
    ) -> HookSettings | None:
        params = {"tenant_id": tenant_id, "hook_id": hook_id, "reason": reason, "by": by}
        rows = await conn.fetch(_DISABLE, {**params, "now": now})
        return _settings(rows[0]) if rows else None

    async def enable(self, tenant_id: int, hook_id: int) -> HookSettings | None:
        """Enable an active hook: its waiting deliveries fall due; ``None`` if missing or
        deleted."""
        async with self._db.write() as conn:
            rows = await conn.fetch(_ENABLE, {"tenant_id": tenant_id, "hook_id": hook_id})
            if rows:
                conn.announce_work()
        return _settings(rows[0]) if rows else None
