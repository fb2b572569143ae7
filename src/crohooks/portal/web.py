"""The portal's pages, mounted at ``/portal`` by ``app.py``.

Every page reads and writes through the API's own services and its role checks
(``authorize``), for the one tenant its session is bound to; the services' errors
(``ApiError``) are shown with their status and their text, as the API would answer them.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crohooks.api.models import CreateWebhookModel, PublishEventModel, UpdateWebhookModel
from crohooks.api.request import (
    authorize,
    enforce_rate_limit,
    parse_json_object,
    read_limited,
    validate,
)
from crohooks.auth.principal import HOOK_ROLES, PUBLISH_ROLES
from crohooks.clock import utc_now
from crohooks.delivery.insights import HOURS_SHOWN
from crohooks.errors import ApiError, BadRequest, Forbidden, MethodNotAllowed, NotFound
from crohooks.hooks.rules import HOOK_EVENTS, PUBLISHABLE_EVENTS, generate_secret
from crohooks.hooks.service import HookChanges
from crohooks.model import DeliveryStatus, Hook, NewEvent
from crohooks.portal.access import PortalSession
from crohooks.portal.chart import hourly_chart
from crohooks.services import Services
from crohooks.store.insights import COUNT_BOUND, LogFilter

COOKIE = "crohooks_portal"
PREFIX = "/portal"
PAGE_SIZE = 50
_MAX_FORM_BYTES = 64 * 1024
_BODY_SHOWN = 16 * 1024
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = Environment(
    loader=PackageLoader("crohooks.portal", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    auto_reload=False,
)


def _when(moment: datetime | None) -> str:
    return "—" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


_templates.filters["when"] = _when


class SignedOut(Exception):
    """No live portal session on this request."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token, or from another site."""


@dataclass(frozen=True, slots=True)
class Form:
    fields: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key == name), None)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]


class _SecurityHeaders:
    """Every portal response, error pages and static files included, carries them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def _services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def render(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    session: PortalSession | None = None,
    **context: Any,
) -> HTMLResponse:
    html = _templates.get_template(template).render(
        prefix=PREFIX, session=session, request=request, **context
    )
    return HTMLResponse(html, status_code=status_code)


async def _session(request: Request) -> PortalSession:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignedOut
    found = await _services(request).portal.session(token)
    if found is None:
        raise SignedOut
    return found


def _same_origin(request: Request) -> bool:
    """Browsers say where a request comes from; one from another site is refused outright
    (a second line behind the CSRF token and the SameSite cookie)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _form(request: Request) -> Form:
    raw = await read_limited(request, _MAX_FORM_BYTES)
    if not raw:
        return Form([])
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest("the portal's forms are sent as application/x-www-form-urlencoded")
    try:
        text = raw.decode("utf-8")
        return Form(
            parse_qsl(text, keep_blank_values=True, max_num_fields=200, strict_parsing=False)
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None


async def _changing(request: Request) -> tuple[PortalSession, Form]:
    """The session and form of a state-changing request, once its CSRF token matches."""
    session = await _session(request)
    if not _same_origin(request):
        raise CsrfRefused
    form = await _form(request)
    sent = form.get("csrf_token") or ""
    if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise CsrfRefused
    return session, form


def _hook_caller(session: PortalSession) -> int:
    authorize(session.principal, session.tenant_id, HOOK_ROLES)
    return session.tenant_id


def _hook_id(request: Request) -> int:
    raw: str = request.path_params["hook_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise NotFound(f"hook {raw} does not exist", field="PathParameters.hook_id")
    return int(raw)


def _delivery_id(request: Request) -> str:
    try:
        return str(uuid.UUID(request.path_params["delivery_id"]))
    except ValueError:
        raise BadRequest("delivery_id must be a UUID", field="PathParameters.delivery_id") from None


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}{path}", status_code=303)


# --- signing in and out ---------------------------------------------------------------


async def root(request: Request) -> Response:
    try:
        await _session(request)
    except SignedOut:
        return render(request, "signed_out.html", status_code=401)
    return _see_other("/hooks")


async def enter_page(request: Request) -> Response:
    """The link's landing page. It redeems nothing itself (a link previewer that fetches
    the URL burns no code); its form posts the code from this very site, so the session
    cookie (SameSite=Strict) is set and then sent on a same-site navigation."""
    code = request.query_params.get("code", "")
    return render(request, "enter.html", code=code)


async def enter(request: Request) -> Response:
    if not _same_origin(request):
        raise CsrfRefused
    form = await _form(request)
    created = await _services(request).portal.redeem(form.get("code") or "")
    if created is None:
        return render(request, "link_refused.html", status_code=403)
    response = _see_other("/hooks")
    lifetime = int((created.session.expires_at - utc_now()).total_seconds())
    response.set_cookie(
        COOKIE,
        created.token,
        max_age=max(lifetime, 1),
        path=PREFIX,
        secure=_served_over_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


def _served_over_https(request: Request) -> bool:
    """The request's own scheme, or the configured address browsers use (a proxy that
    ends TLS in front of crohooks may forward plain HTTP)."""
    base = _services(request).settings.portal_base_url or ""
    return request.url.scheme == "https" or base.lower().startswith("https://")


async def sign_out(request: Request) -> Response:
    await _changing(request)
    await _services(request).portal.sign_out(request.cookies.get(COOKIE, ""))
    response = render(request, "signed_out.html", signed_out=True)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


# --- hooks ----------------------------------------------------------------------------


async def _hooks_page(
    request: Request,
    session: PortalSession,
    *,
    status_code: int = 200,
    error: ApiError | None = None,
    form: Form | None = None,
) -> HTMLResponse:
    tenant_id = _hook_caller(session)
    svc = _services(request)
    hooks, total = await svc.hooks.list_page(tenant_id, deleted=None, limit=1000, offset=0)
    rates = await svc.insights.success_rates(tenant_id, now=utc_now())
    return render(
        request,
        "hooks.html",
        status_code=status_code,
        session=session,
        hooks=hooks,
        total=total,
        rates=rates,
        events=HOOK_EVENTS,
        error=error,
        form=form or Form([]),
    )


async def hooks_list(request: Request) -> Response:
    return await _hooks_page(request, await _session(request))


def _hook_fields(form: Form) -> dict[str, Any]:
    data: dict[str, Any] = {"url": form.get("url") or "", "events": form.all("events")}
    secret = (form.get("secret") or "").strip()
    if secret:
        data["secret"] = secret
    return data


async def hook_create(request: Request) -> Response:
    session, form = await _changing(request)
    tenant_id = _hook_caller(session)
    try:
        model = validate(CreateWebhookModel, _hook_fields(form))
        hook = await _services(request).hooks.create(
            tenant_id,
            url=model.url,
            events=tuple(model.events),
            secret=model.secret,
            field="CreateWebhookModel.url",
        )
    except ApiError as error:
        return await _hooks_page(request, session, status_code=error.status, error=error, form=form)
    return _see_other(f"/hooks/{hook.id}")


async def _hook_page(
    request: Request,
    session: PortalSession,
    hook: Hook,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    svc = _services(request)
    health = await svc.insights.health(session.tenant_id, hook.id, now=utc_now())
    context.setdefault("error", None)
    context.setdefault("form", None)
    return render(
        request,
        "hook.html",
        status_code=status_code,
        session=session,
        hook=hook,
        health=health,
        chart=hourly_chart(health.hours),
        hours_shown=HOURS_SHOWN,
        events=HOOK_EVENTS,
        publishable=PUBLISHABLE_EVENTS,
        can_publish=session.principal.has_any_role(PUBLISH_ROLES),
        reveal=context.pop("reveal", False),
        ping=context.pop("ping", None),
        published=context.pop("published", None),
        **context,
    )


async def hook_detail(request: Request) -> Response:
    session = await _session(request)
    tenant_id = _hook_caller(session)
    hook = await _services(request).hooks.get(tenant_id, _hook_id(request))
    return await _hook_page(request, session, hook)


async def hook_edit(request: Request) -> Response:
    session, form = await _changing(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    hook = await svc.hooks.get(tenant_id, identifier)
    try:
        data = _hook_fields(form)
        data.pop("secret", None)
        model = validate(UpdateWebhookModel, data)
        changes = HookChanges(url=model.url, events=tuple(model.events or ()), secret=None)
        await svc.hooks.update(tenant_id, identifier, changes, field="UpdateWebhookModel.url")
    except ApiError as error:
        return await _hook_page(
            request, session, hook, status_code=error.status, error=error, form=form
        )
    return _see_other(f"/hooks/{identifier}")


async def hook_secret(request: Request) -> Response:
    session, form = await _changing(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    hook = await svc.hooks.get(tenant_id, identifier)
    if form.get("action") == "rotate":
        changes = HookChanges(url=hook.url, events=None, secret=generate_secret())
        hook = await svc.hooks.update(
            tenant_id, identifier, changes, field="UpdateWebhookModel.url"
        )
    return await _hook_page(request, session, hook, reveal=True)


async def hook_delete(request: Request) -> Response:
    session, _ = await _changing(request)
    tenant_id = _hook_caller(session)
    await _services(request).hooks.delete(tenant_id, _hook_id(request))
    return _see_other("/hooks")


async def hook_ping(request: Request) -> Response:
    session, _ = await _changing(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    await enforce_rate_limit(
        svc, f"ping:{tenant_id}:{identifier}", svc.settings.rate_limit_ping_per_minute
    )
    hook = await svc.hooks.get_active(tenant_id, identifier)
    result = await svc.ping.send(tenant_id, hook)
    return await _hook_page(request, session, hook, ping=result)


async def hook_publish(request: Request) -> Response:
    """A test event for the tenant's hooks, as ``POST /events`` would publish it: Admins
    only, as there (a Dispatcher may not publish)."""
    session, form = await _changing(request)
    authorize(session.principal, session.tenant_id, PUBLISH_ROLES)
    svc = _services(request)
    hook = await svc.hooks.get(session.tenant_id, _hook_id(request))
    data = parse_json_object((form.get("data") or "{}").encode(), model_name="PublishEventModel")
    model = validate(PublishEventModel, {"event": form.get("event") or "", "data": data})
    event = NewEvent(event=model.event, data=model.data)
    [accepted] = await svc.intake.publish(session.tenant_id, [event])
    return await _hook_page(request, session, hook, published=accepted)


# --- the delivery log -----------------------------------------------------------------


def _parse_moment(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"{name} must be a time such as 2026-12-02T17:30", field=f"QueryParameters.{name}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _log_filter(request: Request) -> LogFilter:
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise BadRequest("status is not a delivery status", field="QueryParameters.status")
    event = params.get("event") or None
    if event is not None and event not in HOOK_EVENTS:
        raise BadRequest("event is not a hook event", field="QueryParameters.event")
    search = (params.get("q") or "").strip() or None
    if search is not None:
        try:
            search = str(uuid.UUID(search))
        except ValueError:
            raise BadRequest(
                "search by a delivery id or an event id (a UUID)", field="QueryParameters.q"
            ) from None
    return LogFilter(
        status=status,
        event=event,
        since=_parse_moment(params.get("since"), "since"),
        until=_parse_moment(params.get("until"), "until"),
        search=search,
    )


def _page_index(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and 1 <= len(raw) <= 5) or int(raw) < 1:
        raise BadRequest("page must be a positive integer", field="QueryParameters.page")
    return int(raw)


async def deliveries(request: Request) -> Response:
    session = await _session(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    hook = await svc.hooks.get(tenant_id, identifier)
    found = _log_filter(request)
    page = _page_index(request)
    rows, total = await svc.insights.search(
        tenant_id, identifier, found, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    kept = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return render(
        request,
        "deliveries.html",
        session=session,
        hook=hook,
        rows=rows,
        total=total,
        more=total > max(COUNT_BOUND, page * PAGE_SIZE),
        page=page,
        has_older=total > page * PAGE_SIZE,
        query=lambda number: urlencode({**kept, "page": number}),
        selected=request.query_params,
        statuses=[s.value for s in DeliveryStatus],
        events=HOOK_EVENTS,
    )


async def delivery_detail(request: Request) -> Response:
    session = await _session(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    hook = await svc.hooks.get(tenant_id, identifier)
    delivery, attempts = await svc.delivery_log.get(tenant_id, identifier, _delivery_id(request))
    return render(
        request,
        "delivery.html",
        session=session,
        hook=hook,
        delivery=delivery,
        attempts=attempts,
        shown=_BODY_SHOWN,
    )


async def redeliver(request: Request) -> Response:
    session, _ = await _changing(request)
    tenant_id = _hook_caller(session)
    identifier = _hook_id(request)
    delivery = await _services(request).delivery_log.redeliver(
        tenant_id, identifier, _delivery_id(request)
    )
    return _see_other(f"/hooks/{identifier}/deliveries/{delivery.id}")


def _window(values: Any) -> tuple[datetime, datetime]:
    since = _parse_moment(values.get("since"), "since")
    if since is None:
        raise BadRequest("since is required", field="RecoverModel.since")
    until = _parse_moment(values.get("until"), "until") or utc_now()
    if until <= since:
        raise BadRequest("until must be later than since", field="RecoverModel.until")
    return since, until


async def recover_page(request: Request) -> Response:
    """A recovery is previewed first: how many failed deliveries the window holds."""
    session = await _session(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    hook = await svc.hooks.get(tenant_id, identifier)
    count = None
    since = until = None
    if request.query_params.get("since"):
        since, until = _window(request.query_params)
        count = await svc.insights.recoverable(tenant_id, identifier, since=since, until=until)
    return render(
        request,
        "recover.html",
        session=session,
        hook=hook,
        count=count,
        since=since,
        until=until,
        recovered=None,
    )


async def recover(request: Request) -> Response:
    session, form = await _changing(request)
    tenant_id = _hook_caller(session)
    svc = _services(request)
    identifier = _hook_id(request)
    since, until = _window(form)
    recovered = await svc.delivery_log.recover(tenant_id, identifier, since=since, until=until)
    hook = await svc.hooks.get(tenant_id, identifier)
    return render(
        request,
        "recover.html",
        session=session,
        hook=hook,
        count=None,
        since=since,
        until=until,
        recovered=recovered,
    )


# --- errors ---------------------------------------------------------------------------


async def _signed_out(request: Request, exc: Exception) -> Response:
    return render(request, "signed_out.html", status_code=401)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    error = Forbidden("the form is stale or came from another site; reload the page and retry")
    return render(request, "error.html", status_code=403, error=error)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    response = render(request, "error.html", status_code=exc.status, error=exc)
    response.headers.update(exc.headers)
    return response


async def _no_route(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: ApiError = (
        MethodNotAllowed(f"{request.method} is not allowed on this path")
        if exc.status_code == 405
        else NotFound(f"no page at {request.url.path}")
    )
    return await _api_error(request, error)


def create_portal(services: Services) -> ASGIApp:
    static = StaticFiles(directory=str(files("crohooks.portal") / "static"))
    hook = "/hooks/{hook_id}"
    routes = [
        Route("/", root),
        Route("/enter", enter_page, methods=["GET"]),
        Route("/enter", enter, methods=["POST"]),
        Route("/signout", sign_out, methods=["POST"]),
        Route("/hooks", hooks_list, methods=["GET"]),
        Route("/hooks", hook_create, methods=["POST"]),
        Route(hook, hook_detail, methods=["GET"]),
        Route(f"{hook}/edit", hook_edit, methods=["POST"]),
        Route(f"{hook}/secret", hook_secret, methods=["POST"]),
        Route(f"{hook}/delete", hook_delete, methods=["POST"]),
        Route(f"{hook}/ping", hook_ping, methods=["POST"]),
        Route(f"{hook}/events", hook_publish, methods=["POST"]),
        Route(f"{hook}/deliveries", deliveries, methods=["GET"]),
        Route(f"{hook}/deliveries/{{delivery_id}}", delivery_detail, methods=["GET"]),
        Route(f"{hook}/deliveries/{{delivery_id}}/redeliver", redeliver, methods=["POST"]),
        Route(f"{hook}/recover", recover_page, methods=["GET"]),
        Route(f"{hook}/recover", recover, methods=["POST"]),
        Mount("/static", static),
    ]
    portal = Starlette(
        routes=routes,
        exception_handlers={
            SignedOut: _signed_out,
            CsrfRefused: _csrf_refused,
            ApiError: _api_error,
            HTTPException: _no_route,
        },
    )
    portal.state.services = services
    return _SecurityHeaders(portal)
