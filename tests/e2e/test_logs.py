"""A real ``crohooks serve`` (API and worker) logs JSON lines with ids and never a secret."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import Api, free_port, mint_token, process_env, run_cli, started
from tests.support.receiver import Receiver

SECRET = base64.b64encode(b"a secret nobody may log!").decode()

pytestmark = pytest.mark.slow


async def test_logs_carry_ids_and_no_secrets(tmp_path: Path) -> None:
    env = process_env(f"sqlite:///{tmp_path / 'crohooks.db'}", retry_schedule="0.2,0.2")
    await run_cli("migrate", env=env, cwd=tmp_path)
    token = await mint_token(env, tmp_path)
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": "34"}
    request_id = "e854d9af-6d40-4188-9d73-fc44111a2335"
    async with (
        Receiver() as receiver,
        started("serve", args, env=env, logdir=tmp_path) as process,
        httpx.AsyncClient(trust_env=False, timeout=10) as http,
    ):
        api = Api(process, f"http://127.0.0.1:{port}")
        await api.ready()
        receiver.enqueue(500)
        created = await http.post(
            f"{api.base_url}/hooks",
            json={"events": ["Job"], "url": receiver.url, "secret": SECRET},
            headers={**headers, "x-request-id": request_id},
        )
        hook_id = created.json()["id"]
        published = await http.post(
            f"{api.base_url}/events", json={"event": "Job", "data": {"n": 1}}, headers=headers
        )
        assert published.status_code == 202
        await receiver.wait_for_requests(2, timeout=10)
        await http.get(f"{api.base_url}/hooks/{hook_id}/ping", headers=headers)
        await http.get(f"{api.base_url}/hooks", headers={"Authorization": f"Bearer {token}x"})
        await http.get(f"{api.base_url}/hooks?secret={SECRET}", headers=headers)
        delivery_id = receiver.requests[0].header("X-Cro-Delivery")
        await process.wait_for_log("delivery attempt")
        await api.stop()

    text = process.log.read_text()
    for needle in (SECRET, token, base64.b64decode(SECRET).decode()):
        assert needle not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    requests = [r for r in records if r.get("event") == "request"]
    create = next(r for r in requests if r["request_id"] == request_id)
    assert create["route"] == "/hooks"
    assert create["method"] == "POST"
    assert create["status"] == 200
    assert create["tenant_id"] == 34
    ping = next(r for r in requests if r["route"] == "/hooks/{hook_id}/ping")
    assert ping["hook_id"] == hook_id
    assert {r["status"] for r in requests} >= {200, 202, 400, 401}
    attempts = [r for r in records if r.get("event") == "delivery attempt"]
    assert {r["delivery_id"] for r in attempts} == {delivery_id}
    assert [r["http_status"] for r in attempts] == [500, 200]
    assert all(r["hook_id"] == hook_id and r["tenant_id"] == 34 for r in attempts)
    assert all("level" in r and "timestamp" in r for r in records)
