"""Fixed-window hit counters in the database, shared by every API process."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from crohooks.store.database import Database
from crohooks.store.schema import rate_limits


class RateLimitCounters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def hit(self, key: str, window_start: datetime) -> int:
        """Count one hit in the window and return the window's count, atomically."""
        values = {"key": key, "window_start": window_start, "hits": 1}
        increment = {"hits": rate_limits.c.hits + 1}
        index = [rate_limits.c.key, rate_limits.c.window_start]
        if self._db.dialect == "postgresql":
            statement = (
                postgresql.insert(rate_limits)
                .values(**values)
                .on_conflict_do_update(index_elements=index, set_=increment)
                .returning(rate_limits.c.hits)
            )
        else:
            statement = (
                sqlite.insert(rate_limits)
                .values(**values)
                .on_conflict_do_update(index_elements=index, set_=increment)
                .returning(rate_limits.c.hits)
            )
        # One statement, its own transaction; the table is UNLOGGED on PostgreSQL, so the
        # commit does not wait for a WAL flush (counters are lost on a crash: by design).
        rows = await self._db.write_alone(statement)
        count: int = rows[0].hits
        return count

    async def purge(self, *, before: datetime) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(rate_limits).where(rate_limits.c.window_start < before))
