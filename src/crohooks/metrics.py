"""Prometheus metrics of one process (API requests, deliveries, pings, the queue)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

http_requests = Counter(
    "crohooks_http_requests_total",
    "API requests by route, method and status.",
    ["route", "method", "status"],
)
http_request_seconds = Histogram(
    "crohooks_http_request_seconds",
    "API request latency by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
deliveries = Counter(
    "crohooks_deliveries_total",
    "Delivery attempts by what they led to: succeeded, retrying, failed (exhausted or 410).",
    ["outcome"],
)
attempt_seconds = Histogram(
    "crohooks_delivery_attempt_seconds",
    "Duration of delivery attempts (event deliveries).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
)
lease_expiries = Counter(
    "crohooks_lease_expiries_total",
    "Deliveries claimed again after the lease of a worker that did not finish them ran out.",
)
pings = Counter(
    "crohooks_pings_total", "Pings by result: 2xx, 3xx, 4xx, 5xx or no_response.", ["result"]
)
queue_depth = Gauge(
    "crohooks_queue_depth",
    "Deliveries by state, read from the database at scrape time.",
    ["state"],
)


def status_class(http_status: int) -> str:
    return "no_response" if http_status < 100 else f"{http_status // 100}xx"
