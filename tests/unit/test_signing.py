from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

import crohooks
from crohooks.delivery.signing import sign, sign_delivery
from crohooks.rendering import render_json

# Spec 3.1's test vector.
VECTOR_SECRET = "VGhlIGxhenkgYnJvd24gZG9n"
VECTOR_BODY = (
    b'{"data": {"hook_id": 1, "url": "http://127.0.0.1:9797/"}, '
    b'"delivery_id": "c86fefc0-cbb4-4c72-a530-4f80d09c877e", "event": "Ping", '
    b'"event_id": "0ebe3eb6-2e6a-4a21-b8a2-4db9bf9a67d4", "hook_id": 1, "tenant_id": 34, '
    b'"timestamp": "2022-08-20T01:45:52.000000"}'
)
VECTOR_DELIVERY_ID = "c86fefc0-cbb4-4c72-a530-4f80d09c877e"
VECTOR_TIMESTAMP = 1660959952


def vector_headers(**overrides: object) -> dict[str, str]:
    arguments: dict[str, object] = {
        "secret": VECTOR_SECRET,
        "delivery_id": VECTOR_DELIVERY_ID,
        "event": "Ping",
        "hook_id": 1,
        "timestamp": VECTOR_TIMESTAMP,
    }
    arguments.update(overrides)
    return sign_delivery(VECTOR_BODY, **arguments)  # type: ignore[arg-type]


def test_vector_body_is_the_one_json_rendering() -> None:
    payload = {
        "data": {"hook_id": 1, "url": "http://127.0.0.1:9797/"},
        "delivery_id": VECTOR_DELIVERY_ID,
        "event": "Ping",
        "event_id": "0ebe3eb6-2e6a-4a21-b8a2-4db9bf9a67d4",
        "hook_id": 1,
        "tenant_id": 34,
        "timestamp": "2022-08-20T01:45:52.000000",
    }
    assert render_json(payload) == VECTOR_BODY
    assert len(VECTOR_BODY) == 255


def test_render_json_sorts_keys_and_escapes_non_ascii() -> None:
    assert render_json({"b": [1, 2], "a": "é"}) == b'{"a": "\\u00e9", "b": [1, 2]}'


def test_spec_vector_headers_byte_for_byte() -> None:
    assert vector_headers() == {
        "Content-Type": "application/json",
        "User-Agent": f"crohooks/{crohooks.__version__}",
        "X-Cro-Event": "Ping",
        "X-Cro-Delivery": VECTOR_DELIVERY_ID,
        "X-Cro-Hook-Id": "1",
        "X-Cro-Signature": "sha1=9e5fd7b24b8134794d2c5e828c0c85ddaef10ac8",
        "X-Cro-Signature-256": (
            "sha256=8d6fff81f8553e7c3dbff25c454a970ae48fb51bd7359c83afcf1b44abda467b"
        ),
        "webhook-id": VECTOR_DELIVERY_ID,
        "webhook-timestamp": "1660959952",
        "webhook-signature": "v1,rA46/miohXLNSi6ow4cbuyHl1kDOzS3MK6zw3wwanX0=",
    }


def test_headers_come_in_a_stable_order() -> None:
    assert list(vector_headers()) == [
        "Content-Type",
        "User-Agent",
        "X-Cro-Event",
        "X-Cro-Delivery",
        "X-Cro-Hook-Id",
        "X-Cro-Signature",
        "X-Cro-Signature-256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ]


def test_standard_webhooks_library_verifies_a_fresh_signature() -> None:
    headers = vector_headers(timestamp=int(time.time()))

    assert Webhook(VECTOR_SECRET).verify(VECTOR_BODY, headers) == json.loads(VECTOR_BODY)


def test_standard_webhooks_library_rejects_a_tampered_body() -> None:
    headers = vector_headers(timestamp=int(time.time()))

    tampered = VECTOR_BODY.replace(b'"tenant_id": 34', b'"tenant_id": 35')

    with pytest.raises(WebhookVerificationError):
        Webhook(VECTOR_SECRET).verify(tampered, headers)


def test_standard_webhooks_library_rejects_another_secret() -> None:
    headers = vector_headers(timestamp=int(time.time()))

    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"some other secret").decode()).verify(VECTOR_BODY, headers)


def test_rotation_signs_with_current_then_previous_secrets() -> None:
    old_secret = base64.b64encode(b"the previous secret").decode()
    headers = vector_headers(timestamp=int(time.time()), previous_secrets=[old_secret])

    current, previous = headers["webhook-signature"].split(" ")
    assert (
        current == vector_headers(timestamp=int(headers["webhook-timestamp"]))["webhook-signature"]
    )
    assert previous.startswith("v1,")
    Webhook(VECTOR_SECRET).verify(VECTOR_BODY, headers)
    Webhook(old_secret).verify(VECTOR_BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"never a secret").decode()).verify(VECTOR_BODY, headers)


def test_rotation_leaves_the_github_style_signatures_to_the_current_secret() -> None:
    rotated = vector_headers(previous_secrets=["b2xkIHNlY3JldCBoZXJl"])

    assert rotated["X-Cro-Signature"] == "sha1=9e5fd7b24b8134794d2c5e828c0c85ddaef10ac8"
    assert rotated["X-Cro-Signature-256"] == vector_headers()["X-Cro-Signature-256"]


def test_a_previous_secret_equal_to_the_current_one_signs_once() -> None:
    headers = vector_headers(previous_secrets=[VECTOR_SECRET])

    assert headers["webhook-signature"] == "v1,rA46/miohXLNSi6ow4cbuyHl1kDOzS3MK6zw3wwanX0="


def test_signature_set_headers_match_sign_delivery() -> None:
    signatures = sign(
        VECTOR_BODY,
        secret=VECTOR_SECRET,
        delivery_id=VECTOR_DELIVERY_ID,
        timestamp=VECTOR_TIMESTAMP,
    )

    assert signatures.headers().items() <= vector_headers().items()


secrets = st.binary(min_size=1, max_size=64).map(lambda raw: base64.b64encode(raw).decode())
bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
).map(render_json)


@given(
    body=bodies,
    secret=secrets,
    previous=st.lists(secrets, max_size=3),
    delivery_id=st.uuids().map(str),
    hook_id=st.integers(min_value=1, max_value=2**31),
)
def test_every_signature_verifies_with_its_own_secret(
    body: bytes, secret: str, previous: list[str], delivery_id: str, hook_id: int
) -> None:
    now = int(time.time())
    headers = sign_delivery(
        body,
        secret=secret,
        previous_secrets=previous,
        delivery_id=delivery_id,
        event="Customer",
        hook_id=hook_id,
        timestamp=now,
    )

    key = secret.encode()
    assert headers["X-Cro-Signature"] == "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()
    assert headers["X-Cro-Signature-256"] == (
        "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    )
    for live_secret in [secret, *previous]:
        Webhook(live_secret).verify(body, headers)
    assert len(headers["webhook-signature"].split(" ")) == len({secret, *previous})


@given(body=bodies, secret=secrets, other=secrets)
def test_no_signature_verifies_with_a_different_secret(
    body: bytes, secret: str, other: str
) -> None:
    headers = sign_delivery(
        body, secret=secret, delivery_id="d", event="Job", hook_id=1, timestamp=int(time.time())
    )

    if base64.b64decode(other) != base64.b64decode(secret):
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(body, headers)
