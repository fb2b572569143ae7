"""CRO's wire rules: JSON rendering, response headers, trailing slashes, OPTIONS and errors.

``WireMiddleware`` wraps the whole application, so every response — routed, error,
preflight or crash — leaves with the same headers and the same JSON rendering.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crohooks.errors import ApiError, InternalError
from crohooks.rendering import render_json

API_VERSIONS = ("2019/02/08", "2021/04/07", "2021/05/07", "2021/08/02", "2021/11/04", "2023/04/19")
DEFAULT_API_VERSION = API_VERSIONS[0]
_OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
ALLOW_HEADERS = "Authorization, Accept, X-TENANT-ID, Content-Type"
_METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")

log = structlog.get_logger("crohooks.api")


class CroJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return render_json(content)


def error_response(error: ApiError) -> CroJSONResponse:
    body = {"detail": error.detail, "explanation": error.explanation, "field": error.field}
    return CroJSONResponse(body, status_code=error.status, headers=error.headers)


def parse_request_id(value: str | None) -> str | None:
    """The client's request id if it is a UUID; ``None`` if absent. Invalid raises ValueError."""
    if value is None:
        return None
    return str(uuid.UUID(value.strip()))


class MethodTable:
    """Which methods each path answers, read off the routes (for ``Allow`` and 405s).

    Routes sharing a path template are merged, so one pass over the templates answers
    both questions for a request path.
    """

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        merged: dict[str, tuple[re.Pattern[str], set[str]]] = {}
        for route in routes:
            if isinstance(route, Route) and route.methods and route.include_in_schema:
                merged.setdefault(route.path, (route.path_regex, set()))[1].update(route.methods)
        self._entries = [
            (pattern, template, ",".join(m for m in _METHOD_ORDER if m in methods) or None)
            for template, (pattern, methods) in merged.items()
        ]

    def lookup(self, path: str) -> tuple[str | None, str | None]:
        """The route's path template (``/hooks/{hook_id}``, a metrics label of bounded size)
        and its ``Allow`` value; ``(None, None)`` for a path no route serves."""
        for pattern, template, allow in self._entries:
            if pattern.match(path):
                return template, allow
        return None, None


class WireMiddleware:
    """Pure ASGI middleware: path normalising, OPTIONS, response headers, last-resort 500s."""

    def __init__(self, app: ASGIApp, *, method_table: MethodTable | None = None) -> None:
        self.app = app
        self.method_table = method_table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if _is_portal_page(path):
            scope.setdefault("state", {})["route"] = "/portal"
            await self.app(scope, receive, send)
            return
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
            scope = dict(scope, path=path, raw_path=path.encode())
        state = scope.setdefault("state", {})
        headers = Headers(scope=scope)
        try:
            state["request_id"] = parse_request_id(headers.get("x-request-id")) or str(uuid.uuid4())
        except ValueError:
            state["request_id"] = str(uuid.uuid4())
            state["request_id_invalid"] = True
        requested_version = headers.get("x-api-version")
        if requested_version is not None and requested_version.strip() in API_VERSIONS:
            state.setdefault("api_version", requested_version.strip())
        template, allow = self.method_table.lookup(path) if self.method_table else (None, None)
        state["route"] = template or (path if path in _OPS_PATHS else "unmatched")

        if scope["method"] == "OPTIONS":
            response = CroJSONResponse({})
            self._decorate(response.headers, state, allow)
            await response(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self._decorate(MutableHeaders(scope=message), state, allow)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error", request_id=state["request_id"], path=path)
            if started:
                raise
            response = error_response(InternalError())
            self._decorate(response.headers, state, allow)
            await response(scope, receive, send)

    @staticmethod
    def _decorate(headers: MutableHeaders, state: dict[str, Any], allow: str | None) -> None:
        if state.get("route") != "/metrics":
            headers["Content-Type"] = "application/json"
        headers["X-REQUEST-ID"] = state["request_id"]
        headers["X-API-VERSION"] = state.get("api_version", DEFAULT_API_VERSION)
        headers["Access-Control-Allow-Origin"] = "*"
        headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        if allow is not None:
            headers["Access-Control-Allow-Methods"] = allow
            headers["Allow"] = allow


def _is_portal_page(path: str) -> bool:
    """The portal's pages are HTML with headers of their own (``crohooks.portal.web``);
    only ``POST /portal/links`` is an API endpoint under ``/portal``."""
    return (path == "/portal" or path.startswith("/portal/")) and path.rstrip("/") != (
        "/portal/links"
    )


def request_state(request: Request) -> dict[str, Any]:
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state
