"""What the repositories use of a database, whichever it is.

One implementation per database, each on its own driver: ``_sqlite.py`` (``sqlite3``, on
the event loop's thread) and ``_postgres.py`` (asyncpg and its pool); ``connect.py``
picks one from the URL. Repositories hold ``Statement``s, SQL written out with the
driver's own parameter style, and get rows back as dictionaries; datetimes go in and
come out timezone-aware UTC on both (stored as naive UTC, as the schema says).
"""

from __future__ import annotations

import asyncio
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
_PYFORMAT = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s|%%")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement: SQLite's text with ``:name`` parameters, PostgreSQL's with
    ``%(name)s`` ones. ``Statement.shared`` writes one text for both.

    PostgreSQL's text is compiled once, here, to the driver's numbered ``$1`` form and the
    order of the names (``numbered``, ``names``).
    """

    name: str
    sqlite: str
    postgresql: str
    numbered: str = field(init=False, repr=False, compare=False)
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%"
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        object.__setattr__(self, "numbered", _PYFORMAT.sub(number, self.postgresql))
        object.__setattr__(self, "names", tuple(names))

    @classmethod
    def shared(cls, name: str, sql: str) -> Statement:
        """The same SQL on both databases, written with ``:name`` parameters."""
        return cls(name, sql, _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")))

    def arguments(self, params: Params) -> list[Any]:
        """``params`` in the order of PostgreSQL's numbered parameters."""
        if not self.names:
            return []
        assert params is not None, f"{self.name} needs {', '.join(self.names)}"
        return [params[name] for name in self.names]


class Connection(Protocol):
    """A transaction's connection (``Database.read()`` / ``Database.write()``)."""

    async def fetch(self, statement: Statement, params: Params = None) -> list[Row]: ...

    async def execute(self, statement: Statement, params: Params = None) -> int:
        """Run a statement; the number of rows it touched."""
        ...

    async def execute_many(self, statement: Statement, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run a statement once per row, in one go (no row count: PostgreSQL's driver
        pipelines the rows and keeps no count; a statement whose count matters is one
        statement over all the rows)."""
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


async def wait_then_clear(event: asyncio.Event, seconds: float) -> None:
    """Wait for ``event`` (or ``seconds``), then clear it for the next wait."""
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        return
    finally:
        event.clear()


SETTLE_SECONDS = 1.0
"""How long the database must answer without a failure before it counts as back."""


@dataclass(slots=True)
class Health:
    """Whether the database answered last: one log line when it goes, one when it is back,
    instead of a traceback per request."""

    lost_at: float | None = field(default=None)
    last_failure: float = field(default=0.0)

    def lost(self, reason: str) -> DatabaseUnavailable:
        now = time.monotonic()
        self.last_failure = now
        if self.lost_at is None:
            self.lost_at = now
            log.warning("database unavailable", reason=reason)
        return DatabaseUnavailable(f"the database is unavailable: {reason}")

    def answered(self) -> None:
        # Back only once it has answered for a while after its last failure: a server
        # shutting down still answers on some connections, and a read-only one answers
        # reads between failed writes; neither is the end of the outage.
        if self.lost_at is not None:
            now = time.monotonic()
            if now - self.last_failure >= SETTLE_SECONDS:
                seconds = self.last_failure - self.lost_at
                self.lost_at = None
                log.info("database available again", unavailable_seconds=round(seconds, 3))
