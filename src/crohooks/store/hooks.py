"""Hooks, always read and written within one tenant."""

from __future__ import annotations

import json
from datetime import datetime

from crohooks.errors import DuplicateKey
from crohooks.model import Hook
from crohooks.store.connector import Connection, Database, Row, Statement
from crohooks.store.queue import cancel_pending_deliveries


def _hook(row: Row) -> Hook:
    return Hook(
        id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        secret=row["secret"],
        events=tuple(json.loads(row["events"])),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
        last_http_success=row["last_http_success"],
        last_http_fail=row["last_http_fail"],
        previous_secret=row["previous_secret"],
        previous_secret_until=row["previous_secret_until"],
    )


# Every statement that hands back hooks names the columns ``_hook`` reads.
_CREATE = Statement.shared(
    "hook_create",
    "INSERT INTO hooks (tenant_id, url, secret, events, created_at, updated_at)"
    " VALUES (:tenant_id, :url, :secret, :events, :now, :now)"
    " RETURNING id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
    " created_at, updated_at, deleted_at, last_http_success, last_http_fail",
)
_ONE = Statement.shared(
    "hook_one",
    "SELECT id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
    " created_at, updated_at, deleted_at, last_http_success, last_http_fail"
    " FROM hooks WHERE tenant_id = :tenant_id AND id = :hook_id",
)
_COUNT = {
    None: Statement.shared(
        "hooks_count", "SELECT count(*) AS total FROM hooks WHERE tenant_id = :tenant_id"
    ),
    True: Statement.shared(
        "hooks_count_deleted",
        "SELECT count(*) AS total FROM hooks"
        " WHERE tenant_id = :tenant_id AND deleted_at IS NOT NULL",
    ),
    False: Statement.shared(
        "hooks_count_active",
        "SELECT count(*) AS total FROM hooks WHERE tenant_id = :tenant_id AND deleted_at IS NULL",
    ),
}
_PAGE = {
    None: Statement.shared(
        "hooks_page",
        "SELECT id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
        " created_at, updated_at, deleted_at, last_http_success, last_http_fail"
        " FROM hooks WHERE tenant_id = :tenant_id"
        " ORDER BY id LIMIT :limit OFFSET :offset",
    ),
    True: Statement.shared(
        "hooks_page_deleted",
        "SELECT id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
        " created_at, updated_at, deleted_at, last_http_success, last_http_fail"
        " FROM hooks WHERE tenant_id = :tenant_id AND deleted_at IS NOT NULL"
        " ORDER BY id LIMIT :limit OFFSET :offset",
    ),
    False: Statement.shared(
        "hooks_page_active",
        "SELECT id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
        " created_at, updated_at, deleted_at, last_http_success, last_http_fail"
        " FROM hooks WHERE tenant_id = :tenant_id AND deleted_at IS NULL"
        " ORDER BY id LIMIT :limit OFFSET :offset",
    ),
}
"""By ``list_page``'s ``deleted``: every hook, the deleted ones, the active ones."""

_UPDATE = Statement.shared(
    "hook_update",
    "UPDATE hooks SET url = :url, events = COALESCE(:events, events), updated_at = :now"
    " WHERE tenant_id = :tenant_id AND id = :hook_id AND deleted_at IS NULL"
    " RETURNING id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
    " created_at, updated_at, deleted_at, last_http_success, last_http_fail",
)
_UPDATE_WITH_NEW_SECRET = Statement.shared(
    "hook_update_with_new_secret",
    "UPDATE hooks SET url = :url, events = COALESCE(:events, events), updated_at = :now,"
    " secret = :secret, previous_secret = :previous_secret,"
    " previous_secret_until = :previous_secret_until"
    " WHERE tenant_id = :tenant_id AND id = :hook_id AND deleted_at IS NULL"
    " RETURNING id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
    " created_at, updated_at, deleted_at, last_http_success, last_http_fail",
)
_SOFT_DELETE = Statement.shared(
    "hook_soft_delete",
    "UPDATE hooks SET deleted_at = :now, updated_at = :now, deleted_reason = :reason"
    " WHERE tenant_id = :tenant_id AND id = :hook_id AND deleted_at IS NULL"
    " RETURNING id, tenant_id, url, secret, events, previous_secret, previous_secret_until,"
    " created_at, updated_at, deleted_at, last_http_success, last_http_fail",
)
_RECORD_SUCCESS = Statement.shared(
    "hook_record_success",
    "UPDATE hooks SET"
    " last_http_success = CASE WHEN last_http_success > :at THEN last_http_success ELSE :at END,"
    " failing_since = NULL"
    " WHERE tenant_id = :tenant_id AND id = :hook_id",
)
_RECORD_FAILURE = Statement.shared(
    "hook_record_failure",
    "UPDATE hooks SET"
    " last_http_fail = CASE WHEN last_http_fail > :at THEN last_http_fail ELSE :at END,"
    " failing_since = COALESCE(failing_since, :at)"
    " WHERE tenant_id = :tenant_id AND id = :hook_id",
)


class HookRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, tenant_id: int, *, url: str, secret: str, events: tuple[str, ...], now: datetime
    ) -> Hook:
        params = {
            "tenant_id": tenant_id,
            "url": url,
            "secret": secret,
            "events": json.dumps(list(events)),
            "now": now,
        }
        try:
            (row,) = await self._db.write_alone(_CREATE, params)
        except DuplicateKey as error:
            raise DuplicateKey("url") from error
        return _hook(row)

    async def get(self, tenant_id: int, hook_id: int) -> Hook | None:
        rows = await self._db.fetch(_ONE, {"tenant_id": tenant_id, "hook_id": hook_id})
        return _hook(rows[0]) if rows else None

    @staticmethod
    async def get_in(conn: Connection, tenant_id: int, hook_id: int) -> Hook | None:
        rows = await conn.fetch(_ONE, {"tenant_id": tenant_id, "hook_id": hook_id})
        return _hook(rows[0]) if rows else None

    async def list_page(
        self, tenant_id: int, *, deleted: bool | None, limit: int, offset: int
    ) -> tuple[list[Hook], int]:
        params = {"tenant_id": tenant_id, "limit": limit, "offset": offset}
        async with self._db.read() as conn:
            (counted,) = await conn.fetch(_COUNT[deleted], params)
            rows = await conn.fetch(_PAGE[deleted], params)
        total: int = counted["total"]
        return [_hook(row) for row in rows], total

    async def update(
        self,
        tenant_id: int,
        hook_id: int,
        *,
        url: str,
        events: tuple[str, ...] | None,
        secret: str | None,
        secret_grace_until: datetime,
        now: datetime,
    ) -> Hook | None:
        """Update an active hook; ``None`` if it is gone or was deleted meanwhile.

        ``None`` events keep the hook's; a new secret keeps the one it replaces signing
        until ``secret_grace_until``.
        """
        params: dict[str, object] = {
            "tenant_id": tenant_id,
            "hook_id": hook_id,
            "url": url,
            "events": None if events is None else json.dumps(list(events)),
            "now": now,
        }
        try:
            async with self._db.write() as conn:
                current = await self.get_in(conn, tenant_id, hook_id)
                if current is None or current.is_deleted:
                    return None
                statement = _UPDATE
                if secret is not None and secret != current.secret:
                    statement = _UPDATE_WITH_NEW_SECRET
                    params.update(
                        secret=secret,
                        previous_secret=current.secret,
                        previous_secret_until=secret_grace_until,
                    )
                rows = await conn.fetch(statement, params)
        except DuplicateKey as error:
            raise DuplicateKey("url") from error
        return _hook(rows[0]) if rows else None

    async def soft_delete(
        self, tenant_id: int, hook_id: int, *, now: datetime, reason: str = "deleted by user"
    ) -> Hook | None:
        """Soft-delete an active hook; ``None`` if it is not active (missing or deleted)."""
        async with self._db.write() as conn:
            return await self.soft_delete_in(conn, tenant_id, hook_id, now=now, reason=reason)

    @staticmethod
    async def soft_delete_in(
        conn: Connection, tenant_id: int, hook_id: int, *, now: datetime, reason: str
    ) -> Hook | None:
        params = {"tenant_id": tenant_id, "hook_id": hook_id, "now": now, "reason": reason}
        rows = await conn.fetch(_SOFT_DELETE, params)
        if not rows:
            return None
        await cancel_pending_deliveries(conn, [hook_id], now=now)
        return _hook(rows[0])

    @staticmethod
    async def record_outcome(
        conn: Connection, tenant_id: int, hook_id: int, *, succeeded: bool, at: datetime
    ) -> None:
        """Move ``last_http_success``/``last_http_fail`` forward (never back) after an attempt.

        ``failing_since`` marks the first failure after the latest success: auto-deactivation
        measures from it.
        """
        statement = _RECORD_SUCCESS if succeeded else _RECORD_FAILURE
        await conn.execute(statement, {"tenant_id": tenant_id, "hook_id": hook_id, "at": at})
