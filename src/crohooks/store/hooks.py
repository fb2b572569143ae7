"""Hooks, always read and written within one tenant."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError

from crohooks.errors import DuplicateKey
from crohooks.model import Hook
from crohooks.store.database import Conn, Database
from crohooks.store.schema import UTCDateTime, deliveries, hooks


def _hook(row: Row[Any]) -> Hook:
    m = row._mapping
    return Hook(
        id=m["id"],
        tenant_id=m["tenant_id"],
        url=m["url"],
        secret=m["secret"],
        events=tuple(json.loads(m["events"])),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        deleted_at=m["deleted_at"],
        last_http_success=m["last_http_success"],
        last_http_fail=m["last_http_fail"],
        previous_secret=m["previous_secret"],
        previous_secret_until=m["previous_secret_until"],
    )


_ONE_HOOK = select(hooks).where(
    and_(hooks.c.tenant_id == bindparam("tenant_id"), hooks.c.id == bindparam("hook_id"))
)
"""Built once: constructing a statement per call costs more than running it on SQLite."""


def _is_unique_violation(error: IntegrityError) -> bool:
    text = str(error.orig).lower()
    return "unique" in text or "duplicate key" in text


class HookRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, tenant_id: int, *, url: str, secret: str, events: tuple[str, ...], now: datetime
    ) -> Hook:
        try:
            async with self._db.write() as conn:
                result = await conn.execute(
                    hooks.insert()
                    .values(
                        tenant_id=tenant_id,
                        url=url,
                        secret=secret,
                        events=json.dumps(list(events)),
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(*hooks.c)
                )
                return _hook(result.one())
        except IntegrityError as error:
            if _is_unique_violation(error):
                raise DuplicateKey("url") from error
            raise

    async def get(self, tenant_id: int, hook_id: int) -> Hook | None:
        rows = await self._db.fetch(_ONE_HOOK, {"tenant_id": tenant_id, "hook_id": hook_id})
        return _hook(rows[0]) if rows else None

    @staticmethod
    async def get_in(conn: Conn, tenant_id: int, hook_id: int) -> Hook | None:
        result = await conn.execute(_ONE_HOOK, {"tenant_id": tenant_id, "hook_id": hook_id})
        row = result.first()
        return _hook(row) if row is not None else None

    async def list_page(
        self, tenant_id: int, *, deleted: bool | None, limit: int, offset: int
    ) -> tuple[list[Hook], int]:
        condition = hooks.c.tenant_id == tenant_id
        if deleted is True:
            condition = and_(condition, hooks.c.deleted_at.is_not(None))
        elif deleted is False:
            condition = and_(condition, hooks.c.deleted_at.is_(None))
        async with self._db.read() as conn:
            total = (await conn.execute(select(func.count()).where(condition))).scalar_one()
            rows = await conn.execute(
                select(hooks).where(condition).order_by(hooks.c.id).limit(limit).offset(offset)
            )
            return [_hook(row) for row in rows], total

    @staticmethod
    async def active_subscribed(conn: Conn, tenant_id: int, event: str) -> list[Hook]:
        rows = await conn.execute(
            select(hooks)
            .where(and_(hooks.c.tenant_id == tenant_id, hooks.c.deleted_at.is_(None)))
            .order_by(hooks.c.id)
        )
        return [hook for hook in map(_hook, rows) if event in hook.events]

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
        """Update an active hook; ``None`` if it is gone or was deleted meanwhile."""
        try:
            async with self._db.write() as conn:
                current = await self.get_in(conn, tenant_id, hook_id)
                if current is None or current.is_deleted:
                    return None
                values: dict[str, Any] = {"url": url, "updated_at": now}
                if events is not None:
                    values["events"] = json.dumps(list(events))
                if secret is not None and secret != current.secret:
                    values.update(
                        secret=secret,
                        previous_secret=current.secret,
                        previous_secret_until=secret_grace_until,
                    )
                result = await conn.execute(
                    update(hooks)
                    .where(
                        and_(
                            hooks.c.tenant_id == tenant_id,
                            hooks.c.id == hook_id,
                            hooks.c.deleted_at.is_(None),
                        )
                    )
                    .values(**values)
                    .returning(*hooks.c)
                )
                row = result.first()
                return _hook(row) if row is not None else None
        except IntegrityError as error:
            if _is_unique_violation(error):
                raise DuplicateKey("url") from error
            raise

    async def soft_delete(
        self, tenant_id: int, hook_id: int, *, now: datetime, reason: str = "deleted by user"
    ) -> Hook | None:
        """Soft-delete an active hook; ``None`` if it is not active (missing or deleted)."""
        async with self._db.write() as conn:
            return await self.soft_delete_in(conn, tenant_id, hook_id, now=now, reason=reason)

    @staticmethod
    async def soft_delete_in(
        conn: Conn, tenant_id: int, hook_id: int, *, now: datetime, reason: str
    ) -> Hook | None:
        result = await conn.execute(
            update(hooks)
            .where(
                and_(
                    hooks.c.tenant_id == tenant_id,
                    hooks.c.id == hook_id,
                    hooks.c.deleted_at.is_(None),
                )
            )
            .values(deleted_at=now, updated_at=now, deleted_reason=reason)
            .returning(*hooks.c)
        )
        row = result.first()
        if row is None:
            return None
        await cancel_pending_deliveries(conn, [hook_id], now=now)
        return _hook(row)

    @staticmethod
    async def record_outcome(
        conn: Conn, tenant_id: int, hook_id: int, *, succeeded: bool, at: datetime
    ) -> None:
        """Move ``last_http_success``/``last_http_fail`` forward (never back) after an attempt.

        ``failing_since`` marks the first failure after the latest success: auto-deactivation
        measures from it.
        """
        statement = _RECORD_SUCCESS if succeeded else _RECORD_FAILURE
        await conn.execute(statement, {"b_tenant": tenant_id, "b_hook": hook_id, "b_at": at})


def record_outcome_statement(*, succeeded: bool) -> Any:
    """``UPDATE hooks`` moving ``last_http_*`` forward; binds ``b_tenant``, ``b_hook``,
    ``b_at``."""
    moment = bindparam("b_at", type_=UTCDateTime)
    values: dict[str, Any]
    if succeeded:
        values = {
            "last_http_success": case(
                (hooks.c.last_http_success > moment, hooks.c.last_http_success), else_=moment
            ),
            "failing_since": None,
        }
    else:
        values = {
            "last_http_fail": case(
                (hooks.c.last_http_fail > moment, hooks.c.last_http_fail), else_=moment
            ),
            "failing_since": func.coalesce(hooks.c.failing_since, moment),
        }
    return (
        update(hooks)
        .where(and_(hooks.c.tenant_id == bindparam("b_tenant"), hooks.c.id == bindparam("b_hook")))
        .values(**values)
    )


_RECORD_SUCCESS = record_outcome_statement(succeeded=True)
_RECORD_FAILURE = record_outcome_statement(succeeded=False)


async def cancel_pending_deliveries(conn: Conn, hook_ids: list[int], *, now: datetime) -> None:
    """A deleted hook receives nothing more: its queued deliveries end as cancelled."""
    await conn.execute(
        update(deliveries)
        .where(and_(deliveries.c.hook_id.in_(hook_ids), deliveries.c.status == "pending"))
        .values(
            status="cancelled",
            completed_at=now,
            updated_at=now,
            next_attempt_at=None,
            lease_expires_at=None,
            leased_by=None,
            last_message="hook deleted",
        )
    )
