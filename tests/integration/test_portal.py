"""The tenant portal over HTTP: links, sessions, CSRF, escaping, tenancy, roles, and the
pages' work done through the API's own services (real SQLite and PostgreSQL, a real
receiver on loopback)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from crohooks.services import Services
from tests.conftest import api_client, make_settings
from tests.support.delivery import deliver_until_idle
from tests.support.portal import PortalVisitor, code_of
from tests.support.receiver import Receiver, Reply

Auth = Callable[..., dict[str, str]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def _link(
    client: httpx.AsyncClient,
    auth: Auth,
    *,
    tenant: int = 34,
    roles: list[str] | None = None,
    **body: Any,
) -> str:
    response = await client.post(
        "/portal/links", headers=auth(tenant=tenant, roles=roles or ["Admin"]), json=body or None
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["url"]
    return url


async def _visitor(
    services: Services, client: httpx.AsyncClient, auth: Auth, **link: Any
) -> PortalVisitor:
    visitor = PortalVisitor(client)
    entered = await visitor.open_link(await _link(client, auth, **link))
    assert entered.status_code == 303
    return visitor


@pytest.fixture
async def visitor(services: Services, client: httpx.AsyncClient, auth: Auth) -> PortalVisitor:
    return await _visitor(services, client, auth)


async def _api_hook(client: httpx.AsyncClient, auth: Auth, url: str, tenant: int = 34) -> int:
    response = await client.post(
        "/hooks", json={"events": ["Job"], "url": url}, headers=auth(tenant=tenant)
    )
    assert response.status_code == 200, response.text
    hook_id: int = response.json()["id"]
    return hook_id


# --- links and sessions ---------------------------------------------------------------


async def test_a_link_answers_a_url_and_its_expiry_in_cros_wire_format(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await client.post("/portal/links", headers=auth(), json={"ttl_seconds": 120})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"expires_at", "url"}
    assert body["url"].startswith("http://crohooks.test/portal/enter?code=")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", body["expires_at"])


async def test_only_admin_or_system_may_ask_for_a_link(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    for roles, status in ((["Dispatcher"], 403), (["Driver"], 403), (["System"], 200)):
        response = await client.post("/portal/links", headers=auth(roles=roles))
        assert response.status_code == status, roles
    wrong_tenant = await client.post(
        "/portal/links", headers={**auth(tenant=34), "x-tenant-id": "35"}
    )
    assert wrong_tenant.status_code == 403
    assert set(wrong_tenant.json()) == {"detail", "explanation", "field"}
    bad = await client.post("/portal/links", headers=auth(), json={"ttl_seconds": 0})
    assert bad.status_code == 400
    assert bad.json()["field"] == "PortalLinkModel.ttl_seconds"


async def test_the_cookie_is_httponly_strict_and_the_code_leaves_the_url(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    url = await _link(client, auth)
    landing = await client.get(url.removeprefix("http://crohooks.test"))
    assert landing.status_code == 200
    entered = await client.post("/portal/enter", data={"code": code_of(url)})
    assert entered.status_code == 303
    assert entered.headers["location"] == "/portal/hooks"
    cookie = entered.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/portal" in cookie
    assert "secure" not in cookie
    hooks = await client.get("/portal/hooks")
    assert hooks.status_code == 200
    assert code_of(url) not in hooks.text


async def test_the_cookie_is_secure_over_https(services: Services, auth: Auth) -> None:
    app_client = api_client(services)
    async with app_client as http:
        http.base_url = httpx.URL("https://crohooks.test")
        url = await _link(http, auth)
        entered = await http.post("/portal/enter", data={"code": code_of(url)})
    assert "secure" in entered.headers["set-cookie"].lower()


async def test_the_cookie_is_secure_behind_a_proxy_that_ends_tls(
    database_url: str, auth: Auth
) -> None:
    settings = make_settings(database_url, portal_base_url="https://hooks.example.com")
    built = Services.build(settings)
    try:
        async with api_client(built) as http:
            url = await _link(http, auth)
            assert url.startswith("https://hooks.example.com/portal/enter?code=")
            entered = await http.post("/portal/enter", data={"code": code_of(url)})
    finally:
        await built.aclose()
    assert "secure" in entered.headers["set-cookie"].lower()


async def test_a_link_works_once(client: httpx.AsyncClient, auth: Auth) -> None:
    url = await _link(client, auth)
    first = await PortalVisitor(client).open_link(url)
    assert first.status_code == 303
    client.cookies.clear()
    again = await PortalVisitor(client).open_link(url)
    assert again.status_code == 403
    assert "set-cookie" not in again.headers
    assert (await client.get("/portal/hooks")).status_code == 401


async def test_opening_the_landing_page_does_not_use_the_code(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    """Link previewers fetch URLs; only the page's own POST redeems the code."""
    url = await _link(client, auth)
    for _ in range(3):
        assert (await client.get(url.removeprefix("http://crohooks.test"))).status_code == 200
    assert (await client.post("/portal/enter", data={"code": code_of(url)})).status_code == 303


async def test_an_expired_link_is_refused(services: Services, client: httpx.AsyncClient) -> None:
    link = await services.portal.issue_link(
        34, subject="tester", roles=("Admin",), ttl=timedelta(seconds=-1)
    )
    response = await client.post("/portal/enter", data={"code": link.code})
    assert response.status_code == 403
    assert "expired" in response.text


async def test_an_unknown_code_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/portal/enter", data={"code": "made-up"})
    assert response.status_code == 403


async def test_a_session_expires(services: Services, client: httpx.AsyncClient, auth: Auth) -> None:
    from crohooks.portal.access import PortalAccess
    from crohooks.store.portal import PortalRepository

    services.portal = PortalAccess(
        PortalRepository(services.db), session_lifetime=timedelta(seconds=-1)
    )
    entered = await PortalVisitor(client).open_link(await _link(client, auth))
    assert entered.status_code == 303
    assert (await client.get("/portal/hooks")).status_code == 401


async def test_sign_out_ends_the_session_on_the_server(
    visitor: PortalVisitor, client: httpx.AsyncClient
) -> None:
    token = client.cookies.get("crohooks_portal")
    assert token
    response = await visitor.submit("/portal/signout")
    assert response.status_code == 200
    assert "Signed out" in response.text
    assert (await client.get("/portal/hooks")).status_code == 401
    client.cookies.set("crohooks_portal", token, path="/portal")
    assert (await client.get("/portal/hooks")).status_code == 401


async def test_an_unknown_portal_path_is_an_html_404(
    visitor: PortalVisitor, client: httpx.AsyncClient
) -> None:
    missing = await client.get("/portal/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "no page at /portal/nowhere" in missing.text
    wrong_method = await client.delete("/portal/hooks")
    assert wrong_method.status_code == 405


async def test_every_page_carries_the_content_security_policy(
    visitor: PortalVisitor, client: httpx.AsyncClient
) -> None:
    for path in ("/portal/hooks", "/portal/static/portal.css", "/portal/hooks/999"):
        response = await client.get(path)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert "access-control-allow-origin" not in response.headers


# --- CSRF ------------------------------------------------------------------------------


async def test_a_change_without_the_csrf_token_is_refused(
    visitor: PortalVisitor, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    form = {"url": receiver.url, "events": ["Job"]}
    missing = await visitor.submit("/portal/hooks", form, csrf=False)
    assert missing.status_code == 403
    wrong = await visitor.submit("/portal/hooks", {**form, "csrf_token": "x" * 43}, csrf=False)
    assert wrong.status_code == 403
    listed = await client.get("/hooks", headers=auth())
    assert listed.json()["total_count"] == 0
    made = await visitor.submit("/portal/hooks", form)
    assert made.status_code == 303
    assert (await client.get("/hooks", headers=auth())).json()["total_count"] == 1


async def test_a_change_from_another_site_is_refused_even_with_the_token(
    visitor: PortalVisitor, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    form = {"url": receiver.url, "events": ["Job"]}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        response = await visitor.submit("/portal/hooks", form, headers=headers)
        assert response.status_code == 403
    assert (await client.get("/hooks", headers=auth())).json()["total_count"] == 0


async def test_sign_out_needs_the_csrf_token(
    visitor: PortalVisitor, client: httpx.AsyncClient
) -> None:
    assert (await visitor.submit("/portal/signout", csrf=False)).status_code == 403
    assert (await client.get("/portal/hooks")).status_code == 200


# --- escaping ----------------------------------------------------------------------------


async def test_a_script_in_a_hook_url_is_shown_as_text(
    visitor: PortalVisitor, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    url = receiver.url_for("/<script>alert(1)</script>")
    made = await visitor.submit("/portal/hooks", {"url": url, "events": ["Job"]})
    assert made.status_code == 303
    for path in ("/portal/hooks", made.headers["location"]):
        page = await client.get(path)
        assert "<script>alert(1)" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_a_receivers_body_and_headers_are_shown_as_text(
    visitor: PortalVisitor, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    receiver.enqueue(
        Reply(
            500,
            headers=[("X-Evil", "<script>alert(2)</script>")],
            body=b"<script>alert(3)</script><img src=x onerror=alert(4)>",
        )
    )
    hook_id = await _api_hook(client, auth, receiver.url)
    ping = (await client.get(f"/hooks/{hook_id}/ping", headers=auth())).json()
    page = await client.get(f"/portal/hooks/{hook_id}/deliveries/{ping['delivery_id']}")
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;&lt;img src=x onerror=alert(4)&gt;" in page.text


# --- tenancy and roles -------------------------------------------------------------------


async def test_a_session_of_tenant_34_finds_nothing_of_tenant_35(
    visitor: PortalVisitor, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    other = await _api_hook(client, auth, receiver.url, tenant=35)
    ping = (await client.get(f"/hooks/{other}/ping", headers=auth(tenant=35))).json()
    delivery = ping["delivery_id"]
    await visitor.page("/portal/hooks")
    for path in (
        f"/portal/hooks/{other}",
        f"/portal/hooks/{other}/deliveries",
        f"/portal/hooks/{other}/deliveries/{delivery}",
        f"/portal/hooks/{other}/recover?since=2020-01-01T00:00",
    ):
        assert (await client.get(path)).status_code == 404, path
    for path, form in (
        (f"/portal/hooks/{other}/edit", {"url": receiver.url_for("/x"), "events": ["Job"]}),
        (f"/portal/hooks/{other}/secret", {"action": "rotate"}),
        (f"/portal/hooks/{other}/ping", {}),
        (f"/portal/hooks/{other}/deliveries/{delivery}/redeliver", {}),
        (f"/portal/hooks/{other}/recover", {"since": "2020-01-01T00:00"}),
        (f"/portal/hooks/{other}/events", {"event": "Job", "data": "{}"}),
        (f"/portal/hooks/{other}/delete", {}),
    ):
        assert (await visitor.submit(path, form)).status_code == 404, path
    still = (await client.get(f"/hooks/{other}", headers=auth(tenant=35))).json()
    assert still["deleted_at"] is None
    assert still["url"] == receiver.url
    listed = await client.get("/portal/hooks")
    assert f"/portal/hooks/{other}" not in listed.text


async def test_a_dispatcher_session_may_not_publish(
    services: Services, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    """The API lets a Dispatcher manage hooks but not publish events; so does the portal."""
    dispatcher = await _visitor(services, client, auth, role="Dispatcher")
    made = await dispatcher.submit("/portal/hooks", {"url": receiver.url, "events": ["Job"]})
    assert made.status_code == 303
    page = await dispatcher.page(made.headers["location"])
    assert "Send a test event" not in page.text
    refused = await dispatcher.submit(
        f"{made.headers['location']}/events", {"event": "Job", "data": "{}"}
    )
    assert refused.status_code == 403
    assert "this operation needs one of the roles: Admin, System" in refused.text
    assert (await client.get("/hooks/1/deliveries", headers=auth())).json()["total_count"] == 0


async def test_a_test_event_follows_the_apis_rules(
    visitor: PortalVisitor, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    made = await visitor.submit("/portal/hooks", {"url": receiver.url, "events": ["Job"]})
    events = f"{made.headers['location']}/events"
    for form, text in (
        ({"event": "Job", "data": '{"n": NaN}'}, "malformed JSON: NaN is not valid JSON"),
        ({"event": "Job", "data": "[1]"}, "the body must be a JSON object"),
        ({"event": "Ping", "data": "{}"}, "event: Input should be"),
    ):
        refused = await visitor.submit(events, form)
        assert refused.status_code == 400, form
        assert text in refused.text, refused.text
    sent = await visitor.submit(events, {"event": "Job", "data": '{"n": 1}'})
    assert sent.status_code == 200
    assert "queued for 1 hook(s)" in sent.text
    log = await client.get("/hooks/1/deliveries", headers=auth())
    assert log.json()["total_count"] == 1


async def test_a_session_without_a_hook_role_sees_no_hooks(
    services: Services, client: httpx.AsyncClient
) -> None:
    link = await services.portal.issue_link(
        34, subject="driver", roles=("Driver",), ttl=timedelta(minutes=1)
    )
    assert (await client.post("/portal/enter", data={"code": link.code})).status_code == 303
    page = await client.get("/portal/hooks")
    assert page.status_code == 403
    assert "this operation needs one of the roles: Admin, Dispatcher" in page.text


# --- the pages' work ----------------------------------------------------------------------


async def test_create_edit_rotate_reveal_and_delete_a_hook(
    visitor: PortalVisitor, client: httpx.AsyncClient, auth: Auth, receiver: Receiver
) -> None:
    made = await visitor.submit("/portal/hooks", {"url": receiver.url, "events": ["Job", "Truck"]})
    hook_path = made.headers["location"]
    hook_id = int(hook_path.rsplit("/", 1)[1])
    api = (await client.get(f"/hooks/{hook_id}", headers=auth())).json()
    assert api["events"] == ["Job", "Truck"]
    duplicate = await visitor.submit("/portal/hooks", {"url": receiver.url, "events": []})
    assert duplicate.status_code == 409
    assert "another active hook of this tenant already uses this url" in duplicate.text
    invalid = await visitor.submit("/portal/hooks", {"url": "ftp://x", "events": []})
    assert invalid.status_code == 400

    edited = await visitor.submit(
        f"{hook_path}/edit", {"url": receiver.url_for("/v2"), "events": ["Customer"]}
    )
    assert edited.status_code == 303
    api = (await client.get(f"/hooks/{hook_id}", headers=auth())).json()
    assert (api["url"], api["events"]) == (receiver.url_for("/v2"), ["Customer"])

    revealed = await visitor.submit(f"{hook_path}/secret", {"action": "reveal"})
    assert api["secret"] in revealed.text
    rotated = await visitor.submit(f"{hook_path}/secret", {"action": "rotate"})
    new_secret = (await client.get(f"/hooks/{hook_id}", headers=auth())).json()["secret"]
    assert new_secret != api["secret"]
    assert new_secret in rotated.text

    deleted = await visitor.submit(f"{hook_path}/delete")
    assert deleted.status_code == 303
    assert (await client.get(f"/hooks/{hook_id}", headers=auth())).json()["deleted_at"]
    listed = await visitor.page("/portal/hooks")
    assert "deleted" in listed.text
    again = await visitor.submit(f"{hook_path}/delete")
    assert again.status_code == 409
    assert f"hook {hook_id} is deleted and can&#39;t be deleted" in again.text


async def test_ping_shows_the_status_message_and_the_signature_sent(
    visitor: PortalVisitor, receiver: Receiver
) -> None:
    made = await visitor.submit("/portal/hooks", {"url": receiver.url, "events": []})
    pinged = await visitor.submit(f"{made.headers['location']}/ping")
    assert pinged.status_code == 200
    [request] = await receiver.wait_for_requests(1)
    signature = request.header("X-Cro-Signature")
    assert signature
    assert re.search(r'id="ping-status">200<', pinged.text)
    assert "No exceptions raised." in pinged.text
    assert signature in pinged.text


async def test_the_hook_page_charts_outcomes_and_durations(
    visitor: PortalVisitor,
    services: Services,
    client: httpx.AsyncClient,
    auth: Auth,
    receiver: Receiver,
) -> None:
    receiver.enqueue(200, 200, 410)
    hook_id = await _api_hook(client, auth, receiver.url)
    for n in range(3):
        await client.post("/events", headers=auth(), json={"event": "Job", "data": {"n": n}})
    await deliver_until_idle(services)
    page = await visitor.page(f"/portal/hooks/{hook_id}")
    assert len(re.findall(r'data-status="succeeded"', page.text)) == 1
    assert len(re.findall(r'data-status="failed"', page.text)) == 1
    assert "2 succeeded" in page.text
    assert "1 failed" in page.text
    assert re.search(r"latest 3 attempts:\s+p50 [0-9.]+ ms,\s+p99 [0-9.]+ ms", page.text)
    listed = await visitor.page("/portal/hooks")
    assert "66.7 % (2/3)" in listed.text


async def test_the_log_filters_searches_and_pages(
    visitor: PortalVisitor,
    services: Services,
    client: httpx.AsyncClient,
    auth: Auth,
    receiver: Receiver,
) -> None:
    receiver.enqueue(410)
    response = await client.post(
        "/hooks", json={"events": ["Job", "Truck"], "url": receiver.url}, headers=auth()
    )
    hook_id = response.json()["id"]
    published = []
    for event in ("Job", "Truck", "Truck"):
        accepted = await client.post("/events", headers=auth(), json={"event": event, "data": {}})
        published.append(accepted.json()["event_id"])
    await deliver_until_idle(services)
    log = f"/portal/hooks/{hook_id}/deliveries"
    everything = await visitor.page(log)
    assert "3 deliveries" in everything.text
    assert "1 deliveries" in (await visitor.page(log, status="failed")).text
    assert "2 deliveries" in (await visitor.page(log, event="Truck")).text
    found = await visitor.page(log, q=published[0])
    assert "1 deliveries" in found.text
    assert "0 deliveries" in (await visitor.page(log, since="2999-01-01T00:00")).text
    assert "3 deliveries" in (await visitor.page(log, until="2999-01-01T00:00")).text
    bad = await visitor.page(log, q="not-an-id")
    assert bad.status_code == 400


async def test_redeliver_and_recover_with_a_count_first(
    visitor: PortalVisitor,
    services: Services,
    client: httpx.AsyncClient,
    auth: Auth,
    receiver: Receiver,
) -> None:
    receiver.enqueue(410, 410)
    hook_id = await _api_hook(client, auth, receiver.url)
    for n in range(2):
        await client.post("/events", headers=auth(), json={"event": "Job", "data": {"n": n}})
    await deliver_until_idle(services)
    failed = (await client.get(f"/hooks/{hook_id}/deliveries", headers=auth())).json()
    [first, second] = [d["delivery_id"] for d in failed["results"]]

    detail = await visitor.page(f"/portal/hooks/{hook_id}/deliveries/{first}")
    assert 'id="attempt-1"' in detail.text
    again = await visitor.submit(f"/portal/hooks/{hook_id}/deliveries/{first}/redeliver")
    assert again.status_code == 303
    await deliver_until_idle(services)
    state = await client.get(f"/hooks/{hook_id}/deliveries/{first}", headers=auth())
    assert state.json()["status"] == "succeeded"

    preview = await visitor.page(f"/portal/hooks/{hook_id}/recover", since="2020-01-01T00:00")
    assert "1 failed deliveries in this window." in preview.text
    since = re.search(r'name="since" value="([^"]+)"', preview.text)
    until = re.search(r'name="until" value="([^"]+)"', preview.text)
    assert since
    assert until
    done = await visitor.submit(
        f"/portal/hooks/{hook_id}/recover", {"since": since.group(1), "until": until.group(1)}
    )
    assert "1 failed deliveries re-queued." in done.text
    await deliver_until_idle(services)
    state = await client.get(f"/hooks/{hook_id}/deliveries/{second}", headers=auth())
    assert state.json()["status"] == "succeeded"
