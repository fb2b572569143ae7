"""Tenant records, kept for ``GET /tenants``, written and read by ``crohooks tenant``."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

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
_COLUMNS = (
    "id, name, code, address, city, state, zip, email, phone, is_active, truck_limit, created_on"
)
_COUNT_ALL = Statement.shared("tenants_count", "SELECT count(*) AS total FROM tenants")
_PAGE_ALL = Statement.shared(
    "tenants_page",
    f"SELECT {_COLUMNS} FROM tenants ORDER BY id LIMIT :limit OFFSET :offset",  # noqa: S608
)
_ONE = Statement.shared(
    "tenant_one",
    f"SELECT {_COLUMNS} FROM tenants WHERE id = :id",  # noqa: S608
)
_UPDATE = Statement.shared(
    "tenant_update",
    "UPDATE tenants SET name = :name, code = :code, address = :address, city = :city,"
    " state = :state, zip = :zip, email = :email, phone = :phone, is_active = :is_active,"
    " truck_limit = :truck_limit WHERE id = :id",
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

    async def list_page(self, *, limit: int, offset: int) -> tuple[list[Tenant], int]:
        """Every tenant record, for the operator (who has the database, not a token)."""
        async with self._db.read() as conn:
            (counted,) = await conn.fetch(_COUNT_ALL)
            rows = await conn.fetch(_PAGE_ALL, {"limit": limit, "offset": offset})
        total: int = counted["total"]
        return [Tenant(**row) for row in rows], total

    async def update(self, tenant_id: int, changes: Mapping[str, Any]) -> Tenant | None:
        """The record with ``changes`` applied (``None`` if there is none); the id and
        ``created_on`` never change."""
        async with self._db.write() as conn:
            found = await conn.fetch(_ONE, {"id": tenant_id})
            if not found:
                return None
            changed = replace(Tenant(**found[0]), **changes)
            values = {name: getattr(changed, name) for name in Tenant.__dataclass_fields__}
            await conn.execute(_UPDATE, values)
        return changed
