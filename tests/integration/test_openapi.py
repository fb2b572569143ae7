"""``/openapi.json``: CRO's model names, every status, and real responses that match it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st

from crohooks.api.models import CreateWebhookModel, PublishEventModel
from crohooks.api.openapi import IDEMPOTENCY_KEY_SCHEMA, OPERATIONS, URL_SCHEMA
from crohooks.services import Services
from tests.support.delivery import deliver_until_idle
from tests.support.receiver import Receiver

Auth = Callable[..., dict[str, str]]
CRO_MODELS = {
    "CreateWebhookModel",
    "UpdateWebhookModel",
    "WebhookModel",
    "WebhookListModel",
    "WebhookPingResultModel",
    "TenantModel",
    "TenantListModel",
    "ErrorModel",
    "PublishEventModel",
    "PublishBatchModel",
    "RecoverModel",
    "DeliveryModel",
    "DeliveryListModel",
    "DeliveryDetailModel",
}


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method.lower()]
    return found


def _parameters(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    parameters = document["components"]["parameters"]
    return {
        parameters[ref.rsplit("/", 1)[1]]["name"]: parameters[ref.rsplit("/", 1)[1]]
        for ref in (item["$ref"] for item in operation["parameters"])
    }


async def test_served_with_the_wire_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"x-request-id": "0" * 32})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "00000000-0000-0000-0000-000000000000"
    assert response.headers["x-api-version"] == "2019/02/08"
    assert response.headers["access-control-allow-origin"] == "*"
    assert int(response.headers["content-length"]) == len(response.content)


async def test_models_carry_cro_names(client: httpx.AsyncClient) -> None:
    schemas = (await _document(client))["components"]["schemas"]
    assert set(schemas) >= CRO_MODELS
    assert schemas["ErrorModel"]["required"] == ["detail", "explanation", "field"]
    assert set(schemas["WebhookModel"]["required"]) == {
        "deleted_at",
        "events",
        "id",
        "last_http_fail",
        "last_http_success",
        "secret",
        "url",
    }
    assert schemas["UpdateWebhookModel"]["required"] == ["url"]
    assert schemas["CreateWebhookModel"]["additionalProperties"] is False
    secret = schemas["CreateWebhookModel"]["properties"]["secret"]
    assert secret["type"] == "string"  # absent or a string: null is refused
    assert "HTTPValidationError" not in schemas


async def test_every_route_is_documented_with_its_statuses(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert documented == {(op.method, op.path) for op in OPERATIONS}
    for op in OPERATIONS:
        operation = _operation(document, op.method, op.path)
        statuses = set(operation["responses"])
        assert str(op.status) in statuses
        assert {"400", "401", "406", "413", "500", "503"} <= statuses, op.path
        assert "422" not in statuses
        if op.path != "/tenants":
            assert {"403", "429"} <= statuses, op.path
            assert _parameters(document, operation)["x-tenant-id"]["required"] is True
        if "{hook_id}" in op.path:
            assert "404" in statuses
        assert {"x-api-version", "x-request-id"} <= set(_parameters(document, operation))
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    # A database outage is a 503 the client is told when to retry.
    unavailable = document["components"]["responses"]["ServiceUnavailable"]
    assert "Retry-After" in unavailable["headers"]


async def test_paging_and_filters(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    hooks = _parameters(document, _operation(document, "GET", "/hooks"))
    assert hooks["page_limit"]["schema"].items() >= {"minimum": 1, "maximum": 1000}.items()
    assert hooks["page_index"]["schema"].items() >= {"minimum": 1, "maximum": 10000}.items()
    assert hooks["deleted"]["in"] == "query"
    deliveries = _parameters(document, _operation(document, "GET", "/hooks/{hook_id}/deliveries"))
    assert deliveries["status"]["schema"]["enum"] == [
        "pending",
        "succeeded",
        "failed",
        "cancelled",
        "superseded",
    ]
    assert set(_parameters(document, _operation(document, "GET", "/tenants"))) == {
        "page_limit",
        "page_index",
        "x-api-version",
        "x-request-id",
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def test_real_responses_match_the_document(
    client: httpx.AsyncClient, services: Services, auth: Auth, receiver: Receiver
) -> None:
    """One real call per operation and per kind of answer, each checked by schemathesis."""
    schema = schemathesis.openapi.from_dict(await _document(client))
    admin = auth(roles=["Admin", "System"])
    seen: list[tuple[str, str, int]] = []

    async def call(method: str, template: str, path: str, status: int, **kwargs: Any) -> Any:
        kwargs.setdefault("headers", admin)
        response = await client.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        assert str(status) in _operation(schema.raw_schema, method, template)["responses"]
        schema[template][method].validate_response(response)
        seen.append((method, template, status))
        return response.json()

    hook = await call(
        "POST", "/hooks", "/hooks", 200, json={"events": ["Job"], "url": receiver.url}
    )
    hook_path = f"/hooks/{hook['id']}"
    await call("POST", "/hooks", "/hooks", 409, json={"events": [], "url": receiver.url})
    await call("POST", "/hooks", "/hooks", 400, json={"events": [], "url": "ftp://x"})
    await call("POST", "/hooks", "/hooks", 401, json={}, headers={})
    await call("POST", "/hooks", "/hooks", 403, json={}, headers=auth(roles=["Driver"]))
    await call("GET", "/hooks", "/hooks?page_limit=1", 200)
    await call("GET", "/hooks", "/hooks", 406, headers={**admin, "Accept": "text/html"})
    await call("GET", "/hooks/{hook_id}", hook_path, 200)
    await call("GET", "/hooks/{hook_id}", "/hooks/999", 404)
    await call("GET", "/hooks/{hook_id}/ping", f"{hook_path}/ping", 200)
    published = await call("POST", "/events", "/events", 202, json={"event": "Job", "data": {}})
    await call(
        "POST",
        "/events/batch",
        "/events/batch",
        202,
        json={"events": [{"event": "Truck", "data": {"n": 1}}]},
    )
    await call("POST", "/events", "/events", 413, content=b" " * (2 << 20), headers=admin)
    await deliver_until_idle(services)
    page = await call(
        "GET", "/hooks/{hook_id}/deliveries", f"{hook_path}/deliveries?status=succeeded", 200
    )
    [delivery] = [d for d in page["results"] if d["event_id"] == published["event_id"]]
    detail_template = "/hooks/{hook_id}/deliveries/{delivery_id}"
    detail_path = f"{hook_path}/deliveries/{delivery['delivery_id']}"
    detail = await call("GET", detail_template, detail_path, 200)
    assert detail["attempts"][0]["response_headers"]
    redeliver = detail_template + "/redeliver"
    await call("POST", redeliver, f"{detail_path}/redeliver", 202)
    await call("POST", redeliver, f"{detail_path}/redeliver", 409)
    recover = "/hooks/{hook_id}/recover"
    await call("POST", recover, f"{hook_path}/recover", 202, json={"since": "2020-01-01"})
    await call("PATCH", "/hooks/{hook_id}", hook_path, 200, json={"url": receiver.url})
    settings = "/hooks/{hook_id}/settings"
    await call("GET", settings, f"{hook_path}/settings", 200)
    await call(
        "PATCH",
        settings,
        f"{hook_path}/settings",
        200,
        json={
            "headers": {"X-Api-Key": "k-0123456789abcdef"},
            "auth": {"type": "basic", "username": "crohooks", "password": "pa55-word-0123456"},
            "max_in_flight": 2,
            "ordering": "latest",
        },
    )
    await call(
        "PATCH",
        settings,
        f"{hook_path}/settings",
        200,
        json={"auth": {"type": "bearer", "token": "t"}},
    )
    await call("PATCH", settings, f"{hook_path}/settings", 400, json={"headers": {"Host": "x"}})
    await call("POST", "/hooks/{hook_id}/disable", f"{hook_path}/disable", 200)
    await call(
        "POST", "/hooks/{hook_id}/disable", f"{hook_path}/disable", 200, json={"reason": "fixing"}
    )
    await call("POST", "/hooks/{hook_id}/enable", f"{hook_path}/enable", 200)
    await call("DELETE", "/hooks/{hook_id}", hook_path, 200)
    await call("DELETE", "/hooks/{hook_id}", hook_path, 409)
    await call("POST", "/hooks/{hook_id}/enable", f"{hook_path}/enable", 409)
    await call("PATCH", settings, f"{hook_path}/settings", 409, json={"max_in_flight": 1})
    await call("GET", "/hooks/{hook_id}/ping", f"{hook_path}/ping", 404)
    await call("GET", "/tenants", "/tenants", 200)
    links = "/portal/links"
    await call("POST", links, links, 200, json={"role": "Dispatcher", "ttl_seconds": 60})
    await call("POST", links, links, 400, json={"role": "Driver"})
    await call("POST", links, links, 403, json={}, headers=auth(roles=["Dispatcher"]))

    assert {(method, template) for method, template, _ in seen} == {
        (op.method, op.path) for op in OPERATIONS
    }


def _field(document: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    field: dict[str, Any] = document["components"]["schemas"][model]["properties"][name]
    return field


def _documented(field: dict[str, Any], value: str) -> bool:
    """Whether a string satisfies a documented string field.

    The patterns are anchored at both ends, so JSON Schema's search (ECMA-262, whose ``$``
    is the very end) agrees with Python's ``fullmatch`` (Python's ``$`` would also match
    before a final newline).
    """
    return (
        field.get("minLength", 0) <= len(value) <= field.get("maxLength", len(value))
        and re.fullmatch(field["pattern"], value) is not None
    )


HOOK_URLS = [
    pytest.param("https://" + "a" * 63 + ".example/", 200, id="label-of-63"),
    pytest.param("https://" + "a" * 64 + ".example/", 400, id="label-of-64"),
    pytest.param("https://a.example." + "b" * 64, 400, id="last-label-of-64"),
    pytest.param("https://a..example/", 400, id="empty-label"),
    pytest.param("https://.a.example/", 400, id="leading-dot"),
    pytest.param("https://a.example.:65535/x?y#z", 200, id="trailing-dot-and-top-port"),
    pytest.param("https://a.example:0/", 400, id="port-0"),
    pytest.param("https://a.example:65536/", 400, id="port-65536"),
    pytest.param("https://a.example:http/", 400, id="port-not-a-number"),
    # Loopback: an address these tests' settings allow (a refused literal is a 400).
    pytest.param("https://[::1]:8443/hook", 200, id="ipv6"),
    pytest.param("https://[::ffff:127.0.0.1]/", 200, id="ipv6-with-ipv4"),
    pytest.param("https://[192.0.2.1]/", 400, id="ipv4-in-brackets"),
    pytest.param("https://[2001:db8::1/", 400, id="unclosed-bracket"),
    pytest.param("http://93.184.215.14/hook", 200, id="ipv4"),
]


@pytest.mark.parametrize(("url", "status"), HOOK_URLS)
async def test_the_documented_hook_url_is_what_the_server_takes(
    client: httpx.AsyncClient, auth: Auth, url: str, status: int
) -> None:
    field = _field(await _document(client), "CreateWebhookModel", "url")
    response = await client.post(
        "/hooks", json={"events": ["Job"], "url": url}, headers=auth(roles=["Admin"])
    )
    assert response.status_code == status, response.text
    assert _documented(field, url) is (status == 200)


@pytest.mark.parametrize(
    ("key", "status"),
    [("order-4711", 202), ("a\u0000b", 400), ("\u0000", 400)],
    ids=["plain", "nul-inside", "nul-alone"],
)
async def test_the_documented_idempotency_key_is_what_the_server_takes(
    client: httpx.AsyncClient, auth: Auth, key: str, status: int
) -> None:
    field = _field(await _document(client), "PublishEventModel", "idempotency_key")
    response = await client.post(
        "/events",
        json={"event": "Job", "data": {}, "idempotency_key": key},
        headers=auth(roles=["System"]),
    )
    assert response.status_code == status, response.text
    assert _documented(field, key) is (status == 202)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(
    url=st.from_regex(URL_SCHEMA["pattern"], fullmatch=True).filter(
        lambda url: _documented(URL_SCHEMA, url)
    )
)
def test_every_documented_hook_url_passes_the_server_s_checks(url: str) -> None:
    """What the body model of POST /hooks runs on the field: the server's own check."""
    CreateWebhookModel.model_validate({"events": [], "url": url})


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    key=st.from_regex(IDEMPOTENCY_KEY_SCHEMA["pattern"], fullmatch=True).filter(
        lambda key: _documented(IDEMPOTENCY_KEY_SCHEMA, key)
    )
)
def test_every_documented_idempotency_key_passes_the_server_s_checks(key: str) -> None:
    PublishEventModel.model_validate({"event": "Job", "data": {}, "idempotency_key": key})
