"""The throwaway cluster (one per session), a fresh database per scenario, the figures."""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from crohooks.store.migrate import migrate
from tests.chaos.cluster import ThrowawayCluster, missing_tools, throwaway_cluster
from tests.chaos.harness import FIGURES, SEED, ChaosDatabase
from tests.conftest import REQUIRE_POSTGRES

TEMPLATE = "chaos_template"


@pytest.fixture(scope="session")
def cluster() -> Iterator[ThrowawayCluster]:
    """A PostgreSQL cluster of its own, with a migrated template database; always dropped.

    Skips without Debian's cluster tools, unless CROHOOKS_TEST_REQUIRE_POSTGRES=1 (CI),
    where it fails.
    """
    problem = missing_tools()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"the chaos suite needs its own PostgreSQL cluster: {problem}")
        pytest.skip(f"no throwaway PostgreSQL cluster: {problem}")
    with throwaway_cluster() as made:
        with psycopg.connect(made.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"'.encode())
        migrate(made.url(TEMPLATE))
        yield made


@pytest.fixture
async def chaos_database(cluster: ThrowawayCluster) -> AsyncIterator[ChaosDatabase]:
    """A fresh copy of the template; the cluster thawed and running whatever the last
    scenario left it in."""
    await _healthy(cluster)
    name = f"chaos_{secrets.token_hex(6)}"
    async with await psycopg.AsyncConnection.connect(cluster.conninfo(), autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'.encode())
    try:
        yield ChaosDatabase(cluster, name)
    finally:
        await _healthy(cluster)
        async with await psycopg.AsyncConnection.connect(
            cluster.conninfo(), autocommit=True
        ) as conn:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


async def _healthy(cluster: ThrowawayCluster) -> None:
    """Thawed, running and writable, whatever a failed scenario left behind."""
    cluster.thaw()
    if cluster.postmaster_pid() is None:
        await cluster.start()
    await cluster.set_read_only(False)


@pytest.fixture(autouse=True)
def _quiet_http_client() -> Iterator[None]:
    """Thousands of requests: httpx's line per request would bury a failure's output."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random choices, derived from the session's seed and the test's name."""
    return random.Random(f"{SEED}:{request.node.name}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("chaos figures")
        terminalreporter.write_line(f"seed {SEED} (CROHOOKS_CHAOS_SEED replays its choices)")
        for figures in FIGURES:
            terminalreporter.write_line(figures.line())
            for disruption in figures.disruptions:
                terminalreporter.write_line(f"    {disruption}")
