"""Fixed-window hit counters in the database, shared by every API process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete
from sqlalchemy.dialects import postgresql, sqlite

from crohooks.store.database import Database
from crohooks.store.schema import rate_limits


class RateLimitCounters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def hit(self, key: str, window_start: datetime) -> int:
        """Count one hit in the window and return the window's count, atomically."""
        # One statement, its own transaction; the table is UNLOGGED on PostgreSQL, so the
        # commit does not wait for a WAL flush (counters are lost on a crash: by design).
        rows = await self._db.write_alone(
            _HIT[self._db.dialect], {"b_key": key, "b_window": window_start}
        )
        count: int = rows[0].hits
        return count

    async def purge(self, *, before: datetime) -> None:
        async with self._db.write() as conn:
            await conn.execute(delete(rate_limits).where(rate_limits.c.window_start < before))


def _hit(insert: Any) -> Any:
    """Built once per dialect (a statement built per request was compiled per request)."""
    return (
        insert(rate_limits)
        .values(key=bindparam("b_key"), window_start=bindparam("b_window"), hits=1)
        .on_conflict_do_update(
            index_elements=[rate_limits.c.key, rate_limits.c.window_start],
            set_={"hits": rate_limits.c.hits + 1},
        )
        .returning(rate_limits.c.hits)
    )


_HIT = {"postgresql": _hit(postgresql.insert), "sqlite": _hit(sqlite.insert)}
