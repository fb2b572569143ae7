"""CRO's request models, by their CRO names, and the rendering of its response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from crohooks.clock import to_cro
from crohooks.filters import compile_filter
from crohooks.hooks.controls import (
    MAX_BURST,
    MAX_HEADER_VALUE,
    MAX_IN_FLIGHT,
    MAX_RATE,
    MAX_REASON,
    MIN_RATE,
    check_credential,
    check_headers,
    check_username,
    masked,
)
from crohooks.hooks.rules import check_events, check_secret, check_url
from crohooks.model import (
    Attempt,
    Delivery,
    Hook,
    HookSettings,
    RateLimit,
    ReceiverAuth,
    Tenant,
)

HookEvent = Literal["Ping", "Customer", "CustomerLocation", "Job", "Truck"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null")
    return value


def _storable_url(value: str) -> str:
    """JSON's ``\\ud800`` escape yields a string no database can store as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
    return check_url(value)


class CreateWebhookModel(_Strict):
    events: list[HookEvent]
    url: str
    secret: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _storable_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return list(check_events(value))

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_not_null(cls, value: Any) -> Any:
        return _not_null(value)

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)


class UpdateWebhookModel(_Strict):
    url: str
    events: list[HookEvent] | None = None
    secret: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _storable_url(value)

    @field_validator("events", "secret", mode="before")
    @classmethod
    def _optional_not_null(cls, value: Any) -> Any:
        return _not_null(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(check_events(value))

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else check_secret(value)


def webhook_model(hook: Hook) -> dict[str, Any]:
    return {
        "deleted_at": to_cro(hook.deleted_at),
        "events": list(hook.events),
        "id": hook.id,
        "last_http_fail": to_cro(hook.last_http_fail),
        "last_http_success": to_cro(hook.last_http_success),
        "secret": hook.secret,
        "url": hook.url,
    }


def tenant_model(tenant: Tenant) -> dict[str, Any]:
    return {
        "address": tenant.address,
        "city": tenant.city,
        "code": tenant.code,
        "created_on": to_cro(tenant.created_on),
        "email": tenant.email,
        "id": tenant.id,
        "is_active": tenant.is_active,
        "name": tenant.name,
        "phone": tenant.phone,
        "state": tenant.state,
        "truck_limit": tenant.truck_limit,
        "zip": tenant.zip,
    }


PublishableEvent = Literal["Customer", "CustomerLocation", "Job", "Truck"]


class PublishEventModel(_Strict):
    event: PublishableEvent
    data: dict[str, Any]
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    ordering_key: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None

    @field_validator("idempotency_key", "ordering_key", mode="before")
    @classmethod
    def _key_not_null(cls, value: Any) -> Any:
        return _not_null(value)

    @field_validator("idempotency_key", "ordering_key")
    @classmethod
    def _key_storable(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class PublishBatchModel(_Strict):
    events: Annotated[list[PublishEventModel], Field(min_length=1, max_length=1000)]


class RecoverModel(_Strict):
    since: str
    until: str | None = None

    @field_validator("since", "until")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cro_time(value)
        return value


def parse_cro_time(value: str) -> datetime:
    """CRO timestamps are naive UTC; an explicit offset is honoured too."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            "must be an ISO 8601 timestamp such as 2022-08-20T01:45:38.518903"
        ) from None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def delivery_model(delivery: Delivery) -> dict[str, Any]:
    return {
        "attempt_count": delivery.attempts,
        "completed_at": to_cro(delivery.completed_at),
        "created_at": to_cro(delivery.created_at),
        "delivery_id": delivery.id,
        "event": delivery.event,
        "event_id": delivery.event_id,
        "hook_id": delivery.hook_id,
        "last_http_status": delivery.last_http_status,
        "last_message": delivery.last_message,
        "next_attempt_at": to_cro(delivery.next_attempt_at)
        if delivery.status == "pending"
        else None,
        "status": delivery.status,
    }


def delivery_detail_model(delivery: Delivery, attempts: list[Attempt]) -> dict[str, Any]:
    return {
        **delivery_model(delivery),
        "request_body": delivery.body,
        "attempts": [
            {
                "duration_ms": attempt.duration_ms,
                "http_status": attempt.http_status,
                "message": attempt.message,
                "number": attempt.number,
                "request_headers": [
                    [name, value] for name, value in attempt.request_headers.items()
                ],
                "response_body": attempt.response_body,
                "response_headers": [[name, value] for name, value in attempt.response_headers]
                if attempt.response_headers is not None
                else None,
                "started_at": to_cro(attempt.started_at),
            }
            for attempt in attempts
        ],
    }


# -- crohooks' own hook settings (GET/PATCH /hooks/{id}/settings, disable, enable) ----------


class BasicAuthModel(_Strict):
    type: Literal["basic"]
    username: str
    password: str

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return check_username(value)

    @field_validator("password")
    @classmethod
    def _password(cls, value: str) -> str:
        return check_credential(value, what="password", most=MAX_HEADER_VALUE)

    def receiver_auth(self) -> ReceiverAuth:
        return ReceiverAuth(scheme="basic", credential=self.password, username=self.username)


class BearerAuthModel(_Strict):
    type: Literal["bearer"]
    token: str

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        return check_credential(value, what="token", most=MAX_HEADER_VALUE)

    def receiver_auth(self) -> ReceiverAuth:
        return ReceiverAuth(scheme="bearer", credential=self.token)


class RateLimitModel(_Strict):
    per_second: Annotated[float, Field(ge=MIN_RATE, le=MAX_RATE)]
    burst: Annotated[int, Field(ge=0, le=MAX_BURST)] = 0

    def rate_limit(self) -> RateLimit:
        return RateLimit(per_second=self.per_second, burst=self.burst)


SETTINGS_READ_ONLY = ("disabled", "disabled_at", "disabled_by", "disabled_reason", "hook_id")
"""Fields of the settings resource that PATCH can't set (disable and enable do)."""


class HookSettingsModel(_Strict):
    """PATCH body: the settings sent change, the others keep their values; null resets one."""

    headers: dict[str, str] | None = None
    auth: Annotated[BasicAuthModel | BearerAuthModel, Field(discriminator="type")] | None = None
    max_in_flight: Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT)] | None = None
    filter: str | None = None
    rate_limit: RateLimitModel | None = None
    ordering: Literal["all", "latest"] | None = None

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        """Compiled now, so a broken filter is a 400 naming where it breaks."""
        if value is not None:
            compile_filter(value)
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_headers(value)

    def changes(self) -> dict[str, Any]:
        """The ``HookSettings`` fields to set: only those the body named."""
        sent = self.model_fields_set
        changes: dict[str, Any] = {}
        if "headers" in sent:
            changes["headers"] = self.headers or {}
        if "auth" in sent:
            changes["auth"] = self.auth.receiver_auth() if self.auth is not None else None
        if "max_in_flight" in sent:
            changes["max_in_flight"] = self.max_in_flight
        if "filter" in sent:
            changes["filter"] = self.filter
        if "rate_limit" in sent:
            changes["rate_limit"] = self.rate_limit.rate_limit() if self.rate_limit else None
        if "ordering" in sent:
            changes["ordering"] = self.ordering or "all"
        return changes


class DisableHookModel(_Strict):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REASON)]

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if any(ord(ch) < 0x20 for ch in value) or not value.strip():
            raise ValueError("must be printable text, not only spaces")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (it holds a lone surrogate)") from None
        return value


def _masked_auth(auth: ReceiverAuth | None) -> dict[str, Any] | None:
    if auth is None:
        return None
    if auth.scheme == "basic":
        return {"password": masked(auth.credential), "type": "basic", "username": auth.username}
    return {"token": masked(auth.credential), "type": "bearer"}


def hook_settings_model(settings: HookSettings) -> dict[str, Any]:
    """The settings resource; credentials (header values, password, token) never in full."""
    return {
        "auth": _masked_auth(settings.auth),
        "disabled": settings.disabled_at is not None,
        "disabled_at": to_cro(settings.disabled_at),
        "disabled_by": settings.disabled_by,
        "disabled_reason": settings.disabled_reason,
        "filter": settings.filter,
        "headers": {name: masked(value) for name, value in settings.headers.items()},
        "hook_id": settings.hook_id,
        "max_in_flight": settings.max_in_flight,
        "ordering": settings.ordering,
        "rate_limit": {
            "burst": settings.rate_limit.burst,
            "per_second": settings.rate_limit.per_second,
        }
        if settings.rate_limit is not None
        else None,
    }


class PortalLinkModel(_Strict):
    """``POST /portal/links``: whose portal session the link opens, and for how long."""

    role: Literal["Admin", "Dispatcher"] | None = None
    ttl_seconds: Annotated[int, Field(ge=1, le=86400)] | None = None
