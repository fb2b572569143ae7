"""The ordering mode of a hook (crohooks' own extension resource, spec 3.5)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import HookOrderingModel
from crohooks.api.request import (
    hook_caller,
    json_object,
    no_body,
    parse_id,
    query_params,
    services,
    validate,
)
from crohooks.api.wire import CroJSONResponse

router = APIRouter()


@router.get("/hooks/{hook_id}/ordering")
async def get_ordering(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    ordering = await services(request).hooks.ordering(
        caller.tenant_id, parse_id(hook_id, "hook_id")
    )
    return CroJSONResponse({"ordering": ordering})


@router.patch("/hooks/{hook_id}/ordering")
async def set_ordering(request: Request, hook_id: str) -> CroJSONResponse:
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    identifier = parse_id(hook_id, "hook_id")
    body = await json_object(
        request, limit=svc.settings.max_hook_body_bytes, model_name="HookOrderingModel"
    )
    model = validate(HookOrderingModel, body)
    ordering = await svc.hooks.set_ordering(caller.tenant_id, identifier, model.ordering)
    return CroJSONResponse({"ordering": ordering})
