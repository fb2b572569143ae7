"""Builds the ASGI application: routes, middleware and error handlers; nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount

from crohooks import __version__
from crohooks.api import (
    deliveries,
    events,
    hook_settings,
    hooks,
    ops,
    portal_links,
    tenants,
)
from crohooks.api.openapi import install_openapi
from crohooks.api.telemetry import RequestTelemetry
from crohooks.api.wire import MethodTable, WireMiddleware, error_response
from crohooks.delivery.runner import worker_thread
from crohooks.errors import (
    ApiError,
    BadRequest,
    DatabaseUnavailable,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from crohooks.heap import freeze_startup_objects
from crohooks.portal.web import create_portal
from crohooks.services import Services
from crohooks.settings import Settings


def create_app(
    settings: Settings, *, services: Services | None = None, run_worker: bool = False
) -> FastAPI:
    """The API, with a delivery worker in a thread of its own if asked.

    ``services`` may be given by a caller that owns their lifetime (tests).
    """
    owned = services is None
    built = services if services is not None else Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker: AbstractAsyncContextManager[None] = (
            worker_thread(settings) if run_worker else nullcontext()
        )
        try:
            async with worker:
                if owned:
                    freeze_startup_objects()
                yield
        finally:
            if owned:
                await built.aclose()

    app = FastAPI(
        title="crohooks",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = built
    routers = (
        hooks.router,
        tenants.router,
        events.router,
        deliveries.router,
        hook_settings.router,
        portal_links.router,
    )
    for router in routers:
        app.include_router(router)
    app.include_router(ops.router)
    app.add_route("/portal", _to_portal, include_in_schema=False)
    app.router.routes.append(Mount("/portal", create_portal(built)))
    install_openapi(app)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable(settings))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(
        WireMiddleware, method_table=MethodTable(r for router in routers for r in router.routes)
    )
    app.add_middleware(RequestTelemetry)
    return app


async def _to_portal(request: Request) -> Response:
    return RedirectResponse("/portal/", status_code=307)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


def _database_unavailable(
    settings: Settings,
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A database outage is the client's cue to come back shortly, not a server fault: 503
    with ``Retry-After``; the store logs the outage once, not once per request."""
    retry_after = str(settings.database_retry_after_seconds)

    async def handler(request: Request, exc: Exception) -> Response:
        return error_response(
            ServiceUnavailable(
                "the database is unavailable; retry shortly", headers={"Retry-After": retry_after}
            )
        )

    return handler


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not allowed on this path"))
    return error_response(NotFound(f"no resource at {request.url.path}"))


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_response(BadRequest("the request does not match the endpoint's parameters"))
