"""Portal pages with a busy hook: the delivery log and the hook page (chart, durations)
with 100,000 deliveries on the hook, beside the API's ``GET /hooks/{id}/deliveries``.

Server time: each request goes to the app in this process (httpx over ASGI, no socket),
one at a time, so the figure is the time the server takes to answer, plus a fraction of a
millisecond of client. The deliveries are written straight into the tables, spread over
the last 24 hours (all of them fall in the chart's window, the worst case), with one
attempt each for the finished ones.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from bench.common import TENANT, BenchError, percentile, settings_for
from crohooks.app import create_app
from crohooks.auth.local import mint_local_token
from crohooks.clock import utc_now
from crohooks.logs import configure_logging
from crohooks.services import Services
from crohooks.store.connector import Statement
from crohooks.store.migrate import migrate

CHUNK = 5000
WARMUP = 5

_DELIVERY = Statement.shared(
    "bench_portal_delivery",
    """
    INSERT INTO deliveries (id, tenant_id, hook_id, event_id, event, body, status, attempts,
                            deferrals, created_at, updated_at, completed_at,
                            last_http_status, last_message)
    VALUES (:id, :tenant_id, :hook_id, :event_id, 'Job', :body, :status, :attempts, 0,
            :created_at, :created_at, :completed_at, :http_status, :message)""",
)
_ATTEMPT = Statement.shared(
    "bench_portal_attempt",
    """
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status, message,
                          request_headers, response_headers, response_body)
    VALUES (:id, 1, :created_at, :duration_ms, :http_status, :message, '{}', '[]', '')""",
)


@dataclass(frozen=True)
class PortalFigures:
    log_ms: list[float]
    hook_ms: list[float]
    api_ms: list[float]
    deliveries: int
    insert_seconds: float

    @property
    def log_p95(self) -> float:
        return percentile(self.log_ms, 0.95)

    @property
    def hook_p95(self) -> float:
        return percentile(self.hook_ms, 0.95)

    @property
    def api_p95(self) -> float:
        return percentile(self.api_ms, 0.95)


def _rows(hook_id: int, count: int) -> list[dict[str, object]]:
    now = utc_now()
    rows: list[dict[str, object]] = []
    for n in range(count):
        created = now - timedelta(seconds=86_000 * (count - n) / count)
        kind = n % 50
        status = "pending" if kind == 0 else "failed" if kind < 5 else "succeeded"
        http_status = None if status == "pending" else 500 if status == "failed" else 200
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "tenant_id": TENANT,
                "hook_id": hook_id,
                "event_id": str(uuid.uuid4()),
                "body": json.dumps({"data": {"n": n}, "event": "Job"}),
                "status": status,
                "attempts": 0 if status == "pending" else 1,
                "created_at": created,
                "completed_at": None if status == "pending" else created,
                "http_status": http_status,
                "message": None if http_status is None else f"HTTP {http_status}",
                "duration_ms": 5.0 + (n % 97),
            }
        )
    return rows


async def _timed(
    http: httpx.AsyncClient, path: str, requests: int, **kwargs: object
) -> list[float]:
    took: list[float] = []
    for n in range(WARMUP + requests):
        started = time.perf_counter()
        response = await http.get(path, **kwargs)  # type: ignore[arg-type]
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise BenchError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
        if n >= WARMUP:
            took.append(elapsed)
    return took


async def measure(
    workdir: Path, database_url: str, *, deliveries: int, requests: int
) -> PortalFigures:
    migrate(database_url)
    settings = settings_for(database_url, log_level="WARNING", log_format="json")
    configure_logging(settings)
    services = Services.build(settings)
    try:
        hook = await services.hooks.create(
            TENANT, url="https://bench.example/hook", events=("Job",), secret=None, field="url"
        )
        started = time.perf_counter()
        rows = _rows(hook.id, deliveries)
        for first in range(0, len(rows), CHUNK):
            chunk = rows[first : first + CHUNK]
            async with services.db.write() as conn:
                await conn.execute_many(_DELIVERY, chunk)
                await conn.execute_many(_ATTEMPT, [r for r in chunk if r["status"] != "pending"])
        if services.db.dialect == "postgresql":
            # As autovacuum would soon after such a load (its insert threshold): the planner
            # needs the row counts, and the chart's counts read only the index where the
            # visibility map marks the pages all-visible. Pages written since the last
            # vacuum are read from the table as well (docs/benchmarks.md, row 8).
            await services.db.write_alone(
                Statement.shared("bench_vacuum_analyze", "VACUUM ANALYZE deliveries")
            )
            await services.db.write_alone(Statement.shared("bench_analyze", "ANALYZE"))
        insert_seconds = time.perf_counter() - started
        link = await services.portal.issue_link(
            TENANT, subject="bench", roles=("Admin",), ttl=timedelta(minutes=5)
        )
        token = mint_local_token(settings, subject="bench", roles=["Admin"], tenants=[TENANT])
        api_headers = {"Authorization": f"Bearer {token}", "x-tenant-id": str(TENANT)}
        app = create_app(settings, services=services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as http:
            entered = await http.post("/portal/enter", data={"code": link.code})
            if entered.status_code != 303:
                raise BenchError(f"the portal link was refused: {entered.status_code}")
            log_ms = await _timed(http, f"/portal/hooks/{hook.id}/deliveries", requests)
            hook_ms = await _timed(http, f"/portal/hooks/{hook.id}", requests)
            api_ms = await _timed(
                http, f"/hooks/{hook.id}/deliveries", requests, headers=api_headers
            )
    finally:
        await services.aclose()
    return PortalFigures(log_ms, hook_ms, api_ms, deliveries, insert_seconds)
