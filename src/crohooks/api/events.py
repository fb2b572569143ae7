"""Publishing events (crohooks' own endpoints, spec 3.4): durable before the 202."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import PublishBatchModel, PublishEventModel
from crohooks.api.request import json_object, publisher, query_params, services, validate
from crohooks.api.wire import CroJSONResponse
from crohooks.model import AcceptedEvent, NewEvent

router = APIRouter()


def _accepted(event: AcceptedEvent) -> dict[str, object]:
    return {"event_id": event.event_id, "hook_count": event.hook_count}


def _new_event(model: PublishEventModel) -> NewEvent:
    return NewEvent(
        event=model.event,
        data=model.data,
        idempotency_key=model.idempotency_key,
        ordering_key=model.ordering_key,
    )


@router.post("/events")
async def publish_event(request: Request) -> CroJSONResponse:
    caller = await publisher(request)
    svc = services(request)
    query_params(request, frozenset())
    body = await json_object(
        request, limit=svc.settings.max_event_body_bytes, model_name="PublishEventModel"
    )
    model = validate(PublishEventModel, body)
    [accepted] = await svc.intake.publish(caller.tenant_id, [_new_event(model)])
    return CroJSONResponse(_accepted(accepted), status_code=202)


@router.post("/events/batch")
async def publish_batch(request: Request) -> CroJSONResponse:
    caller = await publisher(request)
    svc = services(request)
    query_params(request, frozenset())
    body = await json_object(
        request, limit=svc.settings.max_batch_body_bytes, model_name="PublishBatchModel"
    )
    model = validate(PublishBatchModel, body)
    accepted = await svc.intake.publish(caller.tenant_id, [_new_event(m) for m in model.events])
    return CroJSONResponse({"results": [_accepted(a) for a in accepted]}, status_code=202)
