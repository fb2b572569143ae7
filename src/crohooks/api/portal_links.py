"""``POST /portal/links``: a one-time link into the tenant portal (docs/portal.md)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from starlette.requests import Request

from crohooks.api.models import PortalLinkModel
from crohooks.api.request import (
    has_body,
    json_object,
    portal_linker,
    query_params,
    services,
    validate,
)
from crohooks.api.wire import CroJSONResponse
from crohooks.auth.principal import Role
from crohooks.clock import to_cro
from crohooks.portal.links import portal_url

router = APIRouter()


@router.post("/portal/links")
async def create_portal_link(request: Request) -> CroJSONResponse:
    caller = await portal_linker(request)
    svc = services(request)
    query_params(request, frozenset())
    model = PortalLinkModel()
    if has_body(request):
        body = await json_object(
            request, limit=svc.settings.max_hook_body_bytes, model_name="PortalLinkModel"
        )
        model = validate(PortalLinkModel, body)
    # An Admin may hand out an Admin or a Dispatcher session; the platform backend
    # (System) opens the portal for its users, whichever of the two they are.
    role = Role(model.role) if model.role is not None else Role.ADMIN
    ttl = model.ttl_seconds or svc.settings.portal_link_ttl_seconds
    link = await svc.portal.issue_link(
        caller.tenant_id,
        subject=caller.principal.subject,
        roles=(role.value,),
        ttl=timedelta(seconds=ttl),
    )
    base = svc.settings.portal_base_url or str(request.base_url)
    return CroJSONResponse({"expires_at": to_cro(link.expires_at), "url": portal_url(base, link)})
