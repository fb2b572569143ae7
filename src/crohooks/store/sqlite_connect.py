"""How crohooks opens SQLite: autocommit driver, WAL, a short busy timeout."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from sqlalchemy.engine import make_url

BUSY_TIMEOUT_MS = 20
"""How long one statement may block the event loop waiting for another process's lock
(statements run on the loop's thread: see ``database.SQLiteConnection``)."""

PRAGMAS = (
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=NORMAL",
)


def is_busy(error: BaseException) -> bool:
    """SQLite's "database is locked" (SQLITE_BUSY), however SQLAlchemy wrapped it."""
    original = getattr(error, "orig", error)
    return isinstance(original, sqlite3.OperationalError) and (
        "database is locked" in str(original) or "database is busy" in str(original)
    )


def is_memory(url: str) -> bool:
    return make_url(url).database in (None, "", ":memory:")


def sqlite_creator(url: str) -> Callable[[], sqlite3.Connection]:
    """Connections to the URL's database for SQLAlchemy's ``creator``: in autocommit mode
    (crohooks emits BEGIN itself), with crohooks' pragmas applied."""
    parsed = make_url(url)
    database = parsed.database or ":memory:"
    uri = str(parsed.query.get("uri", "")).lower() in ("1", "true")

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(
            database, uri=uri, isolation_level=None, check_same_thread=False
        )
        for pragma in PRAGMAS:
            connection.execute(pragma)
        # Switching to WAL takes a lock even when the file is in WAL mode already, so a
        # new connection would fail while another process writes: switch only if needed.
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            connection.execute("PRAGMA journal_mode=WAL")
        return connection

    return connect
