from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from crohooks.auth.jwks import JwksVerifier
from crohooks.auth.principal import Role
from crohooks.auth.verifier import authenticate, build_verifier
from crohooks.errors import ConfigurationError, Unauthenticated
from crohooks.settings import Settings
from tests.support.http import serving

ISSUER = "https://idp.example.test/"
AUDIENCE = "crohooks-api"


@dataclass
class Keys:
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    ed_key: ed25519.Ed25519PrivateKey
    stranger: rsa.RSAPrivateKey


@dataclass
class JwksServer:
    url: str
    jwks: dict[str, Any]
    status: int = 200
    fetches: int = 0
    paths: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec_key=ec.generate_private_key(ec.SECP256R1()),
        ed_key=ed25519.Ed25519PrivateKey.generate(),
        stranger=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def published(keys: Keys) -> dict[str, Any]:
    rsa_jwk = RSAAlgorithm.to_jwk(keys.rsa_key.public_key(), as_dict=True)
    ec_jwk = ECAlgorithm.to_jwk(keys.ec_key.public_key(), as_dict=True)
    ed_jwk = OKPAlgorithm.to_jwk(keys.ed_key.public_key(), as_dict=True)
    return {
        "keys": [
            {**rsa_jwk, "kid": "rsa-1", "use": "sig", "alg": "RS256"},
            {**ec_jwk, "kid": "ec-1", "use": "sig"},
            {**ed_jwk, "kid": "ed-1"},
        ]
    }


@pytest.fixture
async def server(keys: Keys) -> AsyncIterator[JwksServer]:
    state = JwksServer(url="", jwks=published(keys))

    async def jwks(request: web.Request) -> web.Response:
        state.fetches += 1
        if state.status != 200:
            return web.Response(status=state.status, text="down")
        return web.json_response(state.jwks)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    async with serving(app) as base_url:
        state.url = base_url + "/.well-known/jwks.json"
        yield state


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_mode": "jwks",
        "jwks_url": url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "authorization_max_length": 4096,
        "database_url": "sqlite:///:memory:",
    }
    return Settings(**(values | overrides))


@pytest.fixture
async def verifier(server: JwksServer) -> AsyncIterator[JwksVerifier]:
    verifier = JwksVerifier(settings_for(server.url))
    yield verifier
    await verifier.aclose()


def claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "sub": "user-7",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "iat": int(now.timestamp()),
        "azp": "dispatch-spa",
        "roles": ["Dispatcher", "Pilot"],
        "tenants": [3, "4"],
    }
    return {k: v for k, v in (values | overrides).items() if v is not None}


def rs256(keys: Keys, kid: str = "rsa-1", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), keys.rsa_key, algorithm="RS256", headers={"kid": kid})


async def refusal(verifier: JwksVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    assert caught.value.field == "StandardRequestHeadersModel.authorization"
    return str(caught.value.detail)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_rs256_token(keys: Keys, verifier: JwksVerifier) -> None:
    token = rs256(keys)

    principal = await authenticate(verifier, f"Bearer {token}")

    assert principal.subject == "user-7"
    assert principal.roles == frozenset({Role.DISPATCHER})
    assert principal.tenants == frozenset({3, 4})
    assert principal.client == "dispatch-spa"
    assert verifier.max_header_length == 4096


async def test_es256_token_with_key_alg_inferred(keys: Keys, verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), keys.ec_key, algorithm="ES256", headers={"kid": "ec-1"})

    assert (await verifier.verify(token)).subject == "user-7"


async def test_eddsa_token(keys: Keys, verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), keys.ed_key, algorithm="EdDSA", headers={"kid": "ed-1"})

    assert (await verifier.verify(token)).subject == "user-7"


async def test_audience_may_be_a_list(keys: Keys, verifier: JwksVerifier) -> None:
    token = rs256(keys, aud=["account", AUDIENCE])

    assert (await verifier.verify(token)).subject == "user-7"


async def test_keys_are_cached(keys: Keys, server: JwksServer, verifier: JwksVerifier) -> None:
    for _ in range(3):
        await verifier.verify(rs256(keys))

    assert server.fetches == 1


@pytest.mark.parametrize(
    ("overrides", "detail"),
    [
        ({"aud": "someone-else"}, "token audience is not accepted"),
        ({"aud": None}, "token has no 'aud' claim"),
        ({"iss": "https://evil.example.test/"}, "token issuer is not accepted"),
        ({"exp": 1_600_000_000}, "token has expired"),
        ({"exp": None}, "token has no 'exp' claim"),
        ({"sub": None}, "token has no 'sub' claim"),
    ],
)
async def test_refused_claims(
    keys: Keys, verifier: JwksVerifier, overrides: dict[str, Any], detail: str
) -> None:
    assert await refusal(verifier, rs256(keys, **overrides)) == detail


async def test_unknown_kid(keys: Keys, verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), keys.stranger, algorithm="RS256", headers={"kid": "retired"})

    assert await refusal(verifier, token) == "token signing key is unknown"


async def test_known_kid_with_a_stranger_key(keys: Keys, verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), keys.stranger, algorithm="RS256", headers={"kid": "rsa-1"})

    assert await refusal(verifier, token) == "token signature is invalid"


async def test_missing_kid(keys: Keys, verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), keys.rsa_key, algorithm="RS256")

    assert await refusal(verifier, token) == "token has no key id ('kid')"


async def test_hs256_signed_with_the_public_key(
    keys: Keys, server: JwksServer, verifier: JwksVerifier
) -> None:
    """The classic confusion: HMAC keyed with the RSA public key anyone can download."""
    public_pem = keys.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"

    assert await refusal(verifier, token) == "token algorithm is not allowed"
    assert server.fetches == 0


async def test_algorithm_must_match_the_key(keys: Keys, verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), keys.ec_key, algorithm="ES256", headers={"kid": "rsa-1"})

    assert await refusal(verifier, token) == "token algorithm is not allowed"


async def test_alg_none(verifier: JwksVerifier) -> None:
    token = jwt.encode(claims(), "", algorithm="none", headers={"kid": "rsa-1"})

    assert await refusal(verifier, token) == "token algorithm is not allowed"


@pytest.mark.parametrize("token", ["abc.def", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"])
async def test_garbage(verifier: JwksVerifier, token: str) -> None:
    assert token not in await refusal(verifier, token)


async def test_server_error(keys: Keys, server: JwksServer, verifier: JwksVerifier) -> None:
    server.status = 503

    assert await refusal(verifier, rs256(keys)) == "could not fetch signing keys"


async def test_server_down(keys: Keys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = JwksVerifier(settings_for(f"http://127.0.0.1:{port}/jwks.json"))

    assert await refusal(verifier, rs256(keys)) == "could not fetch signing keys"


async def test_no_usable_keys(keys: Keys, server: JwksServer, verifier: JwksVerifier) -> None:
    server.jwks = {"keys": []}

    assert await refusal(verifier, rs256(keys)) == "could not fetch signing keys"


async def test_build_verifier_picks_jwks(server: JwksServer) -> None:
    verifier = build_verifier(settings_for(server.url, authorization_max_length=2048))

    assert isinstance(verifier, JwksVerifier)
    assert verifier.max_header_length == 2048


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"jwt_issuer": None}, "CROHOOKS_JWT_ISSUER is required"),
        ({"jwt_audience": None}, "CROHOOKS_JWT_AUDIENCE is required"),
        ({"jwks_url": None}, "CROHOOKS_JWKS_URL is required"),
        ({"jwks_url": "file:///etc/passwd"}, "must be an http or https URL"),
        ({"jwt_algorithms": ("RS256", "HS256")}, "not HS256"),
        ({"jwt_algorithms": ("none",)}, "not none"),
        ({"jwt_algorithms": ()}, "at least one algorithm"),
    ],
)
def test_bad_configuration(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        JwksVerifier(settings_for("http://127.0.0.1:9/jwks.json", **overrides))
