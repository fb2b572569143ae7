"""The operator's commands as real ``crohooks`` processes, on SQLite and PostgreSQL.

The delivery log is real: events published through the intake, two deliveries claimed
from the queue and their attempts recorded (one succeeded, one failed), one left pending.
Every ``--json`` is compared with what the API answers for the same object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from crohooks.clock import to_cro, utc_now
from crohooks.model import (
    AttemptRecord,
    ClaimPolicy,
    DeliveryStatus,
    NewEvent,
    Outcome,
    Tenant,
)
from crohooks.services import Services
from tests.conftest import TokenFactory
from tests.e2e.processes import CLI, process_env, run_to_end

Auth = Callable[..., dict[str, str]]
TENANT = 34
OTHER_TENANT = 35
MISSING_DELIVERY = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Log:
    """What the database holds: tenant 34's hooks and the deliveries of the first."""

    hook: int
    deleted_hook: int
    foreign_hook: int
    succeeded: str
    failed: str
    pending: str


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, self.stderr
        return json.loads(self.stdout)


@pytest.fixture
def operator(database_url: str, tmp_path: Path) -> Callable[..., Any]:
    """``await operator("hooks", "list", ...)`` runs ``crohooks`` on the test's database."""
    env = process_env(database_url)

    async def run(*args: str) -> Ran:
        code, stdout, stderr = await run_to_end([*CLI, *args], timeout=30, env=env, cwd=tmp_path)
        return Ran(code, stdout.decode(), stderr.decode())

    return run


@pytest.fixture
async def log(services: Services, client: httpx.AsyncClient, auth: Auth) -> Log:
    now = utc_now()
    for tenant_id, name, code in ((TENANT, "Demo Courier", "DEMO"), (OTHER_TENANT, "Other", "OTH")):
        await services.tenants.add(Tenant(id=tenant_id, name=name, code=code, created_on=now))

    async def create_hook(path: str, tenant: int = TENANT) -> int:
        url = f"https://receiver.example/{path}"
        created = await client.post(
            "/hooks", headers=auth(tenant=tenant), json={"url": url, "events": ["Job"]}
        )
        assert created.status_code == 200, created.text
        hook_id: int = created.json()["id"]
        return hook_id

    hook = await create_hook("orders")
    deleted_hook = await create_hook("gone")
    assert (await client.delete(f"/hooks/{deleted_hook}", headers=auth())).status_code == 200
    foreign_hook = await create_hook("theirs", tenant=OTHER_TENANT)

    await services.intake.publish(TENANT, [NewEvent("Job", {"n": n}) for n in range(3)])
    claimed = await services.queue.claim(
        ClaimPolicy(limit=2, per_hook_cap=2, lease=timedelta(minutes=1), worker_id="e2e"),
        now=utc_now(),
    )
    assert len(claimed) == 2
    started = utc_now()
    outcomes = [
        Outcome(
            delivery,
            AttemptRecord(
                started_at=started,
                duration_ms=12.5,
                http_status=http_status,
                message=message,
                request_headers={"X-Cro-Delivery": delivery.id},
                response_body=message,
            ),
            status,
            None,
        )
        for delivery, (http_status, message, status) in zip(
            claimed,
            [(200, "OK", DeliveryStatus.SUCCEEDED), (410, "Gone", DeliveryStatus.FAILED)],
            strict=True,
        )
    ]
    await services.queue.record(outcomes, now=utc_now())
    listed = (await client.get(f"/hooks/{hook}/deliveries", headers=auth())).json()["results"]
    (pending,) = [d["delivery_id"] for d in listed if d["status"] == "pending"]
    return Log(hook, deleted_hook, foreign_hook, claimed[0].id, claimed[1].id, pending)


def refused(ran: Ran, message: str) -> None:
    """A one-line refusal on stderr, nothing on stdout, no traceback."""
    assert ran.code == 1, ran
    assert ran.stdout == ""
    assert ran.stderr == f"crohooks: {message}\n"


async def test_hooks_list_and_show(
    operator: Callable[..., Any], log: Log, client: httpx.AsyncClient, auth: Auth
) -> None:
    tenant = ("--tenant", str(TENANT))
    active, deleted, shown, table, foreign, bad = await asyncio.gather(
        operator("hooks", "list", *tenant, "--json"),
        operator("hooks", "list", *tenant, "--deleted", "--json"),
        operator("hooks", "show", *tenant, str(log.hook), "--json"),
        operator("hooks", "list", *tenant),
        operator("hooks", "show", *tenant, str(log.foreign_hook)),
        operator("hooks", "show", *tenant, "seven"),
    )

    api = await client.get("/hooks?deleted=false", headers=auth())
    assert active.json() == api.json()["results"]
    assert [hook["id"] for hook in active.json()] == [log.hook]
    api = await client.get("/hooks?deleted=true", headers=auth())
    assert deleted.json() == api.json()["results"]
    assert [hook["id"] for hook in deleted.json()] == [log.deleted_hook]
    assert shown.json() == (await client.get(f"/hooks/{log.hook}", headers=auth())).json()

    assert table.code == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "ID",
        "URL",
        "EVENTS",
        "LAST",
        "SUCCESS",
        "LAST",
        "FAILURE",
        "DELETED",
    ]
    assert row.split()[:3] == [str(log.hook), "https://receiver.example/orders", "Job"]

    refused(foreign, f"hook {log.foreign_hook} does not exist")
    assert bad.code == 2
    assert "usage: crohooks hooks show" in bad.stderr
    assert "'seven' is not a positive integer" in bad.stderr


async def test_deliveries_list_and_show(
    operator: Callable[..., Any], log: Log, client: httpx.AsyncClient, auth: Auth
) -> None:
    hook = ("--tenant", str(TENANT), "--hook", str(log.hook))
    since_now = str(to_cro(utc_now()))
    (
        everything,
        failed,
        later,
        table,
        newest,
        detail,
        readable,
        missing,
        foreign,
    ) = await asyncio.gather(
        operator("deliveries", "list", *hook, "--json"),
        operator("deliveries", "list", *hook, "--status", "failed", "--json"),
        operator("deliveries", "list", *hook, "--since", since_now, "--json"),
        operator("deliveries", "list", *hook),
        operator("deliveries", "list", *hook, "--limit", "2"),
        operator("deliveries", "show", *hook, log.failed, "--json"),
        operator("deliveries", "show", *hook, log.failed),
        operator("deliveries", "show", *hook, MISSING_DELIVERY),
        operator("deliveries", "list", "--tenant", str(OTHER_TENANT), "--hook", str(log.hook)),
    )

    base = f"/hooks/{log.hook}/deliveries"
    assert everything.json() == (await client.get(base, headers=auth())).json()["results"]
    assert len(everything.json()) == 3
    api_failed = await client.get(f"{base}?status=failed", headers=auth())
    assert failed.json() == api_failed.json()["results"]
    assert [d["delivery_id"] for d in failed.json()] == [log.failed]
    assert later.json() == []
    api_detail = await client.get(f"{base}/{log.failed}", headers=auth())
    assert detail.json() == api_detail.json()
    assert [a["http_status"] for a in detail.json()["attempts"]] == [410]

    assert table.code == 0, table.stderr
    rows = {line.split()[0]: line.split()[2] for line in table.stdout.splitlines()[1:]}
    assert rows == {log.succeeded: "succeeded", log.failed: "failed", log.pending: "pending"}
    assert newest.code == 0, newest.stderr
    *_, more = newest.stdout.splitlines()
    assert [line.split() for line in newest.stdout.splitlines()[:3]] == [
        line.split() for line in table.stdout.splitlines()[:3]
    ]
    assert more == "(the newest 2; --limit shows more)"
    assert readable.code == 0, readable.stderr
    assert "status:" in readable.stdout
    assert "410" in readable.stdout
    assert '{"data": {"n":' in readable.stdout

    refused(missing, f"delivery {MISSING_DELIVERY} does not exist for hook {log.hook}")
    refused(foreign, f"hook {log.hook} does not exist")


async def test_redeliver_and_recover_queue_again(
    operator: Callable[..., Any], log: Log, client: httpx.AsyncClient, auth: Auth
) -> None:
    hook = ("--tenant", str(TENANT), "--hook", str(log.hook))
    base = f"/hooks/{log.hook}/deliveries"

    recovered = await operator("recover", *hook, "--since", "2000-01-01T00:00:00", "--json")
    assert recovered.json() == {"recovered": 1}
    api_failed = await client.get(f"{base}/{log.failed}", headers=auth())
    assert api_failed.json()["status"] == "pending"
    nothing = await operator("recover", *hook, "--since", "2000-01-01", "--until", "2000-01-02")
    assert (nothing.code, nothing.stdout) == (
        0,
        f"0 failed deliveries of hook {log.hook} queued again\n",
    )

    redelivered = await operator("deliveries", "redeliver", *hook, log.succeeded, "--json")
    api = (await client.get(f"{base}/{log.succeeded}", headers=auth())).json()
    assert redelivered.json() == {
        key: value for key, value in api.items() if key not in ("request_body", "attempts")
    }
    assert redelivered.json()["status"] == "pending"
    again = await operator("deliveries", "redeliver", *hook, log.succeeded)
    refused(again, "the delivery is already queued")

    deleted = ("--tenant", str(TENANT), "--hook", str(log.deleted_hook))
    refused(
        await operator("recover", *deleted, "--since", "2000-01-01"),
        f"hook {log.deleted_hook} is deleted",
    )
    bad = await operator("recover", *hook, "--since", "yesterday")
    assert bad.code == 2
    assert "argument --since: 'yesterday' must be an ISO 8601 timestamp" in bad.stderr


async def test_tenant_list_and_update(
    operator: Callable[..., Any], log: Log, client: httpx.AsyncClient, token: TokenFactory
) -> None:
    headers = {"Authorization": f"Bearer {token(tenants=[TENANT, OTHER_TENANT])}"}
    updated = await operator(
        "tenant", "update", "--id", str(OTHER_TENANT), "--email", "ops@other.example",
        "--truck-limit", "12", "--inactive", "--json",
    )  # fmt: skip
    listed, table, missing = await asyncio.gather(
        operator("tenant", "list", "--json"),
        operator("tenant", "list"),
        operator("tenant", "update", "--id", "99", "--name", "Nobody"),
    )

    api = (await client.get("/tenants", headers=headers)).json()["results"]
    assert listed.json() == api
    assert updated.json() == api[1]
    assert (api[1]["email"], api[1]["truck_limit"], api[1]["is_active"]) == (
        "ops@other.example",
        12,
        False,
    )
    assert [line.split()[:2] for line in table.stdout.splitlines()] == [
        ["ID", "CODE"],
        [str(TENANT), "DEMO"],
        [str(OTHER_TENANT), "OTH"],
    ]
    refused(missing, "tenant 99 does not exist")

    cleared = await operator("tenant", "update", "--id", str(OTHER_TENANT), "--clear", "email")
    assert cleared.code == 0, cleared.stderr
    assert "email:       -" in cleared.stdout
    assert (await client.get("/tenants", headers=headers)).json()["results"][1]["email"] is None


async def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    env = process_env(f"sqlite:///{tmp_path / 'nowhere.db'}")
    code, stdout, stderr = await run_to_end(
        [*CLI, "hooks", "list", "--tenant", "34"], timeout=30, env=env, cwd=tmp_path
    )
    assert (code, stdout) == (2, b"")
    assert stderr.decode().startswith("crohooks: there is no SQLite database at ")
    assert not (tmp_path / "nowhere.db").exists()
