"""The OpenAPI description of the API, with CRO's model names and every status it answers.

The routes parse requests by hand, to answer CRO's errors instead of FastAPI's 422s, so
FastAPI can't infer the document: this module states it. Request bodies are the models
of ``api.models`` (refined where a validator says more than the type); responses are
described by models mirroring ``webhook_model()``, ``tenant_model()``,
``delivery_model()`` and ``delivery_detail_model()``. ``OPERATIONS`` must describe
exactly the routes the app has, or building the document fails.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from crohooks.api.models import (
    CreateWebhookModel,
    DisableHookModel,
    HookEvent,
    HookSettingsModel,
    PortalLinkModel,
    PublishBatchModel,
    PublishEventModel,
    RecoverModel,
    UpdateWebhookModel,
)
from crohooks.api.request import HEADERS_MODEL
from crohooks.api.wire import ALLOW_HEADERS, API_VERSIONS
from crohooks.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    InternalError,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    Unauthenticated,
)
from crohooks.filters import MAX_FILTER_LENGTH
from crohooks.hooks.controls import MAX_HEADERS, RESERVED_HEADERS, RESERVED_PREFIXES
from crohooks.hooks.rules import HOOK_EVENTS, MAX_URL_LENGTH, PUBLISHABLE_EVENTS
from crohooks.model import DeliveryStatus

CRO_TIMESTAMP = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}$"
MAX_ID = 10**18 - 1
"""Ids are parsed from at most 18 digits."""

CroTimestamp = Annotated[
    str,
    Field(
        pattern=CRO_TIMESTAMP,
        description="UTC, naive ISO 8601 with microseconds",
        examples=["2022-08-20T01:45:38.518903"],
    ),
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorModel(_Wire):
    """Every error: what was wrong, what the status means, and where."""

    detail: str
    explanation: str
    field: str | None = Field(
        description="`<Model>.<field>`, e.g. `CreateWebhookModel.url`, or null",
        examples=[f"{HEADERS_MODEL}.x-tenant-id"],
    )


class WebhookModel(_Wire):
    """A hook; every key is always present, the secret in plain text (as CRO does)."""

    deleted_at: CroTimestamp | None
    events: list[HookEvent]
    id: int
    last_http_fail: CroTimestamp | None
    last_http_success: CroTimestamp | None
    secret: str
    url: str


class _Page(_Wire):
    current_limit: int = Field(ge=1, le=1000)
    current_page: int = Field(ge=1, le=10000)
    total_count: int = Field(ge=0)
    total_pages: int = Field(ge=0)


class WebhookListModel(_Page):
    """A page of hooks, ordered by id."""

    results: list[WebhookModel]


class WebhookPingResultModel(_Wire):
    """What the hook URL answered to the ping; -1 when no HTTP response was received."""

    delivery_id: uuid.UUID
    http_status: Literal[-1] | Annotated[int, Field(ge=100, le=599)]
    message: str = Field(examples=["No exceptions raised."])


class TenantModel(_Wire):
    """A tenant record (CRO)."""

    address: str | None
    city: str | None
    code: str
    created_on: CroTimestamp
    email: str | None
    id: int
    is_active: bool
    name: str
    phone: str | None
    state: str | None
    truck_limit: int | None
    zip: str | None


class TenantListModel(_Page):
    """A page of the granted tenants that have a record, ordered by id."""

    results: list[TenantModel]


class EventAcceptedModel(_Wire):
    """A durably accepted event; a repeated idempotency key returns the first event's id."""

    event_id: uuid.UUID
    hook_count: int = Field(ge=0, description="the active hooks subscribed to the event")


class EventBatchAcceptedModel(_Wire):
    """Every event of the batch, durably accepted in one transaction."""

    results: list[EventAcceptedModel] = Field(description="one per event, in request order")


class DeliveryModel(_Wire):
    """One event (or ping) for one hook; its id stays the same across retries."""

    attempt_count: int = Field(ge=0)
    completed_at: CroTimestamp | None
    created_at: CroTimestamp
    delivery_id: uuid.UUID
    event: HookEvent
    event_id: uuid.UUID | None
    hook_id: int
    last_http_status: int | None
    last_message: str | None
    next_attempt_at: CroTimestamp | None = Field(description="set while the delivery is pending")
    status: DeliveryStatus


class DeliveryListModel(_Page):
    """A page of a hook's deliveries."""

    results: list[DeliveryModel]


class DeliveryAttemptModel(_Wire):
    """One POST to the hook URL: what was sent and what came back."""

    duration_ms: float
    http_status: int = Field(description="the status the hook URL answered, or -1")
    message: str
    number: int = Field(ge=1)
    request_headers: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        description="`[name, value]` pairs: the headers crohooks set, by name"
    )
    response_body: str | None = Field(description="at most the first 16 KiB")
    response_headers: list[Annotated[list[str], Field(min_length=2, max_length=2)]] | None = Field(
        description="`[name, value]` pairs in the order received (a name may repeat); "
        "null when no response came"
    )
    started_at: CroTimestamp


class DeliveryDetailModel(DeliveryModel):
    """A delivery with the body it sends and every attempt made."""

    attempts: list[DeliveryAttemptModel]
    request_body: str


class BasicAuthShownModel(_Wire):
    """Receiver basic auth, the password never in full."""

    password: str = Field(description="`****` and at most its last 4 characters")
    type: Literal["basic"]
    username: str


class BearerAuthShownModel(_Wire):
    """A receiver bearer token, never in full."""

    token: str = Field(description="`****` and at most its last 4 characters")
    type: Literal["bearer"]


class RateLimitShownModel(_Wire):
    """At most `per_second` deliveries a second, after `burst` extra at once."""

    burst: int = Field(ge=0)
    per_second: float


class HookSettingsResultModel(_Wire):
    """crohooks' own settings of a hook; credentials are never shown in full."""

    auth: Annotated[BasicAuthShownModel | BearerAuthShownModel, Field(discriminator="type")] | None
    disabled: bool = Field(description="a disabled hook's deliveries wait until it is enabled")
    disabled_at: CroTimestamp | None
    disabled_by: str | None = Field(
        description="the token subject that disabled it, or `crohooks` (auto-disabled)"
    )
    disabled_reason: str | None
    filter: str | None = Field(
        description="a CEL expression over `event` and `data`; null: every event"
    )
    headers: dict[str, str] = Field(
        description="static headers sent with every request; values shown as `****` and "
        "at most their last 4 characters"
    )
    hook_id: int
    max_in_flight: int | None = Field(
        description="the hook's cap on requests in flight; null: the server's default"
    )
    ordering: Literal["all", "latest"] = Field(
        description="how deliveries with an ordering key are sent: all: every update of a "
        "key, one at a time in publish order; latest: the same, but while a key is blocked, "
        "waiting updates that a newer one replaces are marked superseded"
    )
    rate_limit: RateLimitShownModel | None = Field(
        description="deliveries over the rate wait in the queue; null: no limit"
    )


class RecoverResultModel(_Wire):
    """The failed deliveries of the window, queued again."""

    recovered: int = Field(ge=0, description="failed deliveries queued again")


class PortalLinkResultModel(_Wire):
    """A one-time link into the tenant portal (docs/portal.md)."""

    expires_at: CroTimestamp
    url: str = Field(description="open it once, before expires_at, to start a portal session")


_REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    CreateWebhookModel,
    UpdateWebhookModel,
    PublishEventModel,
    PublishBatchModel,
    RecoverModel,
    HookSettingsModel,
    DisableHookModel,
    PortalLinkModel,
)
_RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    ErrorModel,
    WebhookModel,
    WebhookListModel,
    WebhookPingResultModel,
    TenantModel,
    TenantListModel,
    EventAcceptedModel,
    EventBatchAcceptedModel,
    DeliveryModel,
    DeliveryListModel,
    DeliveryDetailModel,
    RecoverResultModel,
    HookSettingsResultModel,
    PortalLinkResultModel,
)

# The host of a hook URL as the server takes it (hooks/rules.py, check_url): a name whose
# dot-separated labels have 1 to 63 characters, or a bracketed IPv6 address (RFC 3986's
# grammar); then an optional port from 1 to 65535. Names are written in ASCII here (an
# internationalised name in its xn-- form): the 63 characters count after IDNA encoding,
# which no pattern can check on the Unicode form.
_LABEL = "[0-9A-Za-z_-]{1,63}"
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = f"(?:{_H16}:{_H16}|{_OCTET}(?:\\.{_OCTET}){{3}})"
_IPV6 = "|".join(
    (
        f"(?:{_H16}:){{6}}{_LS32}",
        f"::(?:{_H16}:){{5}}{_LS32}",
        f"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        f"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        f"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        f"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        f"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        f"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        f"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    )
)
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_URL_LENGTH,
    "pattern": (
        f"^[Hh][Tt][Tt][Pp][Ss]?://(?:{_LABEL}(?:\\.{_LABEL})*\\.?|\\[(?:{_IPV6})\\])"
        f"(?::{_PORT})?(?:[/?#][^\\s\\u0000-\\u001f]*)?$"
    ),
    "description": (
        "absolute http or https URL without a user-info part; its host a name of "
        "dot-separated labels of 1 to 63 letters, digits, hyphens or underscores "
        "(internationalised names in their xn-- form) or a bracketed IPv6 address; "
        "a port, if any, from 1 to 65535. A host that is an IP address must be one "
        "deliveries may reach (public, or in the operator's allowed networks); names are "
        "checked when a delivery is sent"
    ),
    "examples": ["https://example.com/hooks/cro"],
}
SECRET_SCHEMA = {
    "type": "string",
    # CRO's pattern, restricted to canonical base64 (so lengths 12..268).
    "pattern": (
        "^\\s*(?:[A-Za-z0-9+/]{4}){2,66}"
        "(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)\\s*$"
    ),
    "description": "base64 HMAC key; generated (24 random bytes) when omitted; never null",
    "examples": ["VGhlIGxhenkgYnJvd24gZG9n"],
}
IDEMPOTENCY_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[^\\u0000]*$",
    "description": "the same key within 24 h returns the first event and queues nothing; "
    "no NUL characters",
}
ORDERING_KEY_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": "^[^\\u0000]*$",
    "description": "deliveries of events with the same key are attempted in publish order, "
    "per hook, and carry a sequence number (e.g. Job:4711); no NUL characters",
}
_EVENTS = {
    "type": "array",
    "items": {"type": "string", "enum": list(HOOK_EVENTS)},
    "uniqueItems": True,
}
_TIMESTAMP_IN = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601; without an offset it is UTC",
    "examples": ["2022-08-20T01:45:38.518903"],
}

_REQUEST_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "CreateWebhookModel": {"url": URL_SCHEMA, "secret": SECRET_SCHEMA, "events": _EVENTS},
    "UpdateWebhookModel": {
        "url": URL_SCHEMA,
        "secret": SECRET_SCHEMA,
        "events": {**_EVENTS, "description": "omitted: unchanged; [] means no events"},
    },
    "PublishEventModel": {
        "event": {"type": "string", "enum": list(PUBLISHABLE_EVENTS)},
        "data": {"type": "object", "description": "any JSON object, at most 1 MiB"},
        "idempotency_key": IDEMPOTENCY_KEY_SCHEMA,
        "ordering_key": ORDERING_KEY_SCHEMA,
    },
    "HookSettingsModel": {
        "ordering": {
            "anyOf": [{"type": "string", "enum": ["all", "latest"]}, {"type": "null"}],
            "description": "how deliveries with an ordering key are sent: all (every update "
            "of a key, one at a time in publish order) or latest (while a key is blocked, "
            "waiting updates that a newer one replaces are marked superseded); null: all",
        },
        "filter": {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_FILTER_LENGTH},
                {"type": "null"},
            ],
            "description": "a CEL expression over `event` (the event name) and `data` (the "
            "published object), true for the events the hook wants, e.g. "
            '`data.status == "Completed"`; checked when set (a 400 names the line and column '
            "of an error); `map` and `filter` are not available; null: every event",
        },
        "headers": {
            "anyOf": [
                {
                    "type": "object",
                    "maxProperties": MAX_HEADERS,
                    "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$"},
                    "additionalProperties": {
                        "type": "string",
                        "pattern": "^[\\x21-\\x7e]([\\x20-\\x7e]{0,1022}[\\x21-\\x7e])?$",
                    },
                },
                {"type": "null"},
            ],
            "description": "static headers for every request, replacing those set before; "
            "null or {} removes them. Reserved (400): "
            + ", ".join(sorted(RESERVED_HEADERS))
            + ", and names starting "
            + ", ".join(f"{prefix}" for prefix in RESERVED_PREFIXES),
        },
    },
    "RecoverModel": {
        "since": _TIMESTAMP_IN,
        "until": {
            "anyOf": [_TIMESTAMP_IN, {"type": "null"}],
            "description": "default: now; when given, later than since",
        },
    },
}
"""What the request models' validators add to their types (a secret is never null...)."""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    response: type[BaseModel]
    errors: tuple[type[ApiError], ...]
    status: int = 200
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: tuple[str, ...] = ()
    tenant: bool = True
    response_headers: tuple[str, ...] = ()


_COMMON: tuple[type[ApiError], ...] = (
    BadRequest,
    Unauthenticated,
    NotAcceptable,
    RequestTimeout,
    PayloadTooLarge,
    InternalError,
    ServiceUnavailable,
)
_TENANT = (*_COMMON, Forbidden, RateLimited)
_ONE_HOOK = (*_TENANT, NotFound)
_CHANGE_HOOK = (*_ONE_HOOK, Conflict)
_PAGING = ("page_limit", "page_index")


def _hooks(method: str, path: str, name: str, summary: str, **details: Any) -> Operation:
    return Operation(method, path, name, summary, "Hooks", **details)


OPERATIONS: tuple[Operation, ...] = (
    _hooks(
        "POST",
        "/hooks",
        "create_hook",
        "Create Hook",
        response=WebhookModel,
        errors=(*_TENANT, Conflict),
        body=CreateWebhookModel,
    ),
    _hooks(
        "GET",
        "/hooks",
        "list_hooks",
        "List Hooks",
        response=WebhookListModel,
        errors=_TENANT,
        query=(*_PAGING, "deleted"),
    ),
    _hooks(
        "GET", "/hooks/{hook_id}", "get_hook", "Get Hook", response=WebhookModel, errors=_ONE_HOOK
    ),
    _hooks(
        "PATCH",
        "/hooks/{hook_id}",
        "update_hook",
        "Update Hook",
        response=WebhookModel,
        errors=_CHANGE_HOOK,
        body=UpdateWebhookModel,
    ),
    _hooks(
        "DELETE",
        "/hooks/{hook_id}",
        "delete_hook",
        "Delete Hook",
        response=WebhookModel,
        errors=_CHANGE_HOOK,
    ),
    _hooks(
        "GET",
        "/hooks/{hook_id}/ping",
        "ping_hook",
        "Ping Hook",
        response=WebhookPingResultModel,
        errors=_ONE_HOOK,
        response_headers=("X-Cro-Signature",),
    ),
    Operation(
        "GET",
        "/tenants",
        "list_tenants",
        "List Tenants",
        "Tenants",
        response=TenantListModel,
        errors=_COMMON,
        query=_PAGING,
        tenant=False,
    ),
    Operation(
        "POST",
        "/events",
        "publish_event",
        "Publish Event",
        "Events",
        status=202,
        response=EventAcceptedModel,
        errors=_TENANT,
        body=PublishEventModel,
    ),
    Operation(
        "POST",
        "/events/batch",
        "publish_batch",
        "Publish Batch",
        "Events",
        status=202,
        response=EventBatchAcceptedModel,
        errors=_TENANT,
        body=PublishBatchModel,
    ),
    Operation(
        "GET",
        "/hooks/{hook_id}/deliveries",
        "list_deliveries",
        "List Deliveries",
        "Deliveries",
        response=DeliveryListModel,
        errors=_ONE_HOOK,
        query=(*_PAGING, "status"),
    ),
    Operation(
        "GET",
        "/hooks/{hook_id}/deliveries/{delivery_id}",
        "get_delivery",
        "Get Delivery",
        "Deliveries",
        response=DeliveryDetailModel,
        errors=_ONE_HOOK,
    ),
    Operation(
        "POST",
        "/hooks/{hook_id}/deliveries/{delivery_id}/redeliver",
        "redeliver",
        "Redeliver",
        "Deliveries",
        status=202,
        response=DeliveryModel,
        errors=_CHANGE_HOOK,
    ),
    Operation(
        "POST",
        "/hooks/{hook_id}/recover",
        "recover",
        "Recover Failed Deliveries",
        "Deliveries",
        status=202,
        response=RecoverResultModel,
        errors=_CHANGE_HOOK,
        body=RecoverModel,
    ),
    Operation(
        "GET",
        "/hooks/{hook_id}/settings",
        "get_hook_settings",
        "Get Hook Settings",
        "Hook settings",
        response=HookSettingsResultModel,
        errors=_ONE_HOOK,
    ),
    Operation(
        "PATCH",
        "/hooks/{hook_id}/settings",
        "update_hook_settings",
        "Update Hook Settings",
        "Hook settings",
        response=HookSettingsResultModel,
        errors=_CHANGE_HOOK,
        body=HookSettingsModel,
    ),
    Operation(
        "POST",
        "/hooks/{hook_id}/disable",
        "disable_hook",
        "Disable Hook",
        "Hook settings",
        response=HookSettingsResultModel,
        errors=_CHANGE_HOOK,
        body=DisableHookModel,
        body_required=False,
    ),
    Operation(
        "POST",
        "/hooks/{hook_id}/enable",
        "enable_hook",
        "Enable Hook",
        "Hook settings",
        response=HookSettingsResultModel,
        errors=_CHANGE_HOOK,
    ),
    Operation(
        "POST",
        "/portal/links",
        "create_portal_link",
        "Create Portal Link",
        "Portal",
        response=PortalLinkResultModel,
        errors=_TENANT,
        body=PortalLinkModel,
    ),
)

_TAGS = [
    {"name": "Hooks", "description": "CRO's webhooks API (hook roles: Admin, Dispatcher)"},
    {"name": "Tenants", "description": "CRO's tenants API (any authenticated role)"},
    {"name": "Events", "description": "crohooks' own: publishing events (System, Admin)"},
    {"name": "Deliveries", "description": "crohooks' own: the delivery log of a hook"},
    {
        "name": "Hook settings",
        "description": "crohooks' own controls of a hook: disable and enable, static headers, "
        "receiver auth, in-flight cap, rate limit, filter, ordering mode (hook roles: Admin, "
        "Dispatcher)",
    },
    {
        "name": "Portal",
        "description": "crohooks' own: links into the tenant portal (Admin, System)",
    },
]

_PARAMETERS: dict[str, dict[str, Any]] = {
    "x-tenant-id": {
        "name": "x-tenant-id",
        "in": "header",
        "required": True,
        "description": "the tenant acted on (1 to 18 digits, no sign); the token must grant it",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
    },
    "x-api-version": {
        "name": "x-api-version",
        "in": "header",
        "required": False,
        "description": "default: the version this client last named, else the earliest",
        "schema": {"type": "string", "enum": list(API_VERSIONS)},
    },
    "x-request-id": {
        "name": "x-request-id",
        "in": "header",
        "required": False,
        "description": "echoed as X-REQUEST-ID; a new one is made when absent",
        "schema": {"type": "string", "format": "uuid"},
    },
    "page_limit": {
        "name": "page_limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    "page_index": {
        "name": "page_index",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1},
    },
    "deleted": {
        "name": "deleted",
        "in": "query",
        "required": False,
        "description": "true: only deleted hooks; false: only active ones; absent: all "
        "(1 and 0 are accepted too, in any case)",
        "schema": {"type": "boolean"},
    },
    "status": {
        "name": "status",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": [status.value for status in DeliveryStatus]},
    },
    "hook_id": {
        "name": "hook_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    },
    "delivery_id": {
        "name": "delivery_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    },
}

_HEADERS: dict[str, dict[str, Any]] = {
    "X-REQUEST-ID": {
        "description": "the request's x-request-id, or a new UUID",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    },
    "X-API-VERSION": {
        "description": "the API version in force for this request",
        "required": True,
        "schema": {"type": "string", "enum": list(API_VERSIONS)},
    },
    "Access-Control-Allow-Origin": {"required": True, "schema": {"type": "string", "const": "*"}},
    "Access-Control-Allow-Headers": {
        "required": True,
        "schema": {"type": "string", "const": ALLOW_HEADERS},
    },
    "Access-Control-Allow-Methods": {
        "description": "the path's methods, e.g. `GET,PATCH,DELETE`",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Z]+(,[A-Z]+)*$"},
    },
    "Allow": {
        "description": "the path's methods, e.g. `GET,PATCH,DELETE`",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Z]+(,[A-Z]+)*$"},
    },
    "Retry-After": {
        "description": "seconds to wait before the next request",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    },
    "X-Cro-Signature": {
        "description": "the X-Cro-Signature header sent with the ping",
        "required": True,
        "schema": {"type": "string", "pattern": "^sha1=[0-9a-f]{40}$"},
    },
}
_WIRE_HEADERS = (
    "X-REQUEST-ID",
    "X-API-VERSION",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods",
    "Allow",
)

_ERROR_WHEN = {
    400: "Malformed JSON, unknown or wrongly typed fields, a rule broken, bad headers, path "
    "or query parameters, a body where none belongs, a non-JSON Content-Type.",
    401: "Missing, malformed, unverifiable or expired bearer token.",
    403: "The token's roles don't allow the operation, or it does not grant the tenant.",
    404: "No such hook (or delivery) in this tenant, or a ping of a deleted hook.",
    406: "The Accept header excludes application/json.",
    408: "The body did not arrive within the body read timeout.",
    409: "The hook is deleted, or another active hook of the tenant has the URL.",
    413: "The body is over the limit (64 KiB for hook bodies, 1 MiB per event, 16 MiB a batch).",
    429: "Over the tenant's requests a minute, or the hook's pings a minute.",
    500: "An unexpected error, logged with the request id.",
    503: "The database is unavailable (down, stalled, restarting, read-only, out of "
    "connections); retry after Retry-After seconds.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(schema_name)}}


def _error_response(error: type[ApiError]) -> dict[str, Any]:
    extra = ("Retry-After",) if error in (RateLimited, ServiceUnavailable) else ()
    return {
        "description": f"{error.explanation} {_ERROR_WHEN.get(error.status, '')}".strip(),
        "headers": _headers((*_WIRE_HEADERS, *extra)),
        "content": _json("ErrorModel"),
    }


def _schemas() -> dict[str, Any]:
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((model, "validation") for model in _REQUEST_MODELS),
        *((model, "serialization") for model in _RESPONSE_MODELS),
    ]
    _, top = models_json_schema(modes, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = top["$defs"]
    for model_name, fields in _REQUEST_FIELDS.items():
        properties = schemas[model_name]["properties"]
        for field_name, refined in fields.items():
            title = properties[field_name].get("title")
            properties[field_name] = {"title": title, **copy.deepcopy(refined)}
    return schemas


def _path_parameters(path: str) -> list[str]:
    return [name for name in ("hook_id", "delivery_id") if "{" + name + "}" in path]


def _operation(op: Operation) -> dict[str, Any]:
    tenant = ("x-tenant-id",) if op.tenant else ()
    names = [*_path_parameters(op.path), *tenant, "x-api-version", "x-request-id", *op.query]
    success = {
        "description": (op.response.__doc__ or op.response.__name__).strip().splitlines()[0],
        "headers": _headers((*_WIRE_HEADERS, *op.response_headers)),
        "content": _json(op.response.__name__),
    }
    responses: dict[str, Any] = {str(op.status): success}
    for error in sorted(op.errors, key=lambda error: error.status):
        responses[str(error.status)] = {"$ref": f"#/components/responses/{error.__name__}"}
    described: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": op.operation_id,
        "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in names],
        "responses": responses,
    }
    if op.body is not None:
        described["requestBody"] = {
            "required": op.body_required,
            "content": _json(op.body.__name__),
        }
    return described


def _routed_operations(app: FastAPI) -> set[tuple[str, str]]:
    generated = get_openapi(title=app.title, version=app.version, routes=app.routes)
    return {
        (method.upper(), path)
        for path, item in generated.get("paths", {}).items()
        for method in item
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document served at ``/openapi.json``, built once per app."""
    if app.openapi_schema:
        return app.openapi_schema
    documented = {(op.method, op.path) for op in OPERATIONS}
    routed = _routed_operations(app)
    if routed != documented:
        missing = sorted(routed - documented)
        stale = sorted(documented - routed)
        raise LookupError(
            f"OpenAPI operations out of step with the routes: undocumented {missing}, "
            f"without a route {stale}"
        )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    errors = {error for op in OPERATIONS for error in op.errors}
    app.openapi_schema = {
        "openapi": "3.1.0",
        "info": {
            "title": app.title,
            "version": app.version,
            "description": "CRO Software's webhooks API (hooks, tenants), plus crohooks' own "
            "event publishing and delivery log. Every path is also accepted with a trailing "
            "slash. OPTIONS on any path answers 200 with the CORS headers, unauthenticated. "
            "A method a path does not support is a 405 with Allow; an unknown path a 404.",
        },
        "tags": _TAGS,
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": {
                error.__name__: _error_response(error)
                for error in sorted(errors, key=lambda error: error.status)
            },
            "parameters": copy.deepcopy(_PARAMETERS),
            "headers": copy.deepcopy(_HEADERS),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <token>`, CRO's pattern, at most "
                    "256 characters for local tokens",
                }
            },
        },
    }
    return app.openapi_schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi` at ``app.openapi_url`` instead of FastAPI's inference."""
    setattr(app, "openapi", lambda: build_openapi(app))  # noqa: B010 - mypy: method-assign
