"""API version pins per client, in the database so every API process agrees."""

from __future__ import annotations

from datetime import datetime

from crohooks.store.connector import Database, Statement

_PIN = Statement.shared(
    "version_pin", "SELECT version FROM api_version_pins WHERE client = :client"
)
_SET_PIN = Statement.shared(
    "version_pin_set",
    "INSERT INTO api_version_pins (client, version, updated_at) VALUES (:client, :version, :now)"
    " ON CONFLICT (client) DO UPDATE"
    " SET version = excluded.version, updated_at = excluded.updated_at",
)


class VersionPinRepository:
    """Every authenticated request reads its client's pin, so the read is kept cheap.

    With SQLite there is exactly one process (spec 4.4), so the pins it has read or written
    are remembered in memory, written through on every change; with PostgreSQL other API
    processes may change a pin at any moment, so every read goes to the database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[str, str | None] | None = {} if db.dialect == "sqlite" else None

    async def get(self, client: str) -> str | None:
        known = self._known
        if known is not None and client in known:
            return known[client]
        rows = await self._db.fetch(_PIN, {"client": client})
        version: str | None = rows[0]["version"] if rows else None
        if known is not None:
            if len(known) >= 10_000:
                known.clear()
            known[client] = version
        return version

    async def pin(self, client: str, version: str, *, now: datetime) -> None:
        """Remember the version a client named; of two concurrent pins the last one wins."""
        await self._db.write_alone(_SET_PIN, {"client": client, "version": version, "now": now})
        if self._known is not None:
            self._known[client] = version
