"""CRO's request models, by their CRO names, and the rendering of its response models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from crohooks.clock import to_cro
from crohooks.hooks.rules import check_events, check_secret, check_url
from crohooks.store.hooks import Hook
from crohooks.store.tenants import Tenant

HookEvent = Literal["Ping", "Customer", "CustomerLocation", "Job", "Truck"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be null")
    return value


class CreateWebhookModel(_Strict):
    events: list[HookEvent]
    url: str
    secret: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

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
        return check_url(value)

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
