"""Operations endpoints: health, readiness and Prometheus metrics."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx

from crohooks.services import Services
from tests.conftest import api_client, make_settings
from tests.support.receiver import Receiver, unused_port

Auth = Callable[..., dict[str, str]]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        match = re.fullmatch(r"([a-zA-Z_:]+)(?:\{(.*)\})?", sample)
        if not match or match.group(1) != name:
            continue
        found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if found == wanted:
            return float(value)
    return 0.0


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}


async def test_not_ready_without_a_database() -> None:
    url = f"postgresql://postgres@127.0.0.1:{unused_port()}/nothing"
    services = Services.build(make_settings(url))
    try:
        async with api_client(services) as client:
            response = await client.get("/readyz")
    finally:
        await services.aclose()
    assert response.status_code == 503
    assert set(response.json()) == {"detail", "explanation", "field"}


async def test_metrics_count_requests_and_pings(client: httpx.AsyncClient, auth: Auth) -> None:
    before = (await client.get("/metrics")).text
    async with Receiver() as receiver:
        created = await client.post(
            "/hooks", json={"events": ["Job"], "url": receiver.url}, headers=auth()
        )
        hook_id = created.json()["id"]
        await client.get(f"/hooks/{hook_id}/ping", headers=auth())
        await client.get("/hooks/999999", headers=auth())
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("crohooks_http_requests_total", route="/hooks", method="POST", status="200") == 1
    assert (
        grew("crohooks_http_requests_total", route="/hooks/{hook_id}", method="GET", status="404")
        == 1
    )
    assert grew("crohooks_pings_total", result="2xx") == 1
    assert metric(after, "crohooks_queue_depth", state="succeeded") == 1
    assert "Bearer" not in after


async def test_an_unexpected_failure_is_a_cro_500_without_internals(
    tmp_path: Path, auth: Auth
) -> None:
    """A database without its schema makes every query fail in a way no handler expects."""
    services = Services.build(make_settings(f"sqlite:///{tmp_path / 'unmigrated.db'}"))
    request_id = "0ebe3eb6-2e6a-4a21-b8a2-4db9bf9a67d4"
    try:
        async with api_client(services) as client:
            response = await client.get("/hooks/1", headers=auth(**{"x-request-id": request_id}))
    finally:
        await services.aclose()
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"detail", "explanation", "field"}
    assert "hooks" not in response.text
    assert "Traceback" not in response.text
    assert response.headers["x-request-id"] == request_id
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
