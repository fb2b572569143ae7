from __future__ import annotations

import pytest

from crohooks.auth.header import AUTHORIZATION_FIELD, token_from_authorization
from crohooks.errors import Unauthenticated

JWT = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEiLCJleHAiOjE3MDAwMDAwMDB9"
    ".Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXU"
)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer x.y.z", "x.y.z"),
        ("bearer x.y.z", "x.y.z"),
        ("BEARER x.y.z", "x.y.z"),
        ("Bearer abc.def", "abc.def"),
        ("Bearer ory_at_Zx9-aB.cD_e=", "ory_at_Zx9-aB.cD_e="),
        (f"Bearer {JWT}", JWT),
        ("Bearer a.b.c+d/e=", "a.b.c+d/e="),
    ],
)
def test_accepts_bearer_tokens(value: str, token: str) -> None:
    assert token_from_authorization(value, max_length=256) == token


def test_keeps_cro_unescaped_dots() -> None:
    """CRO's dots match any character, so a token without a dot passes the header rule."""
    assert token_from_authorization("Bearer abc", max_length=256) == "abc"


@pytest.mark.parametrize("value", [None, ""])
def test_rejects_missing_header(value: str | None) -> None:
    with pytest.raises(Unauthenticated) as caught:
        token_from_authorization(value, max_length=256)
    assert caught.value.detail == "the Authorization header is required"
    assert caught.value.field == AUTHORIZATION_FIELD


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNzd29yZA==", "Token x.y.z", "Bearerx.y.z", "x.y.z", "Bearer"],
)
def test_rejects_other_schemes(value: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        token_from_authorization(value, max_length=256)
    assert caught.value.detail == "the Authorization header must be 'Bearer <token>'"
    assert caught.value.field == AUTHORIZATION_FIELD


@pytest.mark.parametrize(
    "value",
    [
        "Bearer ",
        "Bearer ab",
        "Bearer  x.y.z",
        "Bearer a!c.d!f",
        "Bearer to ken with spaces",
        "Bearer x.y.z\n",
        "Bearer x.y.z\r\nX-Injected: 1",
        "Bearer \u212aey.abc.def",
        "Bearer x.y.z;",
    ],
)
def test_rejects_malformed_tokens(value: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        token_from_authorization(value, max_length=256)
    assert caught.value.detail == "the bearer token is malformed"
    assert caught.value.field == AUTHORIZATION_FIELD


def test_length_limit_counts_the_whole_value() -> None:
    at_limit = "Bearer a.b." + "c" * (256 - len("Bearer a.b."))
    assert len(at_limit) == 256
    assert token_from_authorization(at_limit, max_length=256) == at_limit[7:]

    with pytest.raises(Unauthenticated) as caught:
        token_from_authorization(at_limit + "c", max_length=256)
    assert caught.value.detail == "the Authorization header is longer than 256 characters"


def test_longer_limit_for_external_tokens() -> None:
    value = "Bearer a.b." + "c" * 1000
    assert token_from_authorization(value, max_length=4096) == value[7:]


def test_errors_never_echo_the_token() -> None:
    secret = "s3cr3t-t0ken.v4lue.$"
    for value in (f"Bearer {secret}", f"Basic {secret}", f"Bearer {secret}" * 40):
        with pytest.raises(Unauthenticated) as caught:
            token_from_authorization(value, max_length=256)
        assert "s3cr3t" not in str(caught.value.detail)
