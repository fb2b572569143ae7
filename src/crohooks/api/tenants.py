"""``GET /tenants``: the granted tenants that have a record."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import tenant_model
from crohooks.api.request import authenticated, no_body, page_of, query_params, services
from crohooks.api.wire import CroJSONResponse

router = APIRouter()


@router.get("/tenants")
async def list_tenants(request: Request) -> CroJSONResponse:
    await no_body(request)
    principal = await authenticated(request)
    page = page_of(query_params(request, frozenset({"page_limit", "page_index"})))
    found, total = await services(request).tenants.list_granted(
        principal.tenants, limit=page.limit, offset=page.offset
    )
    return CroJSONResponse(page.envelope([tenant_model(t) for t in found], total))
