"""Tenant records, kept for ``GET /tenants`` and created with ``crohooks tenant add``."""

from __future__ import annotations

import json
from collections.abc import Collection

from crohooks.errors import DuplicateKey
from crohooks.model import Tenant
from crohooks.store.connector import Database, Statement

_ADD = Statement.shared(
    "tenant_add",
    "INSERT INTO tenants"
    " (id, name, code, address, city, state, zip, email, phone, is_active, truck_limit,"
    " created_on)"
    " VALUES (:id, :name, :code, :address, :city, :state, :zip, :email, :phone, :is_active,"
    " :truck_limit, :created_on)",
)
# The grant list is a JSON array on SQLite (``ids_json``), an array on PostgreSQL (``ids``).
_COUNT_GRANTED = Statement(
    "tenants_count_granted",
    sqlite="SELECT count(*) AS total FROM tenants"
    " WHERE id IN (SELECT value FROM json_each(:ids_json))",
    postgresql="SELECT count(*) AS total FROM tenants WHERE id = ANY(%(ids)s)",
)
_PAGE_GRANTED = Statement(
    "tenants_page_granted",
    sqlite="SELECT id, name, code, address, city, state, zip, email, phone, is_active,"
    " truck_limit, created_on FROM tenants"
    " WHERE id IN (SELECT value FROM json_each(:ids_json))"
    " ORDER BY id LIMIT :limit OFFSET :offset",
    postgresql="SELECT id, name, code, address, city, state, zip, email, phone, is_active,"
    " truck_limit, created_on FROM tenants"
    " WHERE id = ANY(%(ids)s)"
    " ORDER BY id LIMIT %(limit)s OFFSET %(offset)s",
)


class TenantRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, tenant: Tenant) -> Tenant:
        values = {name: getattr(tenant, name) for name in Tenant.__dataclass_fields__}
        try:
            await self._db.write_alone(_ADD, values)
        except DuplicateKey as error:
            raise DuplicateKey(f"tenant {tenant.id} already exists") from error
        return tenant

    async def list_granted(
        self, granted: Collection[int], *, limit: int, offset: int
    ) -> tuple[list[Tenant], int]:
        """The tenants a token grants that have a record; tenant scoping is the grant list."""
        ids = sorted(granted)
        if not ids:
            return [], 0
        params = {"ids": ids, "ids_json": json.dumps(ids), "limit": limit, "offset": offset}
        async with self._db.read() as conn:
            (counted,) = await conn.fetch(_COUNT_GRANTED, params)
            rows = await conn.fetch(_PAGE_GRANTED, params)
        total: int = counted["total"]
        return [Tenant(**row) for row in rows], total
