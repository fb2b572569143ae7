"""The CRO hooks endpoints (spec 1): create, list, get, update, soft delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import CreateWebhookModel, UpdateWebhookModel, webhook_model
from crohooks.api.request import (
    enforce_rate_limit,
    hook_caller,
    json_object,
    no_body,
    page_of,
    parse_id,
    query_params,
    services,
    validate,
)
from crohooks.api.wire import CroJSONResponse
from crohooks.errors import BadRequest
from crohooks.hooks.service import HookChanges

router = APIRouter()

_LIST_PARAMS = frozenset({"page_limit", "page_index", "deleted"})
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


@router.post("/hooks")
async def create_hook(request: Request) -> CroJSONResponse:
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    body = await json_object(
        request, limit=svc.settings.max_hook_body_bytes, model_name="CreateWebhookModel"
    )
    model = validate(CreateWebhookModel, body)
    hook = await svc.hooks.create(
        caller.tenant_id,
        url=model.url,
        events=tuple(model.events),
        secret=model.secret,
        field="CreateWebhookModel.url",
    )
    return CroJSONResponse(webhook_model(hook))


@router.get("/hooks")
async def list_hooks(request: Request) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    params = query_params(request, _LIST_PARAMS)
    page = page_of(params)
    deleted: bool | None = None
    if "deleted" in params:
        flag = params["deleted"].strip().lower()
        if flag not in _BOOLEANS:
            raise BadRequest("deleted must be true, false, 1 or 0", field="QueryParameters.deleted")
        deleted = _BOOLEANS[flag]
    found, total = await services(request).hooks.list_page(
        caller.tenant_id, deleted=deleted, limit=page.limit, offset=page.offset
    )
    return CroJSONResponse(page.envelope([webhook_model(hook) for hook in found], total))


@router.get("/hooks/{hook_id}")
async def get_hook(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    hook = await services(request).hooks.get(caller.tenant_id, parse_id(hook_id, "hook_id"))
    return CroJSONResponse(webhook_model(hook))


@router.patch("/hooks/{hook_id}")
async def update_hook(request: Request, hook_id: str) -> CroJSONResponse:
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    identifier = parse_id(hook_id, "hook_id")
    body = await json_object(
        request, limit=svc.settings.max_hook_body_bytes, model_name="UpdateWebhookModel"
    )
    model = validate(UpdateWebhookModel, body)
    changes = HookChanges(
        url=model.url,
        events=tuple(model.events) if model.events is not None else None,
        secret=model.secret,
    )
    hook = await svc.hooks.update(
        caller.tenant_id, identifier, changes, field="UpdateWebhookModel.url"
    )
    return CroJSONResponse(webhook_model(hook))


@router.delete("/hooks/{hook_id}")
async def delete_hook(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    hook = await services(request).hooks.delete(caller.tenant_id, parse_id(hook_id, "hook_id"))
    return CroJSONResponse(webhook_model(hook))


@router.get("/hooks/{hook_id}/ping")
async def ping_hook(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    identifier = parse_id(hook_id, "hook_id")
    # The hook is read beside the ping's rate-limit hit (on PostgreSQL two round trips at
    # once); the limit's 429 still comes before the hook's 404.
    limited, found = await asyncio.gather(
        enforce_rate_limit(
            svc, f"ping:{caller.tenant_id}:{identifier}", svc.settings.rate_limit_ping_per_minute
        ),
        svc.hooks.get_active(caller.tenant_id, identifier),
        return_exceptions=True,
    )
    if isinstance(limited, BaseException):
        raise limited
    if isinstance(found, BaseException):
        raise found
    result = await svc.ping.send(caller.tenant_id, found)
    return CroJSONResponse(
        {
            "delivery_id": result.delivery_id,
            "http_status": result.http_status,
            "message": result.message,
        },
        headers={"X-Cro-Signature": result.signature},
    )
