"""API version pins per client, in the database so every API process agrees."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from crohooks.store.database import Database
from crohooks.store.schema import api_version_pins


class VersionPinRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, client: str) -> str | None:
        async with self._db.read() as conn:
            result = await conn.execute(
                select(api_version_pins.c.version).where(api_version_pins.c.client == client)
            )
            return result.scalar_one_or_none()

    async def pin(self, client: str, version: str, *, now: datetime) -> None:
        """Remember the version a client named; of two concurrent pins the last one wins."""
        values = {"client": client, "version": version, "updated_at": now}
        changes = {"version": version, "updated_at": now}
        key = [api_version_pins.c.client]
        async with self._db.write() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(
                    postgresql.insert(api_version_pins)
                    .values(**values)
                    .on_conflict_do_update(index_elements=key, set_=changes)
                )
            else:
                await conn.execute(
                    sqlite.insert(api_version_pins)
                    .values(**values)
                    .on_conflict_do_update(index_elements=key, set_=changes)
                )
