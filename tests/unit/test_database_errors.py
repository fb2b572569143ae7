"""Which database failures are an outage (503, retry shortly) and which are not (500)."""

from __future__ import annotations

import psycopg
import psycopg.errors
import psycopg_pool
import pytest

from crohooks.store._postgres import unavailability


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection refused"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        psycopg.errors.CannotConnectNow("the database system is in recovery mode"),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        psycopg.errors.TooManyConnections("sorry, too many clients already"),
        psycopg.errors.ConnectionFailure("connection failure"),
        psycopg_pool.PoolTimeout("couldn't get a connection after 5.00 sec"),
    ],
    ids=repr,
)
def test_an_outage_is_unavailability(error: Exception) -> None:
    assert unavailability(error)


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"),
        psycopg.errors.UndefinedTable('relation "hooks" does not exist'),
        psycopg.errors.SyntaxError("syntax error at or near"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_anything_else_is_not(error: Exception) -> None:
    assert unavailability(error) is None
