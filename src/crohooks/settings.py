"""One Settings object, read once from the environment at start-up and passed down."""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from crohooks.errors import ConfigurationError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_DATABASE_URL = "sqlite:///crohooks.db"
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything an operator can set, as ``CROHOOKS_<NAME>`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CROHOOKS_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    jwt_secret: SecretStr | None = None
    allowed_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = ()

    # Database: every step is bounded, so a stalled or missing database is a prompt 503
    database_connect_timeout: float = Field(default=5.0, gt=0)
    database_timeout: float = Field(default=5.0, gt=0)
    database_pool_timeout: float = Field(default=5.0, gt=0)
    database_idle_check_seconds: float = Field(default=5.0, ge=0)
    database_retry_after_seconds: int = Field(default=5, ge=1)
    readiness_timeout: float = Field(default=2.0, gt=0)

    # Identity (spec 2.1)
    auth_mode: Literal["local", "jwks", "introspection"] = "local"
    local_issuer: str = "crohooks"
    jwks_url: str | None = None
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256", "ES256", "EdDSA")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    introspection_url: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret: SecretStr | None = None
    authorization_max_length: int = Field(default=256, ge=16, le=16384)
    claim_sub: str = "sub"
    claim_roles: str = "roles"
    claim_tenants: str = "tenants"
    claim_client_id: str = "client_id"
    jwks_cache_seconds: float = 300.0
    introspection_cache_seconds: float = 30.0

    # Delivery (spec 3.2)
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    retry_jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    retry_after_max_seconds: float = 86400.0
    retry_after_max_deferrals: int = Field(default=20, ge=0)
    connect_timeout: float = 5.0
    attempt_timeout: float = 15.0
    ping_timeout: float = 10.0
    response_body_limit: int = 16384
    trace_receivers: bool = False
    """With OpenTelemetry on: send each attempt's W3C ``traceparent`` to the receiver."""
    per_hook_inflight: int = Field(default=4, ge=1)
    worker_concurrency: int = Field(default=64, ge=1)
    lease_seconds: float = 60.0
    poll_interval: float = 1.0
    auto_deactivate_after_seconds: float = 5 * 86400.0
    retention_days: float = 30.0
    secret_grace_seconds: float = 86400.0

    # Limits
    max_hook_body_bytes: int = 64 * 1024
    max_event_body_bytes: int = 1024 * 1024
    max_batch_body_bytes: int = 16 * 1024 * 1024
    body_read_timeout: float = 10.0
    rate_limit_api_per_minute: int = Field(default=6000, ge=0)
    rate_limit_ping_per_minute: int = Field(default=10, ge=0)
    server_limit_concurrency: int = Field(default=1000, ge=1)
    server_keep_alive_timeout: int = Field(default=5, ge=1)
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"

    # Portal (docs/portal.md)
    portal_link_ttl_seconds: int = Field(default=600, ge=1, le=86400)
    portal_session_seconds: int = Field(default=8 * 3600, ge=60)
    portal_base_url: str | None = None
    """Where browsers reach this service (``https://hooks.example.com``), for the links of
    ``POST /portal/links`` and ``crohooks portal-link``; unset: the request's own address."""

    log_format: Literal["json", "console"] = "json"
    log_level: str = "INFO"

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        value = _split_commas(value)
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
        return value

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _parse_algorithms(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        value = _split_commas(value)
        if isinstance(value, list):
            return tuple(float(item) for item in value)
        return value

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> Settings:
        # A lease shorter than an attempt lets another worker (or this one) claim a
        # delivery that is still being sent: two requests at once, and the cap overrun.
        if self.lease_seconds <= self.attempt_timeout:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds}) must be longer than attempt_timeout "
                f"({self.attempt_timeout})"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def database_dialect(self) -> str:
        """For logs: the kind of database, never the URL (it may hold a password)."""
        return "sqlite" if self.is_sqlite else "postgresql"

    @property
    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        path = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        return Path(path) if path and path != ":memory:" else None

    def local_jwt_key(self) -> str:
        """The HS256 key of local tokens.

        With SQLite and no configured secret, one is generated once and kept beside the
        database file, so tokens survive restarts. PostgreSQL deployments run several
        processes that must agree, so there the secret is required.
        """
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.sqlite_path
        if path is None:
            raise ConfigurationError(
                "CROHOOKS_JWT_SECRET is required unless the database is an SQLite file"
            )
        key_file = path.with_name(path.name + ".jwt-secret")
        if key_file.exists():
            return key_file.read_text().strip()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
        return key
