"""The tables. Migrations in ``migrations/versions`` must produce exactly this schema."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, hands back aware UTC, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else _naive_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)

    # On SQLite one function each way does what this type and SQLAlchemy's DATETIME do
    # together (the same text, ``YYYY-MM-DD HH:MM:SS.ffffff``), at about half the cost:
    # a delivery converts a dozen times on its way through the queue.

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None] | None:
        if dialect.name == "sqlite":
            return _sqlite_text
        return super().bind_processor(dialect)

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        return super().result_processor(dialect, coltype)


def _naive_utc(value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError("UTCDateTime needs a timezone-aware datetime")
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    return utc.replace(tzinfo=None)


def _sqlite_text(value: object) -> str | None:
    return None if value is None else _naive_utc(value).isoformat(" ", "microseconds")


def _sqlite_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


tenants = Table(
    "tenants",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("code", String(64), nullable=False),
    Column("address", String(200)),
    Column("city", String(100)),
    Column("state", String(100)),
    Column("zip", String(20)),
    Column("email", String(254)),
    Column("phone", String(50)),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("truck_limit", Integer),
    Column("created_on", UTCDateTime, nullable=False),
)

hooks = Table(
    "hooks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tenant_id", BigInteger, nullable=False),
    Column("url", String(2048), nullable=False),
    Column("secret", String(300), nullable=False),
    Column("events", Text, nullable=False),
    Column("previous_secret", String(300)),
    Column("previous_secret_until", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime),
    Column("deleted_reason", String(200)),
    Column("last_http_success", UTCDateTime),
    Column("last_http_fail", UTCDateTime),
    Column("failing_since", UTCDateTime),
    # crohooks' own settings of a hook (migration 0007): GET/PATCH /hooks/{id}/settings.
    Column("disabled_at", UTCDateTime),
    Column("disabled_reason", String(200)),
    Column("disabled_by", String(255)),
    Column("headers", Text),
    Column("auth", Text),
    Column("max_in_flight", Integer),
    Column("filter", Text),
    # The rate limit (deliveries a second, burst) and its state: the earliest time the next
    # delivery may be sent (GCRA), moved on by each claim.
    Column("rate_per_second", Float),
    Column("rate_burst", Integer),
    Column("rate_next_at", UTCDateTime),
    # ``all`` or ``latest`` (migration 0008): see ``store/ordering.py``.
    Column("ordering", String(8), nullable=False, server_default=text("'all'")),
    Index("ix_hooks_tenant_id", "tenant_id", "id"),
    # The claim passes over disabled hooks: this index holds only them.
    Index(
        "ix_hooks_disabled",
        "id",
        sqlite_where=text("disabled_at IS NOT NULL"),
        postgresql_where=text("disabled_at IS NOT NULL"),
    ),
    Index(
        "uq_hooks_active_url",
        "tenant_id",
        "url",
        unique=True,
        sqlite_where=text("deleted_at IS NULL"),
        postgresql_where=text("deleted_at IS NULL"),
    ),
    sqlite_autoincrement=True,
)

api_version_pins = Table(
    "api_version_pins",
    metadata,
    Column("client", String(255), primary_key=True),
    Column("version", String(16), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", BigInteger, nullable=False),
    Column("event", String(32), nullable=False),
    Column("data", Text, nullable=False),
    Column("idempotency_key", String(255)),
    Column("hook_count", Integer, nullable=False),
    Column("accepted_at", UTCDateTime, nullable=False),
    Index(
        "uq_events_idempotency",
        "tenant_id",
        "idempotency_key",
        unique=True,
        sqlite_where=text("idempotency_key IS NOT NULL"),
        postgresql_where=text("idempotency_key IS NOT NULL"),
    ),
    Index("ix_events_accepted_at", "accepted_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tenant_id", BigInteger, nullable=False),
    Column("hook_id", Id, ForeignKey("hooks.id"), nullable=False),
    Column("event_id", String(36)),
    Column("event", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # The attempts among ``attempts`` that a short Retry-After deferred (migration 0004):
    # they used no step of the retry schedule.
    Column("deferrals", Integer, nullable=False, server_default=text("0")),
    # The W3C traceparent of the intake that queued it, when tracing is on (migration 0005):
    # the worker's spans continue the publisher's trace.
    Column("trace_context", Text),
    Column("next_attempt_at", UTCDateTime),
    Column("lease_expires_at", UTCDateTime),
    Column("leased_by", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime),
    Column("last_http_status", Integer),
    Column("last_message", Text),
    # Ordered delivery (migration 0008): the event's ordering key, this delivery's number in
    # its (hook, key), and whether a redeliver or recover re-queued it.
    Column("ordering_key", String(256)),
    Column("sequence", Id),
    Column("redelivered", Boolean, nullable=False, server_default=text("false")),
    # The queue: due first attempts and due retries are claimed side by side (fairness), and
    # the in-flight count per hook reads the small set of leased rows.
    Index(
        "ix_deliveries_due_first",
        "next_attempt_at",
        sqlite_where=text("status = 'pending' AND attempts = 0"),
        postgresql_where=text("status = 'pending' AND attempts = 0"),
    ),
    Index(
        "ix_deliveries_due_retry",
        "next_attempt_at",
        sqlite_where=text("status = 'pending' AND attempts > 0"),
        postgresql_where=text("status = 'pending' AND attempts > 0"),
    ),
    Index(
        "ix_deliveries_leased",
        "hook_id",
        sqlite_where=text("status = 'pending' AND lease_expires_at IS NOT NULL"),
        postgresql_where=text("status = 'pending' AND lease_expires_at IS NOT NULL"),
    ),
    # The pending deliveries of each (hook, ordering key), oldest first: the head and the
    # deliveries waiting behind it (``store/ordering.py``).
    Index(
        "ix_deliveries_ordering",
        "hook_id",
        "ordering_key",
        "sequence",
        sqlite_where=text("status = 'pending' AND ordering_key IS NOT NULL"),
        postgresql_where=text("status = 'pending' AND ordering_key IS NOT NULL"),
    ),
    Index("ix_deliveries_hook", "hook_id", "created_at"),
    # The portal's chart (migration 0010): a hook's deliveries per hour and status, each
    # count a range of this index alone.
    Index("ix_deliveries_hook_status", "hook_id", "status", "created_at"),
    Index("ix_deliveries_created_at", "created_at"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", String(36), ForeignKey("deliveries.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Column("request_headers", Text, nullable=False),
    Column("response_headers", Text),
    Column("response_body", Text),
    Index("ix_attempts_delivery", "delivery_id", "number"),
    sqlite_autoincrement=True,
)

ordering_keys = Table(
    "ordering_keys",
    metadata,
    Column("hook_id", Id, primary_key=True, autoincrement=False),
    Column("ordering_key", String(256), primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)
"""The last sequence number given out per (hook, ordering key). Its row is also the lock
that serialises the changes to that key's queue on PostgreSQL (``store/ordering.py``)."""

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("window_start", UTCDateTime, primary_key=True),
    Column("hits", Integer, nullable=False),
)
"""Counters of the one-minute rate-limit windows. UNLOGGED on PostgreSQL (migration 0003):
no WAL and no flush per API request; a server crash empties it, i.e. starts a new window."""


@event.listens_for(rate_limits, "after_create")
def _rate_limits_unlogged(_target: Table, connection: Connection, **_kw: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("ALTER TABLE rate_limits SET UNLOGGED")


portal_codes = Table(
    "portal_codes",
    metadata,
    # SHA-256 of the one-time code of a portal link: the code itself is never stored.
    Column("code_hash", String(64), primary_key=True),
    Column("tenant_id", BigInteger, nullable=False),
    Column("subject", String(200), nullable=False),
    Column("roles", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime),
    Index("ix_portal_codes_expires_at", "expires_at"),
)

portal_sessions = Table(
    "portal_sessions",
    metadata,
    # SHA-256 of the session cookie's token: a leaked table opens no session.
    Column("token_hash", String(64), primary_key=True),
    Column("tenant_id", BigInteger, nullable=False),
    Column("subject", String(200), nullable=False),
    Column("roles", Text, nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_portal_sessions_expires_at", "expires_at"),
)
