"""Hook controls (issue 14): the settings resource, disable and enable, static headers and
receiver auth, the per-hook in-flight cap, payload filters; real databases, a real worker,
real receivers."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from crohooks.store.connector import Statement
from tests.integration.test_delivery import (
    Env,
    delivery_statuses,
    make_hook,
    publish,
    running,
    wait_until,
)
from tests.support.receiver import Receiver, Reply

Auth = Callable[..., dict[str, str]]
API_KEY = "key-3f9c2a7e51b84d06a1c9"
PASSWORD = "pw-8d41e0b7c3a94f25"
TOKEN = "tok-c0ffee5eed1234567890"


async def settings_of(env: Env, auth: Auth, hook_id: int) -> dict[str, Any]:
    response = await env.client.get(f"/hooks/{hook_id}/settings", headers=auth())
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def patch_settings(env: Env, auth: Auth, hook_id: int, body: Any) -> Any:
    return await env.client.patch(f"/hooks/{hook_id}/settings", json=body, headers=auth())


async def publish_jobs(env: Env, auth: Auth, count: int) -> list[str]:
    response = await env.client.post(
        "/events/batch",
        json={"events": [{"event": "Job", "data": {"n": n}} for n in range(count)]},
        headers=auth(roles=["System"]),
    )
    assert response.status_code == 202, response.text
    return [result["event_id"] for result in response.json()["results"]]


def delivery_ids(receiver: Receiver) -> list[str]:
    return [json.loads(request.body)["delivery_id"] for request in receiver.requests]


async def test_a_disabled_hook_holds_its_deliveries_until_enabled(
    database_url: str, auth: Auth
) -> None:
    """disable → publish 100 → nothing sent → enable → all 100 delivered, none twice."""
    async with Receiver() as held, Receiver() as control, running(database_url) as env:
        hook = await make_hook(env, auth, held.url, ["Job"])
        control_hook = await make_hook(env, auth, control.url, ["Job"])
        disabled = await env.client.post(f"/hooks/{hook}/disable", headers=auth())
        assert disabled.status_code == 200, disabled.text
        assert disabled.json()["disabled"] is True

        events = await publish_jobs(env, auth, 100)
        # The worker has passed over the held deliveries by the time it delivered every
        # one of the control hook's, published in the same batch.
        await control.wait_for_requests(100)
        await wait_until(
            lambda: _statuses_are(env, auth, control_hook, {"succeeded": 100}), timeout=15
        )
        assert held.requests == []
        assert await delivery_statuses(env, auth, hook) == {"pending": 100}

        enabled = await env.client.post(f"/hooks/{hook}/enable", headers=auth())
        assert enabled.status_code == 200, enabled.text
        assert enabled.json()["disabled"] is False
        await held.wait_for_requests(100, timeout=15)
        await wait_until(lambda: _statuses_are(env, auth, hook, {"succeeded": 100}), timeout=15)

    ids = delivery_ids(held)
    assert len(ids) == len(set(ids)) == 100
    assert {json.loads(r.body)["event_id"] for r in held.requests} == set(events)


async def _statuses_are(env: Env, auth: Auth, hook_id: int, expected: dict[str, int]) -> bool:
    return await delivery_statuses(env, auth, hook_id) == expected


async def test_disable_records_who_and_why_and_leaves_the_cro_model_alone(
    database_url: str, auth: Auth
) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        hook = await make_hook(env, auth, receiver.url, ["Job"])
        before = await env.client.get(f"/hooks/{hook}", headers=auth())
        assert await settings_of(env, auth, hook) == {
            "auth": None,
            "disabled": False,
            "disabled_at": None,
            "disabled_by": None,
            "disabled_reason": None,
            "filter": None,
            "headers": {},
            "hook_id": hook,
            "max_in_flight": None,
            "ordering": "all",
            "rate_limit": None,
        }

        first = await env.client.post(
            f"/hooks/{hook}/disable", json={"reason": "receiver migration"}, headers=auth()
        )
        assert first.status_code == 200, first.text
        shown = first.json()
        assert shown["disabled"] is True
        assert shown["disabled_reason"] == "receiver migration"
        assert shown["disabled_by"] == "tester"
        assert shown["disabled_at"] is not None
        # Disabling again changes nothing: the first reason, time and author stay.
        again = await env.client.post(f"/hooks/{hook}/disable", headers=auth())
        assert again.json() == shown
        assert await settings_of(env, auth, hook) == shown

        after = await env.client.get(f"/hooks/{hook}", headers=auth())
        assert after.content == before.content
        listed = await env.client.get("/hooks", headers=auth())
        assert listed.json()["results"][0] == json.loads(before.content)

        enabled = await env.client.post(f"/hooks/{hook}/enable", headers=auth())
        assert enabled.json()["disabled"] is False
        assert enabled.json()["disabled_reason"] is None


async def test_ping_of_a_disabled_hook_still_goes_out(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        hook = await make_hook(env, auth, receiver.url, ["Job"])
        await env.client.post(f"/hooks/{hook}/disable", headers=auth())
        ping = await env.client.get(f"/hooks/{hook}/ping", headers=auth())
        assert ping.status_code == 200, ping.text
        assert ping.json()["http_status"] == 200
        [received] = receiver.requests
        assert json.loads(received.body)["event"] == "Ping"


async def test_deleted_hooks_settings_are_readable_but_not_changeable(
    database_url: str, auth: Auth
) -> None:
    async with running(database_url) as env:
        hook = await make_hook(env, auth, "https://deleted.example/", ["Job"])
        await env.client.delete(f"/hooks/{hook}", headers=auth())
        assert (await settings_of(env, auth, hook))["hook_id"] == hook
        for method, path, body in (
            ("PATCH", "settings", {"max_in_flight": 1}),
            ("POST", "disable", None),
            ("POST", "enable", None),
        ):
            response = await env.client.request(
                method, f"/hooks/{hook}/{path}", json=body, headers=auth()
            )
            assert response.status_code == 409, (path, response.text)
            assert response.json()["field"] == "PathParameters.hook_id"
        missing = await env.client.post(f"/hooks/{hook + 1}/disable", headers=auth())
        assert missing.status_code == 404


# -- headers and receiver auth -------------------------------------------------------------


async def test_static_headers_and_basic_auth_reach_the_receiver_but_never_come_back(
    database_url: str, auth: Auth
) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        hook = await make_hook(env, auth, receiver.url, ["Job"])
        patched = await patch_settings(
            env,
            auth,
            hook,
            {
                "headers": {"X-Api-Key": API_KEY, "X-Team": "dispatch-team-blue"},
                "auth": {"type": "basic", "username": "crohooks", "password": PASSWORD},
            },
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["headers"] == {"X-Api-Key": "****a1c9", "X-Team": "****blue"}
        assert patched.json()["auth"] == {
            "password": "****4f25",
            "type": "basic",
            "username": "crohooks",
        }
        await publish_jobs(env, auth, 1)
        [delivered] = await receiver.wait_for_requests(1)
        ping = await env.client.get(f"/hooks/{hook}/ping", headers=auth())
        [_, pinged] = receiver.requests
        expected_auth = "Basic " + base64.b64encode(f"crohooks:{PASSWORD}".encode()).decode()
        for received in (delivered, pinged):
            assert received.header("X-Api-Key") == API_KEY
            assert received.header("X-Team") == "dispatch-team-blue"
            assert received.header("Authorization") == expected_auth
            assert received.header("X-Cro-Signature") is not None

        await wait_until(lambda: _statuses_are(env, auth, hook, {"succeeded": 2}), timeout=10)
        listed = await env.client.get(f"/hooks/{hook}/deliveries", headers=auth())
        responses = [ping, listed, await env.client.get(f"/hooks/{hook}/settings", headers=auth())]
        for delivery in listed.json()["results"]:
            detail = await env.client.get(
                f"/hooks/{hook}/deliveries/{delivery['delivery_id']}", headers=auth()
            )
            logged = dict(detail.json()["attempts"][0]["request_headers"])
            assert logged["X-Api-Key"] == logged["Authorization"] == "[redacted]"
            assert logged["X-Team"] == "[redacted]"
            responses.append(detail)
        for response in responses:
            for credential in (API_KEY, PASSWORD, base64.b64encode(PASSWORD.encode()).decode()):
                assert credential not in response.text
            assert "crohooks:" + PASSWORD not in response.text

        bearer = await patch_settings(env, auth, hook, {"auth": {"type": "bearer", "token": TOKEN}})
        assert bearer.json()["auth"] == {"token": "****7890", "type": "bearer"}
        assert bearer.json()["headers"] == patched.json()["headers"]  # not sent: kept
        await env.client.get(f"/hooks/{hook}/ping", headers=auth())
        assert receiver.requests[-1].header("Authorization") == f"Bearer {TOKEN}"

        cleared = await patch_settings(env, auth, hook, {"headers": None, "auth": None})
        assert (cleared.json()["headers"], cleared.json()["auth"]) == ({}, None)
        await env.client.get(f"/hooks/{hook}/ping", headers=auth())
        assert receiver.requests[-1].header("X-Api-Key") is None
        assert receiver.requests[-1].header("Authorization") is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ({"headers": {"Host": "evil.example"}}, "headers", "Host is reserved"),
        ({"headers": {"content-length": "5"}}, "headers", "content-length is reserved"),
        ({"headers": {"X-Cro-Signature": "sha1=0"}}, "headers", "X-Cro-Signature is reserved"),
        ({"headers": {"Webhook-Id": "x"}}, "headers", "Webhook-Id is reserved"),
        ({"headers": {"Authorization": "Bearer x"}}, "headers", "set receiver credentials"),
        ({"headers": {"Bad Name": "x"}}, "headers", "is not a header name"),
        ({"headers": {"X-A": "line\r\nX-Injected: 1"}}, "headers", "visible ASCII"),
        ({"headers": {"X-A": "x", "x-a": "y"}}, "headers", "more than once"),
        ({"headers": {f"X-{n}": "v" for n in range(21)}}, "headers", "at most 20 headers"),
        ({"headers": {"X-A": 1}}, "headers", "valid string"),
        ({"headers": ["X-A"]}, "headers", "valid dictionary"),
        ({"auth": {"type": "digest", "token": "x"}}, "auth", "does not match any of the"),
        ({"auth": {"type": "basic", "username": "a:b", "password": "p"}}, "auth", "':'"),
        ({"auth": {"type": "bearer"}}, "auth", "required"),
        ({"max_in_flight": 0}, "max_in_flight", "greater than or equal to 1"),
        ({"max_in_flight": 101}, "max_in_flight", "less than or equal to 100"),
        ({"max_in_flight": "2"}, "max_in_flight", "valid integer"),
        ({"max_in_flight": True}, "max_in_flight", "valid integer"),
        ({"disabled": False}, "disabled", "read-only"),
        ({"disabled_reason": "x"}, "disabled_reason", "read-only"),
        ({"colour": "red"}, "colour", "not a known field"),
    ],
)
async def test_bad_settings_are_400_and_change_nothing(
    database_url: str, auth: Auth, body: dict[str, Any], field: str, detail: str
) -> None:
    async with running(database_url) as env:
        hook = await make_hook(env, auth, "https://bad.example/", ["Job"])
        good = await patch_settings(env, auth, hook, {"headers": {"X-Keep": "kept-value"}})
        assert good.status_code == 200
        response = await patch_settings(env, auth, hook, body)
        assert response.status_code == 400, response.text
        error = response.json()
        assert set(error) == {"detail", "explanation", "field"}
        assert error["field"] == f"HookSettingsModel.{field}"
        assert detail in error["detail"], error["detail"]
        assert await settings_of(env, auth, hook) == good.json()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_bad_disable_bodies_are_400(database_url: str, auth: Auth) -> None:
    async with running(database_url) as env:
        hook = await make_hook(env, auth, "https://bad.example/", ["Job"])
        for body in ('{"reason": ""}', '{"reason": 5}', '{"why": "x"}', "[]", "{", '"x"'):
            response = await env.client.post(
                f"/hooks/{hook}/disable", content=body.encode(), headers=auth()
            )
            assert response.status_code == 400, (body, response.text)
            assert response.json()["field"].startswith("DisableHookModel")
        enable = await env.client.post(f"/hooks/{hook}/enable", json={}, headers=auth())
        assert enable.status_code == 400
        assert (await settings_of(env, auth, hook))["disabled"] is False


# -- the in-flight cap ------------------------------------------------------------------------


async def test_max_in_flight_one_sends_one_request_at_a_time(database_url: str, auth: Auth) -> None:
    """The server's cap is 4; this hook's own cap of 1 makes its deliveries go one by one
    (the receiver takes 0.2 s per request, so overlapping requests would arrive together)."""
    async with Receiver(Reply(200, delay=0.2)) as receiver, running(database_url) as env:
        hook = await make_hook(env, auth, receiver.url, ["Job"])
        capped = await patch_settings(env, auth, hook, {"max_in_flight": 1})
        assert capped.json()["max_in_flight"] == 1
        await publish_jobs(env, auth, 4)
        requests = await receiver.wait_for_requests(4, timeout=10)
        arrivals = [request.received_at for request in requests]
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert min(gaps) >= 0.19, gaps

        reset = await patch_settings(env, auth, hook, {"max_in_flight": None})
        assert reset.json()["max_in_flight"] is None
        await publish_jobs(env, auth, 4)
        more = await receiver.wait_for_requests(8, timeout=10)
        arrivals = [request.received_at for request in more[4:]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert min(gaps) < 0.1, gaps  # back to the server's cap: requests overlap


# -- payload filters --------------------------------------------------------------------------

COUNT_BY_HOOK = Statement.shared(
    "count_by_hook", "SELECT hook_id, count(*) AS total FROM deliveries GROUP BY hook_id"
)
STATUSES = ("Completed", "Pending", "Cancelled", "InProgress")


async def test_a_filter_queues_exactly_the_matching_events(database_url: str, auth: Auth) -> None:
    """1,000 mixed ``Job`` events: the filtering hook gets a delivery for each completed one
    and no other; the hook without a filter gets all of them."""
    async with running(database_url) as env:
        filtered = await make_hook(env, auth, "https://filtered.example/", ["Job"])
        everything = await make_hook(env, auth, "https://everything.example/", ["Job"])
        await env.services.hook_settings.disable(34, filtered, reason="count only", by="t")
        await env.services.hook_settings.disable(34, everything, reason="count only", by="t")
        patched = await patch_settings(
            env, auth, filtered, {"filter": 'data.status == "Completed"'}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["filter"] == 'data.status == "Completed"'

        events: list[dict[str, Any]] = [
            {"event": "Job", "data": {"job": n, "status": STATUSES[(n * 7) % 4]}}
            for n in range(1000)
        ]
        events[3]["data"] = {"job": 3}  # no status at all: not Completed, an evaluation error
        response = await env.client.post(
            "/events/batch", json={"events": events}, headers=auth(roles=["System"])
        )
        assert response.status_code == 202, response.text
        completed = [e for e in events if e["data"].get("status") == "Completed"]
        counts = {
            row["hook_id"]: row["total"] for row in await env.services.db.fetch(COUNT_BY_HOOK)
        }
        # The event without a status makes the filter fail: it is delivered (fail open).
        assert counts == {filtered: len(completed) + 1, everything: 1000}
        hook_counts = [result["hook_count"] for result in response.json()["results"]]
        assert sum(hook_counts) == len(completed) + 1 + 1000


async def test_a_failing_filter_delivers_and_says_so(database_url: str, auth: Auth) -> None:
    async with Receiver() as receiver, running(database_url) as env:
        hook = await make_hook(env, auth, receiver.url, ["Job"])
        await patch_settings(env, auth, hook, {"filter": "data.n > 3"})
        with capture_logs() as logs:
            published = [await publish(env, auth, "Job", {"n": n}) for n in (1, 5, "five")]
        assert [p["hook_count"] for p in published] == [0, 1, 1]
        received = await receiver.wait_for_requests(2)
        assert sorted(str(json.loads(r.body)["data"]["n"]) for r in received) == ["5", "five"]
        [failed] = [entry for entry in logs if entry["event"].startswith("hook filter failed")]
        assert failed["hook_id"] == hook
        assert failed["event_id"] == published[2]["event_id"]
        assert failed["log_level"] == "warning"
        assert "five" not in json.dumps(failed)  # the log names no event data


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ('data.status == "Completed', "line 1, column 16: Syntax error"),
        ("data.status ==", "line 1, column 15: Syntax error"),
        ('event == "Job" &&\n  data.n >', "line 2, column 11: Syntax error"),
        ("data.n + 1", "must give true or false"),
        ("data.jobs.map(j, j.id).size() > 0", "map and filter are not available"),
        ("data.jobs.filter(j, j.ok).size() > 0", "map and filter are not available"),
        ("x" * 1001, "longer than 1000 characters"),
        ("   ", "the filter is empty"),
        ('"" + 1 == 1', "no matching overload"),
    ],
)
async def test_a_bad_filter_is_400_with_its_position(
    database_url: str, auth: Auth, source: str, detail: str
) -> None:
    async with running(database_url) as env:
        hook = await make_hook(env, auth, "https://bad.example/", ["Job"])
        response = await patch_settings(env, auth, hook, {"filter": source})
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["field"] == "HookSettingsModel.filter"
        assert detail in error["detail"], error["detail"]
        assert (await settings_of(env, auth, hook))["filter"] is None


async def test_a_runaway_filter_is_cut_off_and_delivers(database_url: str, auth: Auth) -> None:
    """Nested comprehensions over a long list would take minutes: the runtime's iteration
    budget stops them, quickly, and the event is delivered (fail open)."""
    async with running(database_url) as env:
        hook = await make_hook(env, auth, "https://runaway.example/", ["Job"])
        await env.services.hook_settings.disable(34, hook, reason="count only", by="t")
        runaway = "data.l.exists(a, data.l.exists(b, data.l.exists(c, a + b + c < 0)))"
        assert (await patch_settings(env, auth, hook, {"filter": runaway})).status_code == 200
        started = time.monotonic()
        with capture_logs() as logs:
            published = await publish(env, auth, "Job", {"l": list(range(5000))})
        assert time.monotonic() - started < 2.0
        assert published["hook_count"] == 1
        [failed] = [entry for entry in logs if entry["event"].startswith("hook filter failed")]
        assert "budget" in failed["error"]
