"""The CRO hooks endpoints on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

Auth = Callable[..., dict[str, str]]
CRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")


async def create(client: httpx.AsyncClient, auth: Auth, **body: Any) -> dict[str, Any]:
    body.setdefault("events", ["Customer"])
    response = await client.post("/hooks", json=body, headers=auth())
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "explanation", "field"}
    return body


async def test_create_sample_is_byte_for_byte_cro(client: httpx.AsyncClient, auth: Auth) -> None:
    await create(client, auth, url="https://first.example")
    response = await client.post(
        "/hooks/",
        content=b'{"events": ["Customer"], "secret": "VGhlIGxhenkgYnJvd24gZG9n", '
        b'"url": "https://test.url"}',
        headers=auth(),
    )
    assert response.status_code == 200
    assert response.content == (
        b'{"deleted_at": null, "events": ["Customer"], "id": 2, "last_http_fail": null, '
        b'"last_http_success": null, "secret": "VGhlIGxhenkgYnJvd24gZG9n", '
        b'"url": "https://test.url"}'
    )
    assert response.headers["content-length"] == "169"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["allow"] == "GET,POST"
    assert response.headers["access-control-allow-methods"] == "GET,POST"
    assert response.headers["access-control-allow-origin"] == "*"
    assert (
        response.headers["access-control-allow-headers"]
        == "Authorization, Accept, X-TENANT-ID, Content-Type"
    )
    assert response.headers["x-api-version"] == "2019/02/08"


async def test_update_sample_with_empty_events(client: httpx.AsyncClient, auth: Auth) -> None:
    await create(client, auth, url="https://test.url", secret="VGhlIGxhenkgYnJvd24gZG9n")
    response = await client.patch(
        "/hooks/1/",
        json={
            "events": [],
            "secret": "VGhlIGxhenkgYnJvd24gZG9n",
            "url": "https://test.updated.url",
        },
        headers=auth(),
    )
    assert response.status_code == 200
    assert response.content == (
        b'{"deleted_at": null, "events": [], "id": 1, "last_http_fail": null, '
        b'"last_http_success": null, "secret": "VGhlIGxhenkgYnJvd24gZG9n", '
        b'"url": "https://test.updated.url"}'
    )
    assert response.headers["content-length"] == "167"
    assert response.headers["allow"] == "GET,PATCH,DELETE"


async def test_delete_sample_soft_deletes(client: httpx.AsyncClient, auth: Auth) -> None:
    await create(
        client,
        auth,
        url="http://localhost:9797",
        events=["Customer", "CustomerLocation", "Job"],
        secret="VGhlIGxhenkgYnJvd24gZG9n",
    )
    response = await client.delete("/hooks/1/", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert CRO_TIME.match(body["deleted_at"])
    expected = dict(body, deleted_at="2022-08-20T01:45:38.518903")
    assert len(json.dumps(expected, sort_keys=True)) == 225
    assert response.headers["content-length"] == str(len(response.content))
    assert response.content == json.dumps(body, sort_keys=True).encode()

    again = await client.get("/hooks/1", headers=auth())
    assert again.status_code == 200
    assert again.json()["deleted_at"] == body["deleted_at"]
    assert (await client.delete("/hooks/1", headers=auth())).status_code == 409
    patch = await client.patch("/hooks/1", json={"url": "https://x.example"}, headers=auth())
    assert patch.status_code == 409
    assert error_of(patch)["field"] == "PathParameters.hook_id"


async def test_secret_is_generated_when_omitted(client: httpx.AsyncClient, auth: Auth) -> None:
    first = await create(client, auth, url="https://a.example")
    second = await create(client, auth, url="https://b.example")
    assert len(base64.b64decode(first["secret"], validate=True)) == 24
    assert first["secret"] != second["secret"]


async def test_secret_is_stored_stripped(client: httpx.AsyncClient, auth: Auth) -> None:
    hook = await create(
        client, auth, url="https://a.example", secret="  VGhlIGxhenkgYnJvd24gZG9n\n"
    )
    assert hook["secret"] == "VGhlIGxhenkgYnJvd24gZG9n"


async def test_patch_keeps_fields_not_sent(client: httpx.AsyncClient, auth: Auth) -> None:
    hook = await create(client, auth, url="https://a.example", events=["Job", "Truck"])
    response = await client.patch(
        f"/hooks/{hook['id']}", json={"url": "https://b.example"}, headers=auth()
    )
    assert response.status_code == 200
    assert response.json() == dict(hook, url="https://b.example")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["Customer"]}, "CreateWebhookModel.url"),
        ({"url": "https://a.example"}, "CreateWebhookModel.events"),
        (
            {"events": ["Customer"], "url": "https://a.example", "name": "x"},
            "CreateWebhookModel.name",
        ),
        ({"events": "Customer", "url": "https://a.example"}, "CreateWebhookModel.events"),
        ({"events": ["customer"], "url": "https://a.example"}, "CreateWebhookModel.events"),
        ({"events": ["Job", "Job"], "url": "https://a.example"}, "CreateWebhookModel.events"),
        ({"events": [], "url": 1}, "CreateWebhookModel.url"),
        ({"events": [], "url": "ftp://a.example/"}, "CreateWebhookModel.url"),
        ({"events": [], "url": "/relative"}, "CreateWebhookModel.url"),
        ({"events": [], "url": "https://user:pw@a.example/"}, "CreateWebhookModel.url"),
        ({"events": [], "url": "https://a.example/" + "x" * 2048}, "CreateWebhookModel.url"),
        (
            {"events": [], "url": "https://a.example", "secret": "short"},
            "CreateWebhookModel.secret",
        ),
        (
            {"events": [], "url": "https://a.example", "secret": "abc$defghijkl"},
            "CreateWebhookModel.secret",
        ),
        (
            {"events": [], "url": "https://a.example", "secret": "abcdefghijklm"},
            "CreateWebhookModel.secret",
        ),
        ({"events": [], "url": "https://a.example", "secret": None}, "CreateWebhookModel.secret"),
        (
            {"events": [], "url": "https://a.example", "secret": 12345678901234},
            "CreateWebhookModel.secret",
        ),
    ],
)
async def test_create_rejects_bad_fields(
    client: httpx.AsyncClient, auth: Auth, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/hooks", json=body, headers=auth())
    assert response.status_code == 400, response.text
    assert error_of(response)["field"] == field
    listed = await client.get("/hooks", headers=auth())
    assert listed.json()["total_count"] == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"events": [', "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
        (b"", "application/json"),
        (b'{"events": [], "url": "https://a.example", "x": NaN}', "application/json"),
        (b'{"events": [], "url": "https://a.example"}', "text/plain"),
        (b'{"events": [], "url": "https://a.example"}', "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_are_400(
    client: httpx.AsyncClient, auth: Auth, content: bytes, content_type: str
) -> None:
    headers = dict(auth(), **{"Content-Type": content_type})
    response = await client.post("/hooks", content=content, headers=headers)
    assert response.status_code == 400
    assert error_of(response)["detail"]


async def test_oversized_body_is_413(client: httpx.AsyncClient, auth: Auth) -> None:
    body = {"events": [], "url": "https://a.example/" + "a" * 70_000}
    response = await client.post("/hooks", json=body, headers=auth())
    assert response.status_code == 413
    assert error_of(response)["explanation"]


async def test_duplicate_active_url_is_409(client: httpx.AsyncClient, auth: Auth) -> None:
    first = await create(client, auth, url="https://same.example")
    response = await client.post(
        "/hooks", json={"events": [], "url": "https://same.example"}, headers=auth()
    )
    assert response.status_code == 409
    assert error_of(response)["field"] == "CreateWebhookModel.url"
    other = await create(client, auth, url="https://other.example")
    clash = await client.patch(
        f"/hooks/{other['id']}", json={"url": "https://same.example"}, headers=auth()
    )
    assert clash.status_code == 409
    assert error_of(clash)["field"] == "UpdateWebhookModel.url"
    # Another tenant may use the same URL, and so may this one once the first is deleted.
    elsewhere = await client.post(
        "/hooks", json={"events": [], "url": "https://same.example"}, headers=auth(tenant=35)
    )
    assert elsewhere.status_code == 200
    assert (await client.delete(f"/hooks/{first['id']}", headers=auth())).status_code == 200
    await create(client, auth, url="https://same.example")


async def test_tenants_never_see_each_other(client: httpx.AsyncClient, auth: Auth) -> None:
    mine = await create(client, auth, url="https://mine.example")
    theirs = await client.post(
        "/hooks", json={"events": [], "url": "https://theirs.example"}, headers=auth(tenant=35)
    )
    theirs_id = theirs.json()["id"]
    assert mine["id"] != theirs_id
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/hooks/{theirs_id}", headers=auth())
        assert response.status_code == 404
    patch = await client.patch(
        f"/hooks/{theirs_id}", json={"url": "https://stolen.example"}, headers=auth()
    )
    assert patch.status_code == 404
    listed = (await client.get("/hooks", headers=auth())).json()
    assert [hook["id"] for hook in listed["results"]] == [mine["id"]]
    still = await client.get(f"/hooks/{theirs_id}", headers=auth(tenant=35))
    assert still.json()["url"] == "https://theirs.example"
    assert still.json()["deleted_at"] is None


async def test_list_paging_and_deleted_filter(client: httpx.AsyncClient, auth: Auth) -> None:
    ids = [(await create(client, auth, url=f"https://h{i}.example"))["id"] for i in range(5)]
    await client.delete(f"/hooks/{ids[1]}", headers=auth())
    await client.delete(f"/hooks/{ids[3]}", headers=auth())

    page = (await client.get("/hooks?page_limit=2&page_index=2", headers=auth())).json()
    assert page["current_limit"] == 2
    assert page["current_page"] == 2
    assert page["total_count"] == 5
    assert page["total_pages"] == 3
    assert [hook["id"] for hook in page["results"]] == ids[2:4]

    deleted = (await client.get("/hooks?deleted=TRUE", headers=auth())).json()
    assert [hook["id"] for hook in deleted["results"]] == [ids[1], ids[3]]
    active = (await client.get("/hooks?deleted=0", headers=auth())).json()
    assert [hook["id"] for hook in active["results"]] == [ids[0], ids[2], ids[4]]
    beyond = (await client.get("/hooks?page_index=9", headers=auth())).json()
    assert beyond["results"] == []
    assert beyond["total_count"] == 5


@pytest.mark.parametrize(
    "query",
    [
        "page_limit=0",
        "page_limit=1001",
        "page_index=0",
        "page_index=10001",
        "page_limit=abc",
        "page_limit=1.5",
        "deleted=maybe",
        "colour=blue",
        "page_limit=1&page_limit=2",
    ],
)
async def test_bad_query_parameters_are_400(
    client: httpx.AsyncClient, auth: Auth, query: str
) -> None:
    response = await client.get(f"/hooks?{query}", headers=auth())
    assert response.status_code == 400
    assert error_of(response)["field"].startswith("QueryParameters.")


async def test_missing_hook_is_404_and_bad_id_is_400(client: httpx.AsyncClient, auth: Auth) -> None:
    missing = await client.get("/hooks/999", headers=auth())
    assert missing.status_code == 404
    assert error_of(missing)["field"] == "PathParameters.hook_id"
    bad = await client.get("/hooks/abc", headers=auth())
    assert bad.status_code == 400
    assert error_of(bad)["field"] == "PathParameters.hook_id"


async def test_unknown_path_and_method(client: httpx.AsyncClient, auth: Auth) -> None:
    unknown = await client.get("/nothing/here", headers=auth())
    assert unknown.status_code == 404
    error_of(unknown)
    put = await client.put("/hooks", json={}, headers=auth())
    assert put.status_code == 405
    assert put.headers["allow"] == "GET,POST"
    error_of(put)
    post_one = await client.post("/hooks/1", json={}, headers=auth())
    assert post_one.status_code == 405
    assert post_one.headers["allow"] == "GET,PATCH,DELETE"


async def test_options_needs_no_token(client: httpx.AsyncClient) -> None:
    for path, methods in (
        ("/hooks/", "GET,POST"),
        ("/hooks/7", "GET,PATCH,DELETE"),
        ("/tenants", "GET"),
    ):
        response = await client.options(path)
        assert response.status_code == 200
        assert response.headers["allow"] == methods
        assert response.headers["access-control-allow-methods"] == methods
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["content-type"] == "application/json"
        assert response.headers["content-length"] == str(len(response.content))


async def test_accept_without_json_is_406(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.get("/hooks", headers=auth(Accept="text/html"))
    assert response.status_code == 406
    error_of(response)
    ok = await client.get("/hooks", headers=auth(Accept="text/html, application/*;q=0.5"))
    assert ok.status_code == 200


async def test_body_on_get_is_400(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.request("GET", "/hooks", content=b'{"a": 1}', headers=auth())
    assert response.status_code == 400


@pytest.mark.parametrize("tenant_header", [None, "abc", "-1", "1.5", ""])
async def test_bad_tenant_header_is_400(
    client: httpx.AsyncClient, auth: Auth, tenant_header: str | None
) -> None:
    headers = auth()
    del headers["x-tenant-id"]
    if tenant_header is not None:
        headers["x-tenant-id"] = tenant_header
    response = await client.get("/hooks", headers=headers)
    assert response.status_code == 400
    assert error_of(response)["field"] == "StandardRequestHeadersModel.x-tenant-id"


async def test_tenant_not_granted_is_403(client: httpx.AsyncClient, auth: Auth) -> None:
    headers = auth()
    headers["x-tenant-id"] = "99"
    response = await client.get("/hooks", headers=headers)
    assert response.status_code == 403
    error_of(response)


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient, auth: Auth) -> None:
    rid = "e854d9af-6d40-4188-9d73-fc44111a2335"
    echoed = await client.get("/hooks", headers=auth(**{"x-request-id": rid}))
    assert echoed.headers["x-request-id"] == rid
    made = await client.get("/hooks", headers=auth())
    assert re.match(r"^[0-9a-f-]{36}$", made.headers["x-request-id"])
    assert made.headers["x-request-id"] != rid
    bad = await client.get("/hooks", headers=auth(**{"x-request-id": "not-a-uuid"}))
    assert bad.status_code == 400
    assert error_of(bad)["field"] == "StandardRequestHeadersModel.x-request-id"
    assert bad.headers["x-request-id"] != "not-a-uuid"


async def test_api_version_is_pinned_per_client(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    def headers(client_id: str, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token(client_id=client_id)}",
            "x-tenant-id": "34",
            **extra,
        }

    first = await client.get("/hooks", headers=headers("app-a"))
    assert first.headers["x-api-version"] == "2019/02/08"
    named = await client.get("/hooks", headers=headers("app-a", **{"x-api-version": "2021/11/04"}))
    assert named.headers["x-api-version"] == "2021/11/04"
    later = await client.get("/hooks", headers=headers("app-a"))
    assert later.headers["x-api-version"] == "2021/11/04"
    other = await client.get("/hooks", headers=headers("app-b"))
    assert other.headers["x-api-version"] == "2019/02/08"
    bad = await client.get("/hooks", headers=headers("app-a", **{"x-api-version": "2020/01/01"}))
    assert bad.status_code == 400
    assert error_of(bad)["field"] == "StandardRequestHeadersModel.x-api-version"
    # Errors found after the token (tenant checks) still carry the client's pinned version.
    no_tenant = await client.get("/hooks", headers={**headers("app-a"), "x-tenant-id": "x"})
    assert no_tenant.status_code == 400
    assert no_tenant.headers["x-api-version"] == "2021/11/04"
    other_tenant = await client.get("/hooks", headers={**headers("app-a"), "x-tenant-id": "99"})
    assert other_tenant.status_code == 403
    assert other_tenant.headers["x-api-version"] == "2021/11/04"


async def test_negative_tenant_id_is_explained(client: httpx.AsyncClient, auth: Auth) -> None:
    response = await client.get("/hooks", headers=auth(**{"x-tenant-id": "-1"}))
    assert response.status_code == 400
    detail = error_of(response)["detail"]
    assert "tenant id" in detail
    assert "without a sign" in detail


HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("path", "content", "field"),
    [
        (
            "/hooks",
            f'{{"events": [], "url": "https://a.example", "x": {HUGE}}}',
            "CreateWebhookModel",
        ),
        (
            "/hooks",
            f'{{"events": [], "url": "https://a.example", "x": -{HUGE}}}',
            "CreateWebhookModel",
        ),
        ("/events", f'{{"event": "Job", "data": {{"n": {HUGE}}}}}', "PublishEventModel"),
    ],
)
async def test_a_huge_integer_in_a_body_is_a_clear_400(
    client: httpx.AsyncClient, auth: Auth, path: str, content: str, field: str
) -> None:
    headers = auth(roles=["Admin"])
    response = await client.post(path, content=content.encode(), headers=headers)
    assert response.status_code == 400
    error = error_of(response)
    assert error["field"] == field
    assert "4300 digits" in error["detail"]
    assert "sys." not in error["detail"]


@pytest.mark.parametrize(
    "path",
    [
        f"/hooks?page_limit={HUGE}",
        f"/hooks?page_index={HUGE}",
        f"/hooks/{HUGE}",
        f"/hooks/{HUGE}/deliveries",
        f"/hooks/1/deliveries?page_limit={HUGE}",
    ],
)
async def test_a_huge_integer_in_a_path_or_query_is_400(
    client: httpx.AsyncClient, auth: Auth, path: str
) -> None:
    response = await client.get(path, headers=auth())
    assert response.status_code == 400
    assert "sys." not in error_of(response)["detail"]


async def test_page_parameters_may_have_leading_zeros(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    response = await client.get("/hooks?page_limit=0005", headers=auth())
    assert response.status_code == 200
    assert response.json()["current_limit"] == 5


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest", "169.254.169.254 is not a public address"),
        ("https://10.0.0.7:8443/hook", "10.0.0.7 is not a public address"),
        ("http://[fe80::1]/", "fe80::1 is not a public address"),
        ("http://[::ffff:10.1.2.3]/", "embeds 10.1.2.3"),
        ("http://2130706433/", "2130706433 is not a canonical IP address"),
    ],
)
async def test_a_url_naming_a_refused_address_is_400_at_create_and_update(
    client: httpx.AsyncClient, auth: Auth, url: str, reason: str
) -> None:
    created = await client.post("/hooks", json={"events": [], "url": url}, headers=auth())
    assert created.status_code == 400
    error = error_of(created)
    assert error["field"] == "CreateWebhookModel.url"
    assert reason in error["detail"]
    hook = await create(client, auth, url="https://a.example/")
    updated = await client.patch(f"/hooks/{hook['id']}", json={"url": url}, headers=auth())
    assert updated.status_code == 400
    error = error_of(updated)
    assert error["field"] == "UpdateWebhookModel.url"
    assert reason in error["detail"]
    listed = (await client.get("/hooks", headers=auth())).json()
    assert [h["url"] for h in listed["results"]] == ["https://a.example/"]


async def test_names_and_allowed_networks_pass_at_create(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    # Names are judged when a delivery resolves them; loopback is allowed in these tests.
    for url in ("http://metadata.internal/", "http://127.0.0.1:9797/", "http://[::1]:9797/"):
        await create(client, auth, url=url)


async def test_the_secret_rule_tells_the_lengths_that_pass(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    for secret in ("short", "a" * 271):
        body = {"events": [], "url": "https://a.example", "secret": secret}
        response = await client.post("/hooks", json=body, headers=auth())
        assert response.status_code == 400
        assert "12 to 268" in error_of(response)["detail"]
    for length in (12, 268):
        hook = await create(client, auth, url=f"https://{length}.example", secret="A" * length)
        assert hook["secret"] == "A" * length
    for length in (11, 269, 270):
        body = {"events": [], "url": "https://b.example", "secret": "A" * length}
        response = await client.post("/hooks", json=body, headers=auth())
        assert response.status_code == 400
