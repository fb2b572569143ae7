"""The words of the domain: tenants, hooks, events, deliveries and their attempts.

Plain values, shared by every room (api, hooks, delivery, store); this module imports
nothing of crohooks, so any room may use it without depending on another.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    """Latest-state ordering: a newer delivery of the same (hook, ordering key) replaced it
    while it waited."""


Ordering = Literal["all", "latest"]
"""A hook's ordering mode (``HookSettings.ordering``)."""


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    name: str
    code: str
    created_on: datetime
    address: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    email: str | None = None
    phone: str | None = None
    is_active: bool = True
    truck_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Hook:
    id: int
    tenant_id: int
    url: str
    secret: str
    events: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    last_http_success: datetime | None
    last_http_fail: datetime | None
    previous_secret: str | None
    previous_secret_until: datetime | None

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def live_previous_secrets(self, now: datetime) -> tuple[str, ...]:
        """Secrets replaced less than the grace period ago still sign, next to the new one."""
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            return (self.previous_secret,)
        return ()


@dataclass(frozen=True, slots=True)
class ReceiverAuth:
    """How a hook's receiver wants crohooks to authenticate: HTTP basic or a bearer token."""

    scheme: str
    """``basic`` or ``bearer``."""
    credential: str
    """The password (basic) or the token (bearer): a secret, never shown or logged."""
    username: str | None = None

    def header(self) -> str:
        """The ``Authorization`` value sent with every request to the hook."""
        if self.scheme == "basic":
            raw = f"{self.username or ''}:{self.credential}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
        return f"Bearer {self.credential}"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``per_second`` deliveries a second to one hook, after ``burst`` extra at once."""

    per_second: float
    burst: int = 0


@dataclass(frozen=True, slots=True)
class HookSettings:
    """crohooks' own controls of one hook (beyond CRO's model): what it is sent and when."""

    hook_id: int
    tenant_id: int
    deleted_at: datetime | None
    headers: Mapping[str, str]
    """Static headers sent with every request; every value is treated as a credential."""
    auth: ReceiverAuth | None
    max_in_flight: int | None
    """This hook's cap on requests in flight; ``None``: the server's ``per_hook_inflight``."""
    filter: str | None
    """A CEL expression over ``event`` and ``data``: the events it is false for are not
    queued for this hook at all."""
    rate_limit: RateLimit | None
    ordering: Ordering
    """How its keyed deliveries are ordered: ``all`` (every update, in publish order) or
    ``latest`` (waiting updates a newer one of the same key replaces are superseded)."""
    disabled_at: datetime | None
    disabled_reason: str | None
    disabled_by: str | None

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    def outbound_headers(self) -> dict[str, str]:
        """The headers this hook adds to each request it is sent (auth included)."""
        headers = dict(self.headers)
        if self.auth is not None:
            headers["Authorization"] = self.auth.header()
        return headers


@dataclass(frozen=True, slots=True)
class NewEvent:
    event: str
    data: dict[str, Any]
    idempotency_key: str | None = None
    ordering_key: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    event_id: str
    hook_count: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    tenant_id: int
    hook_id: int
    event: str
    body: bytes
    attempts: int
    deferrals: int
    """How many of ``attempts`` a short ``Retry-After`` deferred (they used no retry step)."""
    created_at: datetime
    url: str
    secret: str
    previous_secrets: tuple[str, ...]
    leased_by: str
    lease_expires_at: datetime
    reclaimed: bool = False
    """Claimed again after another lease on it ran out (its worker died or stalled)."""
    trace_context: str | None = None
    """The trace its event was published in (a W3C ``traceparent``), when tracing was on."""
    ordering_key: str | None = None
    sequence: int | None = None
    """Its number in its (hook, ordering key), from 1; ``None`` without an ordering key."""
    redelivered: bool = False
    """Queued again by a redeliver or recover after it had finished."""
    receiver_headers: Mapping[str, str] = field(default_factory=dict)
    """The hook's own headers and receiver auth (``HookSettings.outbound_headers``)."""
    not_before: datetime | None = None
    """The hook's rate limit gave this delivery a slot at this time: not sent before it."""


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one attempt sent and got back, as the delivery log shows it."""

    started_at: datetime
    duration_ms: float
    http_status: int
    message: str
    request_headers: dict[str, str]
    response_headers: Sequence[Sequence[str]] | None = None
    response_body: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """An attempt's result and the delivery state it leads to."""

    delivery: ClaimedDelivery
    attempt: AttemptRecord
    status: DeliveryStatus
    next_attempt_at: datetime | None
    deferred: bool = False
    """The attempt was a deferral: it counts in ``deferrals`` as well as in ``attempts``."""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    tenant_id: int
    hook_id: int
    event_id: str | None
    event: str
    body: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    last_http_status: int | None
    last_message: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt(AttemptRecord):
    """An attempt as read back from the log: the record, and its place in the delivery."""

    number: int


@dataclass(slots=True)
class ClaimPolicy:
    limit: int
    per_hook_cap: int
    lease: timedelta
    worker_id: str
    busy_hooks: dict[int, int] = field(default_factory=dict)
    rate_horizon: timedelta = timedelta(seconds=1)
    """How far ahead a rate-limited hook's send slots are handed out (the rest wait)."""
