"""Parsing and authorising a request: headers, token, tenant, query and body.

Everything here raises ``ApiError``s; ``app.py`` turns them into responses in one place.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from crohooks.api.wire import API_VERSIONS, DEFAULT_API_VERSION, request_state
from crohooks.auth.header import token_from_authorization
from crohooks.auth.principal import (
    HOOK_ROLES,
    PORTAL_LINK_ROLES,
    PUBLISH_ROLES,
    Principal,
    Role,
)
from crohooks.clock import utc_now
from crohooks.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotAcceptable,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
)
from crohooks.ratelimit import Verdict
from crohooks.services import Services

HEADERS_MODEL = "StandardRequestHeadersModel"
_TENANT_ID = re.compile(r"^\s*[0-9]{1,18}\s*$")
_JSON_TYPES = ("application/json",)
_ACCEPTABLE = ("application/json", "application/*", "*/*")
MAX_JSON_DEPTH = 128
# Python's own limit on converting digits to an int; past it ``int()`` raises with advice
# about ``sys.set_int_max_str_digits()``, which is no answer for a client.
MAX_INT_DIGITS = 4300
_MAX_ID_DIGITS = 18
_CONTAINERS = (dict, list)

ModelT = TypeVar("ModelT", bound=BaseModel)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if accept is None or not accept.strip():
        return
    for item in accept.split(","):
        media, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media.strip().lower() in _ACCEPTABLE and quality > 0:
            return
    raise NotAcceptable("this API only produces application/json", field=f"{HEADERS_MODEL}.accept")


async def _api_version(request: Request, svc: Services, principal: Principal) -> None:
    await _settle_version(request, svc, principal, await svc.version_pins.get(principal.client))


async def _settle_version(
    request: Request, svc: Services, principal: Principal, pinned: str | None
) -> None:
    """Spec 1.3: the version the request names (pinned from now on), else the client's
    pinned one, else the first."""
    state = request_state(request)
    if request.headers.get("x-api-version") is None:
        state["api_version"] = pinned or DEFAULT_API_VERSION
    elif pinned != state["api_version"]:
        await svc.version_pins.pin(principal.client, state["api_version"], now=utc_now())


async def authenticated(request: Request) -> Principal:
    """Common checks of every authenticated route, in the order a client can fix them."""
    principal = await _verified(request)
    await _api_version(request, services(request), principal)
    return principal


async def _verified(request: Request) -> Principal:
    """``authenticated`` up to the token's verification; the API version is not settled."""
    _check_accept(request)
    state = request_state(request)
    if state.get("request_id_invalid"):
        raise BadRequest("x-request-id must be a UUID", field=f"{HEADERS_MODEL}.x-request-id")
    named = request.headers.get("x-api-version")
    if named is not None and named.strip() not in API_VERSIONS:
        raise BadRequest(
            "x-api-version must be one of " + ", ".join(API_VERSIONS),
            field=f"{HEADERS_MODEL}.x-api-version",
        )
    svc = services(request)
    token = token_from_authorization(
        request.headers.get("authorization"), max_length=svc.verifier.max_header_length
    )
    principal = await svc.verifier.verify(token)
    state["principal"] = principal
    return principal


@dataclass(frozen=True, slots=True)
class TenantCaller:
    principal: Principal
    tenant_id: int


async def enforce_rate_limit(svc: Services, key: str, limit: int) -> None:
    """429 with Retry-After once ``key`` has had ``limit`` hits this minute (0: no limit)."""
    if limit <= 0:
        return
    verdict = await svc.rate_limiter.hit(key, limit=limit)
    if not verdict.allowed:
        raise _rate_limited(limit, verdict)


def _rate_limited(limit: int, verdict: Verdict) -> RateLimited:
    return RateLimited(
        f"more than {limit} requests a minute; retry in {verdict.retry_after} s",
        headers={"Retry-After": str(verdict.retry_after)},
    )


async def _tenant_caller(request: Request, roles: frozenset[Role]) -> TenantCaller:
    """``authenticated``, then the tenant checks and the tenant's rate limit.

    The client's API version is settled before any error leaves, so every response
    carries it; the pin is read with the tenant's hit (one statement on PostgreSQL).
    """
    principal = await _verified(request)
    svc = services(request)
    try:
        tenant_id = _tenant_checks(principal, request, roles)
    except ApiError:
        await _api_version(request, svc, principal)
        raise
    limit = svc.settings.rate_limit_api_per_minute
    admitted = await svc.admission.admit(principal.client, f"api:{tenant_id}", limit=limit)
    await _settle_version(request, svc, principal, admitted.pinned)
    if not admitted.verdict.allowed:
        raise _rate_limited(limit, admitted.verdict)
    return TenantCaller(principal=principal, tenant_id=tenant_id)


def _tenant_checks(principal: Principal, request: Request, roles: frozenset[Role]) -> int:
    """The tenant the request names, once the caller's roles and token allow it."""
    raw = request.headers.get("x-tenant-id")
    if raw is None:
        raise BadRequest("x-tenant-id header is required", field=f"{HEADERS_MODEL}.x-tenant-id")
    if not _TENANT_ID.match(raw):
        raise BadRequest(
            "x-tenant-id must be a tenant id: a whole number of 1 to 18 digits, without a sign",
            field=f"{HEADERS_MODEL}.x-tenant-id",
        )
    tenant_id = int(raw)
    authorize(principal, tenant_id, roles)
    request_state(request)["tenant_id"] = tenant_id
    return tenant_id


def authorize(principal: Principal, tenant_id: int, roles: frozenset[Role]) -> None:
    """The role and tenant checks of every tenant-scoped operation (the API's and the
    portal's): one of ``roles``, and a grant of ``tenant_id``."""
    if not principal.has_any_role(roles):
        allowed = ", ".join(sorted(roles))
        raise Forbidden(f"this operation needs one of the roles: {allowed}")
    if not principal.grants_tenant(tenant_id):
        raise Forbidden(
            f"the token does not grant tenant {tenant_id}", field=f"{HEADERS_MODEL}.x-tenant-id"
        )


# The endpoints call these themselves, first thing (``no_body`` before them where a route
# takes no body), rather than declaring them as FastAPI dependencies: the checks and their
# order are the same, and FastAPI's resolution of dependencies costs more per request than
# the checks do (about a tenth of a ``GET /hooks/{id}`` on SQLite).


async def hook_caller(request: Request) -> TenantCaller:
    return await _tenant_caller(request, HOOK_ROLES)


async def publisher(request: Request) -> TenantCaller:
    return await _tenant_caller(request, PUBLISH_ROLES)


async def portal_linker(request: Request) -> TenantCaller:
    return await _tenant_caller(request, PORTAL_LINK_ROLES)


def _is_digits(raw: str, most: int) -> bool:
    """ASCII digits only (``str.isdigit`` also takes ``²``, which ``int()`` refuses), and
    few enough that ``int()`` is cheap and can't hit Python's own digit limit."""
    return raw.isascii() and raw.isdigit() and len(raw) <= most


def parse_id(raw: str, name: str) -> int:
    if not _is_digits(raw, _MAX_ID_DIGITS):
        raise BadRequest(f"{name} must be a positive integer", field=f"PathParameters.{name}")
    return int(raw)


def has_body(request: Request) -> bool:
    """The request says it carries a body (a length over 0, or chunks)."""
    length = request.headers.get("content-length")
    return (length is not None and length.strip() not in ("", "0")) or (
        "chunked" in request.headers.get("transfer-encoding", "").lower()
    )


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes and 408 when it arrives too slowly."""
    return await _read_limited(request, limit)


async def _read_limited(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and _declares_more_than(length.strip(), limit):
        raise PayloadTooLarge(f"the body may be at most {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    timeout = services(request).settings.body_read_timeout
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body may be at most {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout} s") from None
    return b"".join(chunks)


def _declares_more_than(length: str, limit: int) -> bool:
    if not length.isascii() or not length.isdigit():
        return False
    return len(length.lstrip("0")) > len(str(limit)) or int(length) > limit


async def no_body(request: Request) -> None:
    """GET and DELETE take no body; one sent anyway is a client bug worth reporting."""
    if has_body(request) and await _read_limited(request, 64 * 1024):
        raise BadRequest("this request takes no body")


class _NumberTooLong(ValueError):
    """An integer in a JSON body with more digits than ``MAX_INT_DIGITS``."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _NumberTooLong(f"the body holds a number of more than {MAX_INT_DIGITS} digits")
    try:
        return int(text)
    except ValueError:
        # The interpreter's own limit may be set lower (PYTHONINTMAXSTRDIGITS).
        raise _NumberTooLong("the body holds a number with too many digits") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """``1e400`` parses as infinity, which would be rendered as the non-JSON ``Infinity``."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number is too large to be represented")
    return value


async def json_object(request: Request, *, limit: int, model_name: str) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise BadRequest(
            "Content-Type must be application/json", field=f"{HEADERS_MODEL}.Content-Type"
        )
    raw = await _read_limited(request, limit)
    return parse_json_object(raw, model_name=model_name)


def parse_json_object(raw: bytes, *, model_name: str) -> dict[str, Any]:
    """A JSON object, by the API's rules: no NaN or Infinity, bounded numbers and depth."""
    if not raw.strip():
        raise BadRequest("a JSON body is required", field=model_name)
    try:
        parsed = json.loads(
            raw,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
        )
    except _NumberTooLong as error:
        raise BadRequest(str(error), field=model_name) from None
    except (ValueError, RecursionError) as error:
        detail = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        raise BadRequest(f"malformed JSON: {detail}", field=model_name) from None
    if not isinstance(parsed, dict):
        raise BadRequest("the body must be a JSON object", field=model_name)
    _check_depth(raw, parsed, model_name)
    return parsed


def _check_depth(raw: bytes, parsed: dict[str, Any], model_name: str) -> None:
    """Refuse bodies nested deeper than ``MAX_JSON_DEPTH``: they parse, but rendering them
    again deeper down the stack (event data is stored re-rendered) would exhaust it.
    Iterative, so a deep body costs no stack."""
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH:
        return
    pending: list[tuple[dict[str, Any] | list[Any], int]] = [(parsed, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(
                f"the body is nested more than {MAX_JSON_DEPTH} levels deep", field=model_name
            )
        children = container.values() if isinstance(container, dict) else container
        pending.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """Strict validation, the first problem reported with CRO's ``Model.field`` name."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        location = [str(part) for part in first["loc"]]
        field = f"{model.__name__}.{location[0]}" if location else model.__name__
        raise BadRequest(_message(first, location), field=field) from None


def _message(error: Any, location: list[str]) -> str:
    kind = error["type"]
    where = ".".join(location) or "body"
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a known field"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return f"{where}: {message}"


def query_params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    if not request.scope.get("query_string"):
        return {}
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise BadRequest(
                f"{name} is not a known query parameter", field=f"QueryParameters.{name}"
            )
        if name in params:
            raise BadRequest(f"{name} is given more than once", field=f"QueryParameters.{name}")
        params[name] = value
    return params


def int_param(params: dict[str, str], name: str, *, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    raw = raw.strip()
    digits = raw.lstrip("0") or raw[-1:]
    if not _is_digits(digits, len(str(high))) or not low <= int(digits) <= high:
        raise BadRequest(
            f"{name} must be an integer from {low} to {high}", field=f"QueryParameters.{name}"
        )
    return int(digits)


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    index: int

    @property
    def offset(self) -> int:
        return (self.index - 1) * self.limit

    def envelope(self, results: list[dict[str, Any]], total: int) -> dict[str, Any]:
        return {
            "current_limit": self.limit,
            "current_page": self.index,
            "results": results,
            "total_count": total,
            "total_pages": -(-total // self.limit),
        }


def page_of(params: dict[str, str]) -> Page:
    return Page(
        limit=int_param(params, "page_limit", default=100, low=1, high=1000),
        index=int_param(params, "page_index", default=1, low=1, high=10000),
    )
