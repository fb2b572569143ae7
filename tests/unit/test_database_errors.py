"""Which database failures are an outage (503, retry shortly) and which are not (500)."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from crohooks.store.database import unavailability


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
        SAOperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused")),
        PoolTimeout("QueuePool limit of size 20 overflow 0 reached"),
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
        IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key")),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_anything_else_is_not(error: Exception) -> None:
    assert unavailability(error) is None
