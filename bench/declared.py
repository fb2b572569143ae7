"""Declared or hand-run: what FastAPI's typed parameters and ``Depends`` cost ``GET /hooks/{id}``.

``python -m bench.declared [ROUNDS] [REQUESTS]`` builds the real app four times on one
SQLite database and one ``Services`` (as the tests do), with one tenant-owned hook:

- ``today``: the product as it is; the endpoint runs its no-body and caller checks itself
  and parses the path's id by hand.
- ``control``: today's endpoint in the copied route table the next two are built from; it
  should measure as ``today`` (it shows the method's own noise).
- ``typed``: the endpoint with ``hook_id: Annotated[int, Path(...)]`` and the four CRO
  headers as ``Annotated[str | None, Header()]`` parameters (what a generated
  ``/openapi.json`` needs to see); the checks still run by hand.
- ``declared``: ``typed``, with the no-body check a route dependency and the caller check
  a ``Depends`` that declares the headers, as an ``Annotated`` alias would.

Only the ``GET /hooks/{hook_id}`` route differs between the apps (same path, same place in
the route table, same middleware), and one error mapper turns FastAPI's validation errors
into CRO's. Before timing, every form's answers to a set of requests, good and bad, are
compared with today's and the differences printed. Then each round drives every form with
REQUESTS sequential requests straight through the ASGI interface (no socket, no HTTP
parsing: the app's own work, so the relative difference is at its largest), in an order
that rotates and reverses from round to round. Short rounds, many of them, so a change in
the shared machine's load falls on all forms alike. Printed: each form's microseconds a
request (wall and process CPU), and its per-round ratio to today's in the same round:
median with a bootstrap 95 % interval, quartiles and range.
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path as FilePath
from typing import Annotated, Any

import uvloop
from fastapi import APIRouter, Depends, FastAPI, Header, Path
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from bench.common import RATE_LIMIT, SECRET, TENANT, settings_for
from crohooks.api import hooks
from crohooks.api.models import webhook_model
from crohooks.api.request import (
    HEADERS_MODEL,
    TenantCaller,
    hook_caller,
    no_body,
    query_params,
    services,
)
from crohooks.api.wire import CroJSONResponse, error_response
from crohooks.app import create_app
from crohooks.auth.local import mint_local_token
from crohooks.errors import BadRequest
from crohooks.heap import freeze_startup_objects
from crohooks.logs import configure_logging
from crohooks.services import Services
from crohooks.store.migrate import migrate

ROUNDS = 200
REQUESTS = 100
MAX_ID = 10**18 - 1
HookId = Annotated[int, Path(ge=0, le=MAX_ID)]
Authorization = Annotated[str | None, Header()]
TenantHeader = Annotated[str | None, Header()]
VersionHeader = Annotated[str | None, Header()]
RequestIdHeader = Annotated[str | None, Header()]


async def typed_get_hook(
    request: Request,
    hook_id: HookId,
    authorization: Authorization = None,
    x_tenant_id: TenantHeader = None,
    x_api_version: VersionHeader = None,
    x_request_id: RequestIdHeader = None,
) -> CroJSONResponse:
    await no_body(request)
    caller = await hook_caller(request)
    query_params(request, frozenset())
    hook = await services(request).hooks.get(caller.tenant_id, hook_id)
    return CroJSONResponse(webhook_model(hook))


async def declared_caller(
    request: Request,
    authorization: Authorization = None,
    x_tenant_id: TenantHeader = None,
    x_api_version: VersionHeader = None,
    x_request_id: RequestIdHeader = None,
) -> TenantCaller:
    return await hook_caller(request)


HookCaller = Annotated[TenantCaller, Depends(declared_caller)]


async def declared_get_hook(request: Request, hook_id: HookId, caller: HookCaller) -> Response:
    query_params(request, frozenset())
    hook = await services(request).hooks.get(caller.tenant_id, hook_id)
    return CroJSONResponse(webhook_model(hook))


_LOCATIONS = {"path": "PathParameters", "header": HEADERS_MODEL, "query": "QueryParameters"}


async def cro_validation_error(request: Request, exc: Exception) -> Response:
    """The one error mapper: FastAPI's first validation error as CRO's 400 and field name."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    where, name = str(first["loc"][0]), str(first["loc"][-1])
    message = (
        f"{name} must be a positive integer"
        if where == "path"
        else f"{name}: {first.get('msg', 'invalid')}"
    )
    return error_response(BadRequest(message, field=f"{_LOCATIONS.get(where, where)}.{name}"))


def _app(svc: Services, endpoint: Callable[..., Awaitable[Response]] | None) -> FastAPI:
    """The product's app; with ``endpoint``, its ``GET /hooks/{hook_id}`` route replaced.

    ``create_app`` is given a copy of the hooks router, the one route swapped in place,
    so routing, the method table and the middleware are the product's own. The copy with
    today's endpoint is the control: it must measure as today.
    """
    router = APIRouter()
    for route in hooks.router.routes:
        assert isinstance(route, APIRoute)
        assert route.methods
        if route.path == "/hooks/{hook_id}" and "GET" in route.methods and endpoint:
            extra = [Depends(no_body)] if endpoint is declared_get_hook else []
            router.add_api_route(route.path, endpoint, methods=["GET"], dependencies=extra)
        else:
            router.add_api_route(route.path, route.endpoint, methods=sorted(route.methods))
    product = hooks.router
    hooks.router = router
    try:
        app = create_app(svc.settings, services=svc)
    finally:
        hooks.router = product
    app.add_exception_handler(RequestValidationError, cro_validation_error)
    return app


Exchange = tuple[int, dict[str, str], bytes]


async def _call(
    app: FastAPI, path: str, headers: Sequence[tuple[str, str]], body: bytes = b""
) -> Exchange:
    raw_path, _, query = path.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8003),
    }
    sent = False
    status = 0
    response_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for key, value in message.get("headers", []):
                response_headers[key.decode().lower()] = value.decode()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, response_headers, b"".join(chunks)


def _comparable(exchange: Exchange) -> tuple[int, str, Any]:
    """Status, API version and body; the request id (fresh per request) left out."""
    status, headers, body = exchange
    return status, headers.get("x-api-version", ""), json.loads(body)


def _cases(hook_id: int, token: str, other: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    host = ("host", "crohooks.bench")
    good = [host, ("authorization", f"Bearer {token}"), ("x-tenant-id", str(TENANT))]
    path = f"/hooks/{hook_id}"
    return [
        ("the benchmark's request", path, good),
        ("named API version", path, [*good, ("x-api-version", "2021/04/07")]),
        ("request id", path, [*good, ("x-request-id", "4b5d8a3e-2c7b-4f0e-9a51-0c8f2d7e6a13")]),
        ("bad request id", path, [*good, ("x-request-id", "nope")]),
        ("bad API version", path, [*good, ("x-api-version", "1999/01/01")]),
        ("no token", path, [host, ("x-tenant-id", str(TENANT))]),
        ("no tenant", path, good[:2]),
        ("non-integer tenant", path, [*good[:2], ("x-tenant-id", "x")]),
        ("tenant not granted", path, [*good[:2], ("x-tenant-id", "35")]),
        ("wrong role", path, [host, ("authorization", f"Bearer {other}"), good[2]]),
        ("Accept: text/html", path, [*good, ("accept", "text/html")]),
        ("unknown hook", "/hooks/999999", good),
        ("zero id", "/hooks/0", good),
        ("non-integer id", "/hooks/abc", good),
        ("negative id", "/hooks/-1", good),
        ("plus-signed id", f"/hooks/+{hook_id}", good),
        ("underscored id", "/hooks/1_0", good),
        ("19-digit id", "/hooks/1000000000000000000", good),
        ("non-integer id, no token", "/hooks/abc", [host]),
        ("unknown query parameter", f"{path}?x=1", good),
        ("unknown query, bad id", "/hooks/abc?x=1", good),
    ]


async def _compare(
    apps: dict[str, FastAPI], hook_id: int, token: str, other: str
) -> dict[str, list[str]]:
    """Each form's cases whose answer differs from today's (status, version, body)."""
    differences: dict[str, list[str]] = {name: [] for name in apps if name != "today"}
    for label, path, headers in _cases(hook_id, token, other):
        expected = _comparable(await _call(apps["today"], path, headers))
        body = b"{}" if label == "the benchmark's request" else b""
        if body:
            sent = [*headers, ("content-length", "2"), ("content-type", "application/json")]
            expected_body = _comparable(await _call(apps["today"], path, sent, body))
        for name in differences:
            found = _comparable(await _call(apps[name], path, headers))
            if found != expected:
                differences[name].append(f"{label}: today {expected}, {name} {found}")
            if body:
                found_body = _comparable(await _call(apps[name], path, sent, body))
                if found_body != expected_body:
                    differences[name].append(
                        f"with a body: today {expected_body}, {name} {found_body}"
                    )
    return differences


async def _block(app: FastAPI, path: str, headers: list[tuple[str, str]], count: int) -> None:
    for _ in range(count):
        status, _, _ = await _call(app, path, headers)
        if status != 200:
            raise RuntimeError(f"{path} answered {status} during the benchmark")


async def _timed(
    app: FastAPI, path: str, headers: list[tuple[str, str]], count: int
) -> tuple[float, float]:
    """Microseconds a request, wall clock and process CPU."""
    wall, cpu = time.perf_counter(), time.process_time()
    await _block(app, path, headers, count)
    return (
        (time.perf_counter() - wall) / count * 1e6,
        (time.process_time() - cpu) / count * 1e6,
    )


def _spread(values: Sequence[float]) -> str:
    quartiles = statistics.quantiles(values, n=4)
    low, high = _median_interval(values)
    return (
        f"median {statistics.median(values):+6.1%} (95 % CI {low:+.1%} to {high:+.1%})"
        f"  IQR {quartiles[0]:+.1%} to {quartiles[2]:+.1%}"
        f"  range {min(values):+.1%} to {max(values):+.1%}"
    )


def _median_interval(values: Sequence[float], draws: int = 2000) -> tuple[float, float]:
    """A bootstrap 95 % interval of the median (seeded: the same figures print the same)."""
    pick = random.Random(12)
    medians = sorted(statistics.median(pick.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


async def run(rounds: int, requests: int, workdir: FilePath) -> None:
    database_url = f"sqlite:///{workdir / 'declared.db'}"
    migrate(database_url)
    settings = settings_for(database_url, log_format="json", rate_limit_api_per_minute=RATE_LIMIT)
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(settings, stream=sink)
    svc = Services.build(settings)
    try:
        hook = await svc.hooks.create(
            TENANT,
            url="http://127.0.0.1:9/hook",
            events=("Job",),
            secret=SECRET,
            field="CreateWebhookModel.url",
        )
        token = mint_local_token(settings, subject="bench", roles=["Admin"], tenants=[TENANT])
        other = mint_local_token(settings, subject="drv", roles=["Driver"], tenants=[TENANT])
        apps = {
            "today": create_app(settings, services=svc),
            "control": _app(svc, None),
            "typed": _app(svc, typed_get_hook),
            "declared": _app(svc, declared_get_hook),
        }
        differences = await _compare(apps, hook.id, token, other)
        for name, found in differences.items():
            print(f"{name}: {'same answers as today' if not found else 'DIFFERENT answers:'}")
            for line in found:
                print(f"  {line}")
        path = f"/hooks/{hook.id}"
        headers = [
            ("host", "crohooks.bench"),
            ("authorization", f"Bearer {token}"),
            ("x-tenant-id", str(TENANT)),
        ]
        names = list(apps)
        for name in names:
            await _block(apps[name], path, headers, requests)
        freeze_startup_objects()
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for number in range(rounds):
            order = names[number % len(names) :] + names[: number % len(names)]
            if number % 2:
                order.reverse()
            for name in order:
                gc.collect()
                us_wall, us_cpu = await _timed(apps[name], path, headers, requests)
                wall[name].append(us_wall)
                cpu[name].append(us_cpu)
            if (number + 1) % 20 == 0:
                print(
                    f"rounds {number - 18:3}-{number + 1:3}: "
                    + "  ".join(f"{n} {statistics.median(wall[n][-20:]):6.1f} µs" for n in names),
                    flush=True,
                )
    finally:
        await svc.aclose()
        sink.close()
    print(
        f"\n{rounds} rounds of {requests} sequential requests per form, in-process ASGI;"
        f" load average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    for name in names:
        print(
            f"{name:9} wall median {statistics.median(wall[name]):6.1f} µs"
            f" (range {min(wall[name]):.1f} to {max(wall[name]):.1f})"
            f"  CPU median {statistics.median(cpu[name]):6.1f} µs"
            f"  = {1e6 / statistics.median(wall[name]):,.0f} req/s"
        )
    for name in names[1:]:
        for clock, figures in (("wall", wall), ("CPU", cpu)):
            ratios = [
                form / base - 1 for form, base in zip(figures[name], figures["today"], strict=True)
            ]
            print(f"{name:9} vs today, {clock:4}: {_spread(ratios)}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else ROUNDS
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else REQUESTS
    with tempfile.TemporaryDirectory(prefix="crohooks-declared-") as workdir:
        uvloop.run(run(rounds, requests, FilePath(workdir)))


if __name__ == "__main__":
    main()
