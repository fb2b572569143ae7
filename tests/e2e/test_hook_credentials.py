"""A hook's receiver credentials with a real ``crohooks serve``: sent to the receiver, never
in an API answer, a log line of the server or the delivery log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import (
    Api,
    api_headers,
    free_port,
    mint_token,
    process_env,
    run_cli,
    started,
)
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.timeout(60)]

API_KEY = "e2e-api-key-5b0d7f3a9c2e41d8"
TOKEN = "e2e-bearer-token-a71c4e09f2b3"


async def test_credentials_never_reach_an_answer_or_the_server_log(tmp_path: Path) -> None:
    env = process_env(f"sqlite:///{tmp_path / 'creds.db'}", poll_interval=0.1, log_level="DEBUG")
    await run_cli("migrate", env=env, cwd=tmp_path)
    token = await mint_token(env, tmp_path)
    headers = api_headers(token)
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    answers: list[str] = []
    async with (
        Receiver() as receiver,
        started("serve", args, env=env, logdir=tmp_path) as server,
        httpx.AsyncClient(base_url=base, headers=headers, trust_env=False) as http,
    ):
        await Api(server, base).ready()
        created = await http.post("/hooks", json={"url": receiver.url, "events": ["Job"]})
        hook = created.json()["id"]
        settings = {
            "headers": {"X-Api-Key": API_KEY},
            "auth": {"type": "bearer", "token": TOKEN},
        }
        patched = await http.patch(f"/hooks/{hook}/settings", json=settings)
        assert patched.status_code == 200, patched.text
        published = await http.post("/events", json={"event": "Job", "data": {"n": 1}})
        assert published.status_code == 202
        await receiver.wait_for_requests(1, timeout=10)
        ping = await http.get(f"/hooks/{hook}/ping")
        assert ping.json()["http_status"] == 200
        for received in receiver.requests:
            assert received.header("X-Api-Key") == API_KEY
            assert received.header("Authorization") == f"Bearer {TOKEN}"

        listed = await http.get(f"/hooks/{hook}/deliveries")
        answers += [patched.text, ping.text, listed.text]
        answers.append((await http.get(f"/hooks/{hook}/settings")).text)
        for delivery in listed.json()["results"]:
            detail = await http.get(f"/hooks/{hook}/deliveries/{delivery['delivery_id']}")
            assert "[redacted]" in detail.text
            answers.append(detail.text)
        await server.stop()

    log = server.log.read_text()
    logged = {(r.get("event"), r.get("route")) for r in server.log_lines()}
    assert ("request", "/hooks/{hook_id}/settings") in logged  # the requests were logged
    assert ("delivery attempt", None) in logged
    for credential in (API_KEY, TOKEN):
        assert credential not in log
        for answer in answers:
            assert credential not in answer
