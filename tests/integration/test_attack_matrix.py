"""Every endpoint against every way in: bad tokens, each role, foreign tenants and ids.

Token and role checks come before any database work, so they run on SQLite only;
tenant crossing is answered by the store, so it runs on both databases. Whatever the
answer, it never holds the caller's token, nor anything of another tenant's hook.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from crohooks.auth.principal import Role
from crohooks.model import NewEvent, Tenant
from crohooks.services import Services
from crohooks.settings import Settings
from tests.conftest import TEST_JWT_SECRET, api_client, make_settings
from tests.support.delivery import deliver_until_idle
from tests.support.http import serving
from tests.support.receiver import unused_port

TENANT = 34
OTHER = 35
OWN_SECRET = "T3duVGVuYW50U2VjcmV0MzQ="
FOREIGN_SECRET = "Rm9yZWlnblRlbmFudFNlY3JldDM1"
FOREIGN_PATH = "/tenant-35-private-path"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    body: dict[str, Any] | None
    roles: frozenset[str] | None
    """``None``: any authenticated caller, even one without a role."""
    success: int

    @property
    def tenant_scoped(self) -> bool:
        return self.path != "/tenants"

    def url(self, hook: int, delivery: str) -> str:
        return self.path.format(hook=hook, delivery=delivery)


HOOKS = frozenset({"Admin", "Dispatcher"})
PUBLISH = frozenset({"Admin", "System"})
ENDPOINTS = (
    Endpoint("POST", "/hooks", {"events": ["Job"], "url": "https://new.example/"}, HOOKS, 200),
    Endpoint("GET", "/hooks", None, HOOKS, 200),
    Endpoint("GET", "/hooks/{hook}", None, HOOKS, 200),
    Endpoint("PATCH", "/hooks/{hook}", {"url": "http://127.0.0.1:9/patched"}, HOOKS, 200),
    Endpoint("GET", "/hooks/{hook}/ping", None, HOOKS, 200),
    Endpoint("GET", "/tenants", None, None, 200),
    Endpoint("POST", "/events", {"event": "Job", "data": {"n": 1}}, PUBLISH, 202),
    Endpoint("POST", "/events/batch", {"events": [{"event": "Job", "data": {}}]}, PUBLISH, 202),
    Endpoint("GET", "/hooks/{hook}/deliveries", None, HOOKS, 200),
    Endpoint("GET", "/hooks/{hook}/deliveries/{delivery}", None, HOOKS, 200),
    Endpoint("POST", "/hooks/{hook}/deliveries/{delivery}/redeliver", None, HOOKS, 202),
    Endpoint("POST", "/hooks/{hook}/recover", {"since": "2020-01-01T00:00:00"}, HOOKS, 202),
    Endpoint("GET", "/hooks/{hook}/settings", None, HOOKS, 200),
    Endpoint(
        "PATCH", "/hooks/{hook}/settings", {"max_in_flight": 2, "ordering": "latest"}, HOOKS, 200
    ),
    Endpoint("POST", "/hooks/{hook}/disable", {"reason": "attack"}, HOOKS, 200),
    Endpoint("POST", "/hooks/{hook}/enable", None, HOOKS, 200),
    Endpoint("DELETE", "/hooks/{hook}", None, HOOKS, 200),
)
"""In an order that succeeds for an allowed role: deletion last."""


@dataclass(frozen=True)
class World:
    hook: int
    delivery: str
    foreign_hook: int
    foreign_delivery: str
    foreign_url: str


def _tenant(tenant_id: int) -> Tenant:
    return Tenant(
        id=tenant_id,
        name=f"Tenant {tenant_id}",
        code=f"T{tenant_id}",
        created_on=datetime(2022, 8, 20, tzinfo=UTC),
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Failed deliveries fail for good at once, so redeliver has something to redo."""
    return make_settings(database_url, retry_schedule="")


@pytest.fixture
async def world(services: Services) -> World:
    """Tenants 34 and 35, each with a hook on a closed loopback port and a failed delivery."""
    port = unused_port()
    for tenant_id in (TENANT, OTHER):
        await services.tenants.add(_tenant(tenant_id))
    own = await services.hooks.create(
        TENANT, url=f"http://127.0.0.1:{port}/own", events=("Job",), secret=OWN_SECRET, field="url"
    )
    foreign = await services.hooks.create(
        OTHER,
        url=f"http://127.0.0.1:{port}{FOREIGN_PATH}",
        events=("Job",),
        secret=FOREIGN_SECRET,
        field="url",
    )
    for tenant_id in (TENANT, OTHER):
        await services.intake.publish(tenant_id, [NewEvent("Job", {"tenant": tenant_id})])
    await deliver_until_idle(services)
    [own_delivery], _ = await services.delivery_log.list_page(
        TENANT, own.id, status="failed", limit=10, offset=0
    )
    [foreign_delivery], _ = await services.delivery_log.list_page(
        OTHER, foreign.id, status="failed", limit=10, offset=0
    )
    return World(own.id, own_delivery.id, foreign.id, foreign_delivery.id, foreign.url)


def _leaks(response: httpx.Response, token: str | None) -> list[str]:
    """What of the caller's token or of tenant 35's hook the response holds."""
    seen = response.text + json.dumps(dict(response.headers))
    secrets = [FOREIGN_SECRET, FOREIGN_PATH, *([token] if token else [])]
    return [secret for secret in secrets if secret in seen]


async def _call(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    headers: dict[str, str],
    *,
    hook: int,
    delivery: str,
) -> httpx.Response:
    return await client.request(
        endpoint.method,
        endpoint.url(hook, delivery),
        json=endpoint.body,
        headers={"Content-Type": "application/json", **headers},
    )


# -- tokens ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(claims: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    """An HS256 JWT by hand: PyJWT refuses to use a PEM public key as an HMAC key."""
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "iss": issuer,
        "sub": "attacker",
        "roles": ["Admin", "System"],
        "tenants": [TENANT],
        "exp": int(time.time()) + 600,
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def local_attacks(settings: Settings, key: rsa.RSAPrivateKey) -> dict[str, str | None]:
    """Authorization header values that must all be a 401, in local (HS256) mode."""
    issuer = settings.local_issuer
    secret = TEST_JWT_SECRET.encode()

    def bearer(token: str) -> str:
        return f"Bearer {token}"

    head, _, signature = _hs256(_claims(issuer), secret).split(".")
    forged = _b64(json.dumps(_claims(issuer, tenants=[OTHER])).encode())

    return {
        "no token": None,
        "empty": "",
        "basic": "Basic YWRtaW46YWRtaW4=",
        "bearer alone": "Bearer",
        "not a jwt": "Bearer not-a-jwt",
        "two spaces": "Bearer  " + _hs256(_claims(issuer), secret),
        "too long": bearer(_hs256(_claims(issuer, pad="x" * 300), secret)),
        "expired": bearer(_hs256(_claims(issuer, exp=int(time.time()) - 5), secret)),
        "no exp": bearer(_hs256(_claims(issuer, exp=None), secret)),
        "no sub": bearer(_hs256(_claims(issuer, sub=None), secret)),
        "bad signature": bearer(_hs256(_claims(issuer), b"another-secret-that-is-long-enough")),
        "tampered claims": bearer(f"{head}.{forged}.{signature}"),
        "alg none": bearer(
            _b64(b'{"alg":"none"}') + "." + _b64(json.dumps(_claims(issuer)).encode()) + "."
        ),
        "HS256 keyed with an RSA public key": bearer(_hs256(_claims(issuer), _public_pem(key))),
        "RS256 instead of HS256": bearer(jwt.encode(_claims(issuer), key, algorithm="RS256")),
        "wrong issuer": bearer(_hs256(_claims("https://evil.example/"), secret)),
        "unexpected audience": bearer(_hs256(_claims(issuer, aud="someone-else"), secret)),
    }


ATTACK_NAMES = (
    "no token",
    "empty",
    "basic",
    "bearer alone",
    "not a jwt",
    "two spaces",
    "too long",
    "expired",
    "no exp",
    "no sub",
    "bad signature",
    "tampered claims",
    "alg none",
    "HS256 keyed with an RSA public key",
    "RS256 instead of HS256",
    "wrong issuer",
    "unexpected audience",
)


@SQLITE_ONLY
@pytest.mark.parametrize("attack", ATTACK_NAMES)
async def test_every_endpoint_refuses_a_bad_token(
    client: httpx.AsyncClient,
    settings: Settings,
    world: World,
    rsa_key: rsa.RSAPrivateKey,
    attack: str,
) -> None:
    authorization = local_attacks(settings, rsa_key)[attack]
    headers = {"x-tenant-id": str(TENANT)}
    if authorization is not None:
        headers["Authorization"] = authorization
    token = authorization.split(" ", 1)[1] if authorization and " " in authorization else None
    for endpoint in ENDPOINTS:
        response = await _call(client, endpoint, headers, hook=world.hook, delivery=world.delivery)
        assert response.status_code == 401, (endpoint.method, endpoint.path, response.text)
        error = response.json()
        assert set(error) == {"detail", "explanation", "field"}
        assert error["field"] == "StandardRequestHeadersModel.authorization"
        assert not _leaks(response, token), (endpoint.path, _leaks(response, token))


# -- roles -------------------------------------------------------------------------------


@SQLITE_ONLY
@pytest.mark.parametrize("role", [*(role.value for role in Role), None], ids=str)
async def test_each_role_on_each_endpoint(
    client: httpx.AsyncClient,
    token: Callable[..., str],
    world: World,
    role: str | None,
) -> None:
    bearer = token(roles=[role] if role else [])
    headers = {"Authorization": f"Bearer {bearer}", "x-tenant-id": str(TENANT)}
    for endpoint in ENDPOINTS:
        response = await _call(client, endpoint, headers, hook=world.hook, delivery=world.delivery)
        allowed = endpoint.roles is None or role in endpoint.roles
        expected = endpoint.success if allowed else 403
        assert response.status_code == expected, (endpoint.method, endpoint.path, response.text)
        assert not _leaks(response, bearer)
        if expected == 403:
            assert response.json()["detail"].startswith("this operation needs one of the roles")


# -- tenants -----------------------------------------------------------------------------


async def test_a_tenant_not_granted_is_403_everywhere(
    client: httpx.AsyncClient, token: Callable[..., str], services: Services, world: World
) -> None:
    for tenants, asked in (([TENANT], OTHER), ([], TENANT), ([TENANT], 10**17)):
        bearer = token(roles=["Admin", "System"], tenants=tenants)
        headers = {"Authorization": f"Bearer {bearer}", "x-tenant-id": str(asked)}
        for endpoint in ENDPOINTS:
            response = await _call(
                client, endpoint, headers, hook=world.foreign_hook, delivery=world.foreign_delivery
            )
            assert not _leaks(response, bearer), endpoint.path
            if not endpoint.tenant_scoped:
                assert response.status_code == 200
                assert OTHER not in [t["id"] for t in response.json()["results"]]
                continue
            assert response.status_code == 403, (endpoint.method, endpoint.path, response.text)
            assert response.json()["field"] == "StandardRequestHeadersModel.x-tenant-id"
    foreign = await services.hooks.get(OTHER, world.foreign_hook)
    assert foreign.deleted_at is None
    assert foreign.events == ("Job",)


async def test_another_tenants_ids_are_404_and_untouched(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], services: Services, world: World
) -> None:
    """A foreign id is answered exactly like an id that does not exist: no existence oracle."""
    headers = auth(roles=["Admin", "System"])
    token = headers["Authorization"].split()[1]
    missing_hook, missing_delivery = world.foreign_hook + 1000, str(uuid.uuid4())
    foreign_and_missing = [
        ((world.foreign_hook, world.delivery), (missing_hook, world.delivery)),
        ((world.foreign_hook, world.foreign_delivery), (missing_hook, missing_delivery)),
        ((world.hook, world.foreign_delivery), (world.hook, missing_delivery)),
    ]
    for endpoint in ENDPOINTS:
        if "{hook}" not in endpoint.path:
            continue
        for (hook, delivery), (other_hook, other_delivery) in foreign_and_missing:
            if hook == world.hook and "{delivery}" not in endpoint.path:
                continue
            response = await _call(client, endpoint, headers, hook=hook, delivery=delivery)
            assert response.status_code == 404, (endpoint.method, endpoint.path, response.text)
            assert not _leaks(response, token)
            missing = await _call(
                client, endpoint, headers, hook=other_hook, delivery=other_delivery
            )
            assert missing.status_code == 404
            assert response.json() == json.loads(
                missing.text.replace(str(other_hook), str(hook)).replace(other_delivery, delivery)
            )
    foreign = await services.hooks.get(OTHER, world.foreign_hook)
    assert foreign.deleted_at is None
    assert foreign.url == world.foreign_url
    controls = await services.hook_settings.get(OTHER, world.foreign_hook)
    assert (controls.disabled_at, controls.max_in_flight, controls.ordering) == (None, None, "all")
    assert foreign.last_http_success is None
    foreign_log, _ = await services.delivery_log.list_page(
        OTHER, world.foreign_hook, status=None, limit=10, offset=0
    )
    assert [(d.id, d.status, d.attempts) for d in foreign_log] == [
        (world.foreign_delivery, "failed", 1)
    ]


async def test_own_lists_and_publishing_never_reach_another_tenant(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], services: Services, world: World
) -> None:
    headers = auth(roles=["Admin", "System"])
    for path in ("/hooks", "/hooks?deleted=false", f"/hooks/{world.hook}/deliveries", "/tenants"):
        response = await client.get(path, headers=headers)
        assert response.status_code == 200
        assert not _leaks(response, None), path
        assert world.foreign_delivery not in response.text
    published = await client.post("/events", json={"event": "Job", "data": {}}, headers=headers)
    assert published.json()["hook_count"] == 1
    _, foreign_total = await services.delivery_log.list_page(
        OTHER, world.foreign_hook, status=None, limit=10, offset=0
    )
    assert foreign_total == 1
    padded = await client.get("/hooks", headers={**headers, "x-tenant-id": f" {OTHER} "})
    assert padded.status_code == 403


# -- IdP tokens: real HS256/RS256 confusion --------------------------------------------------

ISSUER = "https://idp.example.test/"
AUDIENCE = "crohooks-api"


@pytest.fixture
async def jwks_url(rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[str]:
    jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    keys = {"keys": [{**jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"}]}

    async def serve(request: web.Request) -> web.Response:
        return web.json_response(keys)

    app = web.Application()
    app.router.add_get("/jwks.json", serve)
    async with serving(app) as base_url:
        yield base_url + "/jwks.json"


@pytest.fixture
def jwks_database(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "jwks.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
async def jwks_client(jwks_url: str, jwks_database: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=jwks_database,
        auth_mode="jwks",
        jwks_url=jwks_url,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        authorization_max_length=4096,
    )
    services = Services.build(settings)
    try:
        async with api_client(services) as client:
            yield client
    finally:
        await services.aclose()


def _idp_claims(**overrides: Any) -> dict[str, Any]:
    expires = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    return _claims(ISSUER, **({"aud": AUDIENCE, "exp": expires} | overrides))


def jwks_attacks(key: rsa.RSAPrivateKey) -> dict[str, str]:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = {"kid": "rsa-1"}
    return {
        "HS256 keyed with the published RSA key": _hs256(
            _idp_claims(), _public_pem(key), {"alg": "HS256", "typ": "JWT", **kid}
        ),
        "HS256 keyed with the published JWK": _hs256(
            _idp_claims(), RSAAlgorithm.to_jwk(key.public_key()).encode(), {"alg": "HS256", **kid}
        ),
        "alg none": _b64(json.dumps({"alg": "none", **kid}).encode())
        + "."
        + _b64(json.dumps(_idp_claims()).encode())
        + ".",
        "stranger key, published kid": jwt.encode(
            _idp_claims(), stranger, algorithm="RS256", headers=kid
        ),
        "unknown kid": jwt.encode(
            _idp_claims(), stranger, algorithm="RS256", headers={"kid": "rsa-2"}
        ),
        "expired": jwt.encode(
            _idp_claims(exp=int(time.time()) - 120), key, algorithm="RS256", headers=kid
        ),
        "wrong issuer": jwt.encode(
            _idp_claims(iss="https://evil.example/"), key, algorithm="RS256", headers=kid
        ),
        "wrong audience": jwt.encode(
            _idp_claims(aud="another-api"), key, algorithm="RS256", headers=kid
        ),
        "no audience": jwt.encode(_idp_claims(aud=None), key, algorithm="RS256", headers=kid),
    }


async def test_idp_tokens_refused_on_every_endpoint(
    jwks_client: httpx.AsyncClient, rsa_key: rsa.RSAPrivateKey
) -> None:
    hook, delivery = 1, str(uuid.uuid4())
    valid = jwt.encode(_idp_claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    control = await jwks_client.get(
        "/hooks", headers={"Authorization": f"Bearer {valid}", "x-tenant-id": str(TENANT)}
    )
    assert control.status_code == 200, control.text
    for attack, bearer in jwks_attacks(rsa_key).items():
        headers = {"Authorization": f"Bearer {bearer}", "x-tenant-id": str(TENANT)}
        for endpoint in ENDPOINTS:
            response = await _call(jwks_client, endpoint, headers, hook=hook, delivery=delivery)
            assert response.status_code == 401, (attack, endpoint.path, response.text)
            assert bearer not in response.text
