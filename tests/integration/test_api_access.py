"""Who may call what: roles, tenants and token failures, as the API answers them."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import jwt
import pytest

from crohooks.auth.principal import Role
from crohooks.clock import utc_now
from crohooks.model import Tenant
from crohooks.services import Services
from crohooks.settings import Settings
from tests.conftest import TEST_JWT_SECRET

HOOK_ENDPOINTS = [
    ("GET", "/hooks", None),
    ("POST", "/hooks", {"events": [], "url": "https://role.example"}),
    ("GET", "/hooks/1", None),
    ("PATCH", "/hooks/1", {"url": "https://role2.example"}),
    ("DELETE", "/hooks/1", None),
]
ALLOWED = {Role.ADMIN, Role.DISPATCHER}


async def _seed_hook(client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    response = await client.post(
        "/hooks",
        json={"events": ["Job"], "url": "https://seed.example"},
        headers={"Authorization": f"Bearer {token(roles=['Admin'])}", "x-tenant-id": "34"},
    )
    assert response.status_code == 200


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("method", "path", "body"), HOOK_ENDPOINTS)
async def test_every_role_against_every_hooks_endpoint(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    role: Role,
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    await _seed_hook(client, token)
    headers = {"Authorization": f"Bearer {token(roles=[role.value])}", "x-tenant-id": "34"}
    response = await client.request(method, path, json=body, headers=headers)
    if role in ALLOWED:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403, response.text
        assert set(response.json()) == {"detail", "explanation", "field"}
    if method != "GET":
        listed = await client.get(
            "/hooks", headers={"Authorization": f"Bearer {token()}", "x-tenant-id": "34"}
        )
        hooks = listed.json()["results"]
        changed = (
            len(hooks) != 1
            or hooks[0]["url"] != "https://seed.example"
            or hooks[0]["deleted_at"] is not None
        )
        assert changed == (role in ALLOWED)


def _raw_token(settings: Settings, **claims: object) -> str:
    payload: dict[str, object] = {
        "iss": settings.local_issuer,
        "sub": "someone",
        "roles": ["Admin"],
        "tenants": [34],
        "exp": int(time.time()) + 600,
    }
    payload.update(claims)
    return jwt.encode(payload, TEST_JWT_SECRET, algorithm="HS256")


def _alg_none_token() -> str:
    payload = {"sub": "x", "roles": ["Admin"], "tenants": [34], "exp": int(time.time()) + 600}
    return jwt.encode(payload, key=None, algorithm="none")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not a token",
        "Bearer " + "a" * 300 + ".b",
        "Bearer abc.def",
    ],
)
async def test_missing_or_malformed_authorization_is_401(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"x-tenant-id": "34"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.get("/hooks", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"detail", "explanation", "field"}
    if authorization:
        assert authorization.split(" ", 1)[-1] not in body["detail"] or len(authorization) < 8


async def test_rejected_tokens_are_401(client: httpx.AsyncClient, settings: Settings) -> None:
    expired = _raw_token(settings, exp=int(time.time()) - 10)
    other_key = jwt.encode(
        {
            "iss": settings.local_issuer,
            "sub": "x",
            "roles": ["Admin"],
            "tenants": [34],
            "exp": int(time.time()) + 600,
        },
        "another-secret-key-that-is-long-enough",
        algorithm="HS256",
    )
    wrong_issuer = _raw_token(settings, iss="someone-else")
    no_exp = jwt.encode(
        {"iss": settings.local_issuer, "sub": "x", "roles": ["Admin"], "tenants": [34]},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    for bad in (expired, other_key, wrong_issuer, no_exp, _alg_none_token()):
        response = await client.get(
            "/hooks", headers={"Authorization": f"Bearer {bad}", "x-tenant-id": "34"}
        )
        assert response.status_code == 401, bad
        assert bad not in response.text
    good = _raw_token(settings)
    ok = await client.get(
        "/hooks", headers={"Authorization": f"Bearer {good}", "x-tenant-id": "34"}
    )
    assert ok.status_code == 200


async def test_tenants_lists_granted_records(
    client: httpx.AsyncClient, services: Services, token: Callable[..., str]
) -> None:
    created = datetime(2022, 8, 20, 1, 45, 38, 518903, tzinfo=UTC)
    for tenant_id, name in ((34, "Demo Courier"), (35, "Other"), (36, "Third")):
        await services.tenants.add(
            Tenant(
                id=tenant_id,
                name=name,
                code=f"T{tenant_id}",
                address="1 Main St",
                city="Sequim",
                state="WA",
                zip="98382",
                email=None,
                phone=None,
                is_active=True,
                truck_limit=None if tenant_id != 36 else 12,
                created_on=created,
            )
        )
    headers = {"Authorization": f"Bearer {token(roles=['Driver'], tenants=[34, 36, 99])}"}
    response = await client.get("/tenants/", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["total_count"] == 2
    assert [t["id"] for t in body["results"]] == [34, 36]
    assert body["results"][0] == {
        "address": "1 Main St",
        "city": "Sequim",
        "code": "T34",
        "created_on": "2022-08-20T01:45:38.518903",
        "email": None,
        "id": 34,
        "is_active": True,
        "name": "Demo Courier",
        "phone": None,
        "state": "WA",
        "truck_limit": None,
        "zip": "98382",
    }
    assert body["results"][1]["truck_limit"] == 12
    paged = await client.get("/tenants?page_limit=1&page_index=2", headers=headers)
    assert [t["id"] for t in paged.json()["results"]] == [36]
    assert paged.json()["total_pages"] == 2
    assert (await client.get("/tenants")).status_code == 401
    assert utc_now() > created
