"""API version pins per client, in the database so every API process agrees."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from crohooks.store.database import Database
from crohooks.store.schema import api_version_pins

_PIN = select(api_version_pins.c.version).where(api_version_pins.c.client == bindparam("client"))


class VersionPinRepository:
    """Every authenticated request reads its client's pin, so the read is kept cheap.

    With SQLite there is exactly one process (spec 4.4), so the pins it has read or written
    are remembered in memory, written through on every change; with PostgreSQL other API
    processes may change a pin at any moment, so every read goes to the database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[str, str | None] | None = {} if db.is_sqlite else None

    async def get(self, client: str) -> str | None:
        known = self._known
        if known is not None and client in known:
            return known[client]
        rows = await self._db.fetch(_PIN, {"client": client})
        version: str | None = rows[0].version if rows else None
        if known is not None:
            if len(known) >= 10_000:
                known.clear()
            known[client] = version
        return version

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
        if self._known is not None:
            self._known[client] = version
