from __future__ import annotations

import base64
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import pytest
from aiohttp import web

from crohooks.auth.introspection import IntrospectionVerifier
from crohooks.auth.principal import Principal, Role
from crohooks.auth.verifier import authenticate, build_verifier
from crohooks.errors import ConfigurationError, Unauthenticated
from crohooks.settings import Settings
from tests.support.http import serving

CLIENT_ID = "crohooks"
CLIENT_SECRET = "intro:spection/secret+&%"


@dataclass
class IdP:
    """A minimal RFC 7662 endpoint: known tokens answer their record, others are inactive."""

    url: str = ""
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: int = 0
    status: int = 200


@pytest.fixture
async def idp() -> AsyncIterator[IdP]:
    state = IdP()

    def client_authenticated(request: web.Request) -> bool:
        """As Hydra does: Basic credentials, each part form-decoded (RFC 6749 2.3.1)."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        return (unquote_plus(client_id), unquote_plus(secret)) == (CLIENT_ID, CLIENT_SECRET)

    async def introspect(request: web.Request) -> web.Response:
        state.calls += 1
        if not client_authenticated(request):
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        if form.get("token_type_hint") != "access_token" or "token" not in form:
            return web.json_response({"error": "invalid_request"}, status=400)
        if state.status != 200:
            return web.Response(status=state.status, text="unavailable")
        return web.json_response(state.tokens.get(str(form["token"]), {"active": False}))

    app = web.Application()
    app.router.add_post("/oauth2/introspect", introspect)
    async with serving(app) as base_url:
        state.url = base_url + "/oauth2/introspect"
        yield state


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_mode": "introspection",
        "introspection_url": url,
        "introspection_client_id": CLIENT_ID,
        "introspection_client_secret": CLIENT_SECRET,
        "authorization_max_length": 1024,
        "database_url": "sqlite:///:memory:",
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def verifier(idp: IdP) -> AsyncIterator[IntrospectionVerifier]:
    verifier = IntrospectionVerifier(settings_for(idp.url))
    yield verifier
    await verifier.aclose()


def record(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "active": True,
        "sub": "user-9",
        "client_id": "dispatch-app",
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
        "iss": "https://idp.example.test/",
        "aud": ["crohooks-api"],
        "token_type": "Bearer",
        "token_use": "access_token",
        "roles": ["Admin"],
        "tenants": [12],
    }
    return {k: v for k, v in (values | overrides).items() if v is not None}


async def refusal(verifier: IntrospectionVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    assert caught.value.field == "StandardRequestHeadersModel.authorization"
    return str(caught.value.detail)


async def test_active_token(idp: IdP, verifier: IntrospectionVerifier) -> None:
    idp.tokens["ory_at_abc.def"] = record()

    principal = await authenticate(verifier, "Bearer ory_at_abc.def")

    assert principal == Principal(
        subject="user-9",
        roles=frozenset({Role.ADMIN}),
        tenants=frozenset({12}),
        client="dispatch-app",
    )


async def test_hydra_ext_claims(idp: IdP, verifier: IntrospectionVerifier) -> None:
    idp.tokens["ory_at_ext.tok"] = record(
        roles=None, tenants=None, ext={"roles": ["Dispatcher", "Nope"], "tenants": ["5", 6]}
    )

    principal = await verifier.verify("ory_at_ext.tok")

    assert principal.roles == frozenset({Role.DISPATCHER})
    assert principal.tenants == frozenset({5, 6})


async def test_top_level_claims_win_over_ext(idp: IdP, verifier: IntrospectionVerifier) -> None:
    idp.tokens["both.tok"] = record(ext={"roles": ["Driver"], "tenants": [99]})

    principal = await verifier.verify("both.tok")

    assert principal.roles == frozenset({Role.ADMIN})
    assert principal.tenants == frozenset({12})


async def test_inactive_token(verifier: IntrospectionVerifier) -> None:
    assert await refusal(verifier, "unknown.token") == "token is not active"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"active": "true"}, "token is not active"),
        ({"exp": int(time.time()) - 5}, "token has expired"),
        ({"exp": None}, "token has no 'exp' claim"),
        ({"exp": "tomorrow"}, "token has no 'exp' claim"),
        ({"token_use": "refresh_token"}, "token is not an access token"),
        ({"sub": None}, "token has no 'sub' claim"),
    ],
)
async def test_refused_answers(
    idp: IdP, verifier: IntrospectionVerifier, overrides: dict[str, Any], detail: str
) -> None:
    idp.tokens["some.token"] = record(**overrides)

    assert await refusal(verifier, "some.token") == detail


async def test_positive_answers_are_cached(idp: IdP, verifier: IntrospectionVerifier) -> None:
    idp.tokens["cached.token"] = record()

    for _ in range(3):
        assert (await verifier.verify("cached.token")).subject == "user-9"

    assert idp.calls == 1


async def test_negative_answers_are_not_cached(idp: IdP, verifier: IntrospectionVerifier) -> None:
    await refusal(verifier, "later.token")
    idp.tokens["later.token"] = record()

    assert (await verifier.verify("later.token")).subject == "user-9"
    assert idp.calls == 2


async def test_cache_can_be_turned_off(idp: IdP) -> None:
    idp.tokens["fresh.token"] = record()
    verifier = IntrospectionVerifier(settings_for(idp.url, introspection_cache_seconds=0))
    try:
        await verifier.verify("fresh.token")
        del idp.tokens["fresh.token"]

        assert await refusal(verifier, "fresh.token") == "token is not active"
    finally:
        await verifier.aclose()


async def test_wrong_client_secret(idp: IdP) -> None:
    idp.tokens["good.token"] = record()
    verifier = IntrospectionVerifier(settings_for(idp.url, introspection_client_secret="wrong"))
    try:
        detail = await refusal(verifier, "good.token")
    finally:
        await verifier.aclose()

    assert detail == "could not check the token with the identity provider"


async def test_idp_error(idp: IdP, verifier: IntrospectionVerifier) -> None:
    idp.status = 503

    detail = await refusal(verifier, "any.token")

    assert detail == "could not check the token with the identity provider"


async def test_idp_down() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = IntrospectionVerifier(settings_for(f"http://127.0.0.1:{port}/introspect"))
    try:
        detail = await refusal(verifier, "any.token")
    finally:
        await verifier.aclose()

    assert detail == "could not check the token with the identity provider"


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"jwt_audience": "crohooks-api"}, None),
        ({"jwt_audience": "other-api"}, "token audience is not accepted"),
        ({"jwt_issuer": "https://idp.example.test/"}, None),
        ({"jwt_issuer": "https://evil.example.test/"}, "token issuer is not accepted"),
    ],
)
async def test_configured_issuer_and_audience(
    idp: IdP, overrides: dict[str, Any], detail: str | None
) -> None:
    idp.tokens["aud.token"] = record()
    verifier = IntrospectionVerifier(settings_for(idp.url, **overrides))
    try:
        if detail is None:
            assert (await verifier.verify("aud.token")).subject == "user-9"
        else:
            assert await refusal(verifier, "aud.token") == detail
    finally:
        await verifier.aclose()


async def test_build_verifier_picks_introspection(idp: IdP) -> None:
    verifier = build_verifier(settings_for(idp.url))
    try:
        assert isinstance(verifier, IntrospectionVerifier)
        assert verifier.max_header_length == 1024
    finally:
        await verifier.aclose()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"introspection_url": None}, "CROHOOKS_INTROSPECTION_URL must be"),
        ({"introspection_url": "ftp://idp/introspect"}, "CROHOOKS_INTROSPECTION_URL must be"),
        ({"introspection_client_secret": None}, "or neither"),
    ],
)
def test_bad_configuration(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        IntrospectionVerifier(settings_for("http://127.0.0.1:9/introspect", **overrides))
