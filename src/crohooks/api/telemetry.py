"""One structured log line and the Prometheus counters of every API request."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crohooks import metrics, tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger("crohooks.api")
_HOOK_ID = re.compile(r"^/hooks/([0-9]{1,18})(?:/|$)")


class RequestTelemetry:
    """Outermost middleware: it sees every response, preflights and crashes included.

    The request id, tenant and matched route come from the scope ``state`` that the inner
    layers fill in; the token, bodies and query strings are never logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if tracing.tracer() is None:
            await self._observe(scope, receive, send, None)
            return
        headers = dict(scope["headers"])
        parent = headers.get(b"traceparent", b"").decode("latin-1") or None
        with tracing.child_of(parent, scope["method"], attributes={}, kind="SERVER") as span:
            await self._observe(scope, receive, send, span)

    async def _observe(self, scope: Scope, receive: Receive, send: Send, span: Span | None) -> None:
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            elapsed = time.perf_counter() - started
            route = state.get("route", "unmatched")
            method = scope["method"]
            metrics.http_requests.labels(route, method, str(status)).inc()
            metrics.http_request_seconds.labels(route).observe(elapsed)
            hook = _HOOK_ID.match(scope["path"])
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attributes(
                    {
                        "http.request.method": method,
                        "http.route": route,
                        "http.response.status_code": status,
                        "crohooks.request_id": state.get("request_id") or "",
                        "crohooks.tenant_id": state.get("tenant_id") or 0,
                    }
                )
            log.info(
                "request",
                request_id=state.get("request_id"),
                method=method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                tenant_id=state.get("tenant_id"),
                hook_id=int(hook.group(1)) if hook else None,
            )
