"""What the repositories use of a database, whichever it is.

One implementation per database, each on its own driver: ``_sqlite.py`` (``sqlite3``, on
the event loop's thread) and ``_postgres.py`` (psycopg 3 and its pool); ``connect.py``
picks one from the URL. Repositories hold ``Statement``s, SQL written out with the
driver's own parameter style, and get rows back as dictionaries; datetimes go in and
come out timezone-aware UTC on both (stored as naive UTC, as the schema says).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog

from crohooks.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from crohooks.settings import Settings

log = structlog.get_logger("crohooks.database")

Dialect = Literal["sqlite", "postgresql"]
Row = dict[str, Any]
Params = Mapping[str, Any] | None

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement: SQLite's text with ``:name`` parameters, PostgreSQL's with
    ``%(name)s`` (psycopg's style). ``Statement.shared`` writes one text for both."""

    name: str
    sqlite: str
    postgresql: str

    @classmethod
    def shared(cls, name: str, sql: str) -> Statement:
        """The same SQL on both databases, written with ``:name`` parameters."""
        return cls(name, sql, _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")))

    def text(self, dialect: Dialect) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgresql


class Connection(Protocol):
    """A transaction's connection (``Database.read()`` / ``Database.write()``)."""

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]: ...

    async def execute(self, statement: Statement, params: Params = None) -> int:
        """Run a statement; the number of rows it touched."""
        ...

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run a statement once per row, in one go; the rows touched in all."""
        ...

    def announce_work(self) -> None:
        """Wake every worker once this transaction commits: it queued deliveries."""
        ...


class Database(Protocol):
    """One database per process, and the transactions crohooks runs on it.

    ``read()`` opens a plain transaction; ``write()`` one that may write: on SQLite it
    takes the write lock at BEGIN, so two writers never deadlock upgrading a lock.
    ``fetch()`` and ``write_alone()`` run one statement as its own transaction.
    """

    dialect: Dialect
    limits: DatabaseLimits

    def read(self) -> AbstractAsyncContextManager[Connection]: ...

    def write(self) -> AbstractAsyncContextManager[Connection]: ...

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]: ...

    async def write_alone(self, statement: Statement, params: Params = None) -> list[Row]:
        """One writing statement in its own transaction; its ``RETURNING`` rows, if any."""
        ...

    async def wait_for_work(self, seconds: float) -> None:
        """Return when a transaction announced work (in any process), or after ``seconds``."""
        ...

    async def check(self, *, within: float) -> None:
        """Raise ``DatabaseUnavailable`` unless the database answers a query in time."""
        ...

    async def dispose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DatabaseLimits:
    """How long each database step may take; see docs/configuration.md, "Database"."""

    connect_timeout: float = 5.0
    timeout: float = 5.0
    pool_timeout: float = 5.0
    idle_check: float = 5.0
    pool_size: int = 20

    @classmethod
    def of(cls, settings: Settings) -> DatabaseLimits:
        return cls(
            connect_timeout=settings.database_connect_timeout,
            timeout=settings.database_timeout,
            pool_timeout=settings.database_pool_timeout,
            idle_check=settings.database_idle_check_seconds,
        )


@dataclass(slots=True)
class Health:
    """Whether the database answered last: one log line when it goes, one when it is back,
    instead of a traceback per request."""

    lost_at: float | None = field(default=None)

    def lost(self, reason: str) -> DatabaseUnavailable:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            log.warning("database unavailable", reason=reason)
        return DatabaseUnavailable(f"the database is unavailable: {reason}")

    def answered(self) -> None:
        if self.lost_at is not None:
            seconds = time.monotonic() - self.lost_at
            self.lost_at = None
            log.info("database available again", unavailable_seconds=round(seconds, 3))
