"""Which database failures are an outage (503, retry shortly) and which are not (500)."""

from __future__ import annotations

import asyncpg
import asyncpg.exceptions as pg
import pytest

from crohooks.store._asyncpg import unavailability


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        pg.CannotConnectNowError("the database system is in recovery mode"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.QueryCanceledError("canceling statement due to statement timeout"),
        pg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        pg.TooManyConnectionsError("sorry, too many clients already"),
        pg.PostgresConnectionError("connection failure"),
    ],
    ids=repr,
)
def test_an_outage_is_unavailability(error: Exception) -> None:
    assert unavailability(error)


@pytest.mark.parametrize(
    "error",
    [
        pg.UniqueViolationError("duplicate key value violates unique constraint"),
        pg.UndefinedTableError('relation "hooks" does not exist'),
        pg.PostgresSyntaxError("syntax error at or near"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_anything_else_is_not(error: Exception) -> None:
    assert unavailability(error) is None
