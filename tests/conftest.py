"""Shared fixtures: a migrated database per test (SQLite and PostgreSQL), the app, tokens."""

from __future__ import annotations

import io
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from crohooks.app import create_app
from crohooks.auth.local import mint_local_token
from crohooks.logs import configure_logging
from crohooks.services import Services
from crohooks.settings import Settings
from crohooks.store.connect import open_database
from crohooks.store.connector import Database
from crohooks.store.migrate import migrate
from crohooks.store.schema import metadata

REQUIRE_POSTGRES = os.environ.get("CROHOOKS_TEST_REQUIRE_POSTGRES") == "1"
POSTGRES_ADMIN_URL = os.environ.get(
    "CROHOOKS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TEST_JWT_SECRET = "test-secret-of-at-least-thirty-two-bytes"


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    """Log as the product does (structlog's defaults would render rich tracebacks), to
    whatever standard error is at the moment of each line, so ``capsys`` sees them."""
    configure_logging(
        Settings(database_url="sqlite://", log_format="console"),
        stream=cast(TextIO, _CurrentStderr()),
    )


class _CurrentStderr(io.TextIOBase):
    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _admin_conninfo() -> str:
    return make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=False)


def _postgres_available() -> str | None:
    try:
        with psycopg.connect(_admin_conninfo(), connect_timeout=3):
            return None
    except psycopg.Error as error:
        return str(error)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards (connections and all).

    Skips when the server is unreachable, unless CROHOOKS_TEST_REQUIRE_POSTGRES=1, where
    it fails: CI must not go green without the PostgreSQL leg.
    """
    problem = _postgres_available()
    if problem is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """One migrated PostgreSQL database for the session, emptied before each test."""
    with fresh_postgres_database("crohooks_test") as url:
        migrate(url)
        yield url


def truncate_postgres(url: str) -> None:
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "crohooks.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    truncate_postgres(url)
    return url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The connector on the test's database (SQLite or PostgreSQL), disposed afterwards."""
    opened = open_database(database_url)
    try:
        yield opened
    finally:
        await opened.dispose()


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": TEST_JWT_SECRET,
        "allowed_networks": "127.0.0.0/8,::1/128",
        "log_format": "console",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = Services.build(settings)
    try:
        yield built
    finally:
        await built.aclose()


@asynccontextmanager
async def api_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process (the ASGI interface, no socket)."""
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crohooks.test") as http:
        yield http


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(services) as http:
        yield http


TokenFactory = Callable[..., str]


@pytest.fixture
def token(settings: Settings) -> TokenFactory:
    """``token(roles=["Admin"], tenants=[34])`` mints a local token for these settings."""

    def mint(
        *,
        roles: list[str] | None = None,
        tenants: list[int] | None = None,
        subject: str = "tester",
        client_id: str | None = None,
        ttl_seconds: int = 3600,
    ) -> str:
        return mint_local_token(
            settings,
            subject=subject,
            roles=roles if roles is not None else ["Admin"],
            tenants=tenants if tenants is not None else [34],
            ttl_seconds=ttl_seconds,
            client_id=client_id,
        )

    return mint


@pytest.fixture
def auth(token: TokenFactory) -> Callable[..., dict[str, str]]:
    """Headers of a CRO request: ``auth(tenant=34, roles=["Dispatcher"])``."""

    def headers(
        *, tenant: int | None = 34, roles: list[str] | None = None, **extra: str
    ) -> dict[str, str]:
        granted = [tenant] if tenant is not None else [34]
        result = {
            "Authorization": f"Bearer {token(roles=roles, tenants=granted)}",
            "Content-Type": "application/json",
        }
        if tenant is not None:
            result["x-tenant-id"] = str(tenant)
        result.update(extra)
        return result

    return headers
