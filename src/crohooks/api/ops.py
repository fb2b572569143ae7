"""Operations endpoints: liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from crohooks import metrics
from crohooks.api.request import services
from crohooks.api.wire import CroJSONResponse
from crohooks.errors import DatabaseUnavailable, ServiceUnavailable
from crohooks.model import DeliveryStatus

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> CroJSONResponse:
    return CroJSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> CroJSONResponse:
    built = services(request)
    try:
        await built.db.check(within=built.settings.readiness_timeout)
    except Exception as error:
        reason = error.detail if isinstance(error, DatabaseUnavailable) else type(error).__name__
        raise ServiceUnavailable(
            reason, headers={"Retry-After": str(built.settings.database_retry_after_seconds)}
        ) from None
    return CroJSONResponse({"status": "ready"})


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    counts = await services(request).housekeeping.counts()
    for state in DeliveryStatus:
        metrics.queue_depth.labels(state.value).set(counts.get(state.value, 0))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
