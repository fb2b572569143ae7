"""crohooks' own controls of a hook (spec 3.6): its settings resource, disable and enable.

CRO's hook endpoints stay as they are; these sit beside them, with the same callers,
tenancy, errors and wire rules.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import (
    SETTINGS_READ_ONLY,
    DisableHookModel,
    HookSettingsModel,
    hook_settings_model,
)
from crohooks.api.request import (
    has_body,
    hook_caller,
    json_object,
    no_body,
    parse_id,
    query_params,
    services,
    validate,
)
from crohooks.api.wire import CroJSONResponse
from crohooks.errors import BadRequest

router = APIRouter()

MANUAL_REASON = "disabled by user"
"""``disabled_reason`` when ``POST /hooks/{id}/disable`` names none."""


@router.get("/hooks/{hook_id}/settings")
async def get_settings(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    found = await services(request).hook_settings.get(
        caller.tenant_id, parse_id(hook_id, "hook_id")
    )
    return CroJSONResponse(hook_settings_model(found))


@router.patch("/hooks/{hook_id}/settings")
async def update_settings(request: Request, hook_id: str) -> CroJSONResponse:
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    identifier = parse_id(hook_id, "hook_id")
    body = await json_object(
        request, limit=svc.settings.max_hook_body_bytes, model_name="HookSettingsModel"
    )
    for name in SETTINGS_READ_ONLY:
        if name in body:
            raise BadRequest(
                f"{name} is read-only here; POST /hooks/{{hook_id}}/disable or /enable",
                field=f"HookSettingsModel.{name}",
            )
    model = validate(HookSettingsModel, body)
    updated = await svc.hook_settings.update(caller.tenant_id, identifier, model.changes())
    return CroJSONResponse(hook_settings_model(updated))


@router.post("/hooks/{hook_id}/disable")
async def disable_hook(request: Request, hook_id: str) -> CroJSONResponse:
    """The body is optional: ``{"reason": "..."}``."""
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    identifier = parse_id(hook_id, "hook_id")
    reason = MANUAL_REASON
    if has_body(request):
        body = await json_object(
            request, limit=svc.settings.max_hook_body_bytes, model_name="DisableHookModel"
        )
        reason = validate(DisableHookModel, body).reason
    disabled = await svc.hook_settings.disable(
        caller.tenant_id, identifier, reason=reason, by=caller.principal.subject
    )
    return CroJSONResponse(hook_settings_model(disabled))


@router.post("/hooks/{hook_id}/enable")
async def enable_hook(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    enabled = await services(request).hook_settings.enable(
        caller.tenant_id, parse_id(hook_id, "hook_id")
    )
    return CroJSONResponse(hook_settings_model(enabled))
