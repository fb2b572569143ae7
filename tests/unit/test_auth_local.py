from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from crohooks.auth.header import token_from_authorization
from crohooks.auth.local import LocalVerifier, mint_local_token
from crohooks.auth.principal import Principal, Role
from crohooks.auth.verifier import authenticate, build_verifier
from crohooks.errors import ConfigurationError, Unauthenticated
from crohooks.settings import Settings

SECRET = "local-test-secret-0123456789abcdefghijklmnop"
OTHER_SECRET = "another-secret-0123456789abcdefghijklmnopqr"


@pytest.fixture
def settings() -> Settings:
    return Settings(auth_mode="local", jwt_secret=SECRET, database_url="sqlite:///:memory:")


@pytest.fixture
def verifier(settings: Settings) -> LocalVerifier:
    return LocalVerifier(settings)


def in_an_hour() -> int:
    return int((datetime.now(UTC) + timedelta(hours=1)).timestamp())


def hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def payload_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    padded = segment + "=" * (-len(segment) % 4)
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return decoded


async def refusal(verifier: LocalVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as caught:
        await verifier.verify(token)
    assert caught.value.field == "StandardRequestHeadersModel.authorization"
    return str(caught.value.detail)


async def test_minted_token_round_trips(settings: Settings, verifier: LocalVerifier) -> None:
    token = mint_local_token(
        settings, subject="ada", roles=["Admin", "Dispatcher"], tenants=[1, 42], client_id="cli"
    )

    principal = await authenticate(verifier, f"Bearer {token}")

    assert principal == Principal(
        subject="ada",
        roles=frozenset({Role.ADMIN, Role.DISPATCHER}),
        tenants=frozenset({1, 42}),
        client="cli",
    )


async def test_client_defaults_to_subject(settings: Settings, verifier: LocalVerifier) -> None:
    token = mint_local_token(settings, subject="backend", roles=["System"], tenants=[7])

    principal = await verifier.verify(token)

    assert principal.client == "backend"
    assert principal.roles == frozenset({Role.SYSTEM})


async def test_build_verifier_defaults_to_local_with_cro_limit(settings: Settings) -> None:
    verifier = build_verifier(settings)
    token = mint_local_token(settings, subject="ada", roles=["Admin"], tenants=[1])

    assert verifier.max_header_length == 256
    assert (await verifier.verify(token)).subject == "ada"
    await verifier.aclose()


def test_minted_token_is_compact(settings: Settings) -> None:
    token = mint_local_token(settings, subject="ada", roles=["Admin"], tenants=[1])

    assert jwt.get_unverified_header(token) == {"alg": "HS256"}
    claims = payload_of(token)
    assert claims["iss"] == "crohooks"
    assert "iat" in claims
    assert claims["exp"] - claims["iat"] == 3600


def test_minted_token_with_several_roles_and_tenants_fits_cro_header(settings: Settings) -> None:
    token = mint_local_token(
        settings,
        subject="ada",
        roles=["Admin", "Dispatcher", "CrmUser"],
        tenants=[1, 2, 3, 1001, 4242],
        client_id="cli",
    )

    header = f"Bearer {token}"
    assert len(header) <= 256
    assert token_from_authorization(header, max_length=256) == token


def test_iat_is_dropped_before_giving_up(settings: Settings) -> None:
    tenants: list[int] = []
    token = mint_local_token(settings, subject="ada", roles=["Admin"], tenants=tenants)
    while "iat" in payload_of(token):
        tenants.append(len(tenants) + 1)
        token = mint_local_token(settings, subject="ada", roles=["Admin"], tenants=tenants)

    assert len(f"Bearer {token}") <= 256
    assert "exp" in payload_of(token)


def test_too_many_tenants_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match=r"^token would be \d+ characters; "):
        mint_local_token(settings, subject="ada", roles=["Admin"], tenants=list(range(1000, 1040)))


def test_unknown_role_is_refused_when_minting(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown role 'Wizard'"):
        mint_local_token(settings, subject="ada", roles=["Admin", "Wizard"], tenants=[1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": ""},
        {"ttl_seconds": 0},
        {"tenants": [True]},
        {"tenants": [-1]},
        {"now": datetime(2030, 1, 1)},
    ],
)
def test_bad_mint_arguments_are_refused(settings: Settings, kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"subject": "ada", "roles": ["Admin"], "tenants": [1]} | kwargs
    with pytest.raises(ValueError):  # noqa: PT011
        mint_local_token(settings, **arguments)


def test_short_secret_is_refused_at_start() -> None:
    settings = Settings(jwt_secret="too-short", database_url="sqlite:///:memory:")
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        build_verifier(settings)


async def test_expired_token(settings: Settings, verifier: LocalVerifier) -> None:
    token = mint_local_token(
        settings,
        subject="ada",
        roles=["Admin"],
        tenants=[1],
        ttl_seconds=60,
        now=datetime.now(UTC) - timedelta(hours=2),
    )

    assert await refusal(verifier, token) == "token has expired"


async def test_alg_none(verifier: LocalVerifier) -> None:
    claims = {"sub": "ada", "roles": ["Admin"], "iss": "crohooks", "exp": in_an_hour()}
    token = jwt.encode(claims, "", algorithm="none")

    assert await refusal(verifier, token) == "token algorithm is not allowed"


async def test_other_key(verifier: LocalVerifier) -> None:
    token = hs256({"sub": "ada", "iss": "crohooks", "exp": in_an_hour()}, OTHER_SECRET)

    assert await refusal(verifier, token) == "token signature is invalid"


async def test_missing_exp(verifier: LocalVerifier) -> None:
    token = hs256({"sub": "ada", "roles": ["Admin"], "iss": "crohooks"})

    assert await refusal(verifier, token) == "token has no 'exp' claim"


async def test_other_issuer(verifier: LocalVerifier) -> None:
    token = hs256({"sub": "ada", "iss": "someone-else", "exp": in_an_hour()})

    assert await refusal(verifier, token) == "token issuer is not accepted"


async def test_missing_subject(verifier: LocalVerifier) -> None:
    token = hs256({"roles": ["Admin"], "iss": "crohooks", "exp": in_an_hour()})

    assert await refusal(verifier, token) == "token has no 'sub' claim"


@pytest.mark.parametrize("token", ["abc.def", "a.b.c", "x" * 60, "eyJhbGciOiJIUzI1NiJ9.e30."])
async def test_garbage(verifier: LocalVerifier, token: str) -> None:
    assert token not in await refusal(verifier, token)


async def test_unknown_roles_and_bad_tenants_are_dropped(verifier: LocalVerifier) -> None:
    token = hs256(
        {
            "sub": "ada",
            "roles": ["Admin", "Wizard", "admin", 5, None],
            "tenants": [7, "8", "x", True, -1, 7.0, "-9", "\u0661", 2**64],
            "iss": "crohooks",
            "exp": in_an_hour(),
        }
    )

    principal = await verifier.verify(token)

    assert principal.roles == frozenset({Role.ADMIN})
    assert principal.tenants == frozenset({7, 8})


async def test_client_falls_back_to_azp(verifier: LocalVerifier) -> None:
    token = hs256({"sub": "ada", "azp": "spa", "iss": "crohooks", "exp": in_an_hour()})

    principal = await verifier.verify(token)

    assert principal.client == "spa"
    assert principal.roles == frozenset()
    assert principal.tenants == frozenset()


async def test_configured_claim_names(settings: Settings) -> None:
    renamed = settings.model_copy(
        update={"claim_roles": "https://crohooks/roles", "claim_tenants": "tid"}
    )
    verifier = LocalVerifier(renamed)
    token = mint_local_token(renamed, subject="ada", roles=["Dispatcher"], tenants=[5])

    principal = await verifier.verify(token)

    assert "https://crohooks/roles" in payload_of(token)
    assert principal.roles == frozenset({Role.DISPATCHER})
    assert principal.tenants == frozenset({5})


async def test_a_remembered_token_still_expires(
    settings: Settings, verifier: LocalVerifier
) -> None:
    """Verified tokens are remembered, but never past their own ``exp``."""
    token = hs256({"sub": "carol", "iss": settings.local_issuer, "exp": int(time.time()) + 2})
    assert (await verifier.verify(token)).subject == "carol"
    assert (await verifier.verify(token)).subject == "carol"
    await asyncio.sleep(max(0.0, payload_of(token)["exp"] - time.time()) + 0.05)
    assert await refusal(verifier, token) == "token has expired"


async def test_remembering_one_token_does_not_admit_another(
    settings: Settings, verifier: LocalVerifier
) -> None:
    good = hs256({"sub": "dave", "iss": settings.local_issuer, "exp": in_an_hour()})
    await verifier.verify(good)
    forged = good[: good.rindex(".") + 1] + "A" * len(good.split(".")[2])
    assert await refusal(verifier, forged) == "token signature is invalid"
