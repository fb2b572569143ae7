"""The delivery log of a hook (crohooks' own endpoints, spec 3.4)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import (
    RecoverModel,
    delivery_detail_model,
    delivery_model,
    parse_cro_time,
)
from crohooks.api.request import (
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
from crohooks.model import DeliveryStatus

router = APIRouter()
_STATUSES = frozenset(status.value for status in DeliveryStatus)


def _delivery_id(raw: str) -> str:
    """A malformed id is the client's mistake, as a malformed hook id is (``parse_id``)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest("delivery_id must be a UUID", field="PathParameters.delivery_id") from None


@router.get("/hooks/{hook_id}/deliveries")
async def list_deliveries(request: Request, hook_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    params = query_params(request, frozenset({"page_limit", "page_index", "status"}))
    page = page_of(params)
    status = params.get("status")
    if status is not None and status not in _STATUSES:
        raise BadRequest(
            "status must be one of " + ", ".join(sorted(_STATUSES)),
            field="QueryParameters.status",
        )
    found, total = await services(request).delivery_log.list_page(
        caller.tenant_id,
        parse_id(hook_id, "hook_id"),
        status=status,
        limit=page.limit,
        offset=page.offset,
    )
    return CroJSONResponse(page.envelope([delivery_model(d) for d in found], total))


@router.get("/hooks/{hook_id}/deliveries/{delivery_id}")
async def get_delivery(request: Request, hook_id: str, delivery_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    delivery, attempts = await services(request).delivery_log.get(
        caller.tenant_id, parse_id(hook_id, "hook_id"), _delivery_id(delivery_id)
    )
    return CroJSONResponse(delivery_detail_model(delivery, attempts))


@router.post("/hooks/{hook_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: Request, hook_id: str, delivery_id: str) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    delivery = await services(request).delivery_log.redeliver(
        caller.tenant_id, parse_id(hook_id, "hook_id"), _delivery_id(delivery_id)
    )
    return CroJSONResponse(delivery_model(delivery), status_code=202)


@router.post("/hooks/{hook_id}/recover")
async def recover(request: Request, hook_id: str) -> CroJSONResponse:
    caller = await hook_caller(request)
    svc = services(request)
    query_params(request, frozenset())
    identifier = parse_id(hook_id, "hook_id")
    body = await json_object(
        request, limit=svc.settings.max_hook_body_bytes, model_name="RecoverModel"
    )
    model = validate(RecoverModel, body)
    since = parse_cro_time(model.since)
    until = parse_cro_time(model.until) if model.until is not None else None
    if until is not None and until <= since:
        raise BadRequest("until must be later than since", field="RecoverModel.until")
    count = await svc.delivery_log.recover(caller.tenant_id, identifier, since=since, until=until)
    return CroJSONResponse({"recovered": count}, status_code=202)
