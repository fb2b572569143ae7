"""Tenant records, kept for ``GET /tenants`` and created with ``crohooks tenant add``."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crohooks.errors import DuplicateKey
from crohooks.model import Tenant
from crohooks.store.database import Database
from crohooks.store.schema import tenants


class TenantRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, tenant: Tenant) -> Tenant:
        try:
            async with self._db.write() as conn:
                await conn.execute(tenants.insert().values(**_values(tenant)))
        except IntegrityError as error:
            raise DuplicateKey(f"tenant {tenant.id} already exists") from error
        return tenant

    async def list_granted(
        self, granted: Collection[int], *, limit: int, offset: int
    ) -> tuple[list[Tenant], int]:
        """The tenants a token grants that have a record; tenant scoping is the grant list."""
        ids = sorted(granted)
        if not ids:
            return [], 0
        condition = tenants.c.id.in_(ids)
        async with self._db.read() as conn:
            total = (await conn.execute(select(func.count()).where(condition))).scalar_one()
            rows = await conn.execute(
                select(tenants).where(condition).order_by(tenants.c.id).limit(limit).offset(offset)
            )
            return [Tenant(**row._mapping) for row in rows], total


def _values(tenant: Tenant) -> dict[str, Any]:
    return {name: getattr(tenant, name) for name in Tenant.__dataclass_fields__}
