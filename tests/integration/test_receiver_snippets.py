"""The receiver snippets of docs/receivers/ verify what crohooks really sends.

A real OutboundClient POSTs a signed delivery to a real receiver on loopback; each
snippet then runs as a subprocess on the body and headers the receiver recorded.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pytest

from crohooks.delivery.outbound import OutboundClient
from crohooks.delivery.signing import sign_delivery
from crohooks.rendering import render_json
from crohooks.settings import Settings
from tests.support.receiver import ReceivedRequest, Receiver, loopback_only_connections

DOCS = Path(__file__).resolve().parents[2] / "docs" / "receivers"
SECRET = "bm90LWEtcmVhbC1ob29rLXNlY3JldA=="
PREVIOUS_SECRET = "dGhlLXNlY3JldC1iZWZvcmUtcm90YXRpb24="
UNRELATED_SECRET = "c29tZWJvZHkgZWxzZSdzIHNlY3JldA=="
DELIVERY_ID = "3b241101-e2bb-4255-8caf-4136c566a962"
NODE = shutil.which("node")


@dataclass(frozen=True)
class Verifier:
    name: str
    command: Callable[[str, ReceivedRequest], list[str]]
    scheme: Literal["cro", "standard"]
    needs_node: bool = False


def _header(request: ReceivedRequest, name: str) -> str:
    value = request.header(name)
    assert value is not None, f"the delivery lacks {name}"
    return value


def _standard_headers(request: ReceivedRequest) -> list[str]:
    return [
        _header(request, "webhook-id"),
        _header(request, "webhook-timestamp"),
        _header(request, "webhook-signature"),
    ]


VERIFIERS = [
    Verifier(
        "python-hmac-sha256",
        lambda secret, request: [
            sys.executable,
            str(DOCS / "verify_hmac.py"),
            secret,
            _header(request, "X-Cro-Signature-256"),
        ],
        scheme="cro",
    ),
    Verifier(
        "python-hmac-sha1",
        lambda secret, request: [
            sys.executable,
            str(DOCS / "verify_hmac.py"),
            secret,
            _header(request, "X-Cro-Signature"),
        ],
        scheme="cro",
    ),
    Verifier(
        "python-standardwebhooks",
        lambda secret, request: [
            sys.executable,
            str(DOCS / "verify_standardwebhooks.py"),
            secret,
            *_standard_headers(request),
        ],
        scheme="standard",
    ),
    Verifier(
        "node-cro-sha256",
        lambda secret, request: [
            NODE or "node",
            str(DOCS / "verify.js"),
            "cro",
            secret,
            _header(request, "X-Cro-Signature-256"),
        ],
        scheme="cro",
        needs_node=True,
    ),
    Verifier(
        "node-cro-sha1",
        lambda secret, request: [
            NODE or "node",
            str(DOCS / "verify.js"),
            "cro",
            secret,
            _header(request, "X-Cro-Signature"),
        ],
        scheme="cro",
        needs_node=True,
    ),
    Verifier(
        "node-standard",
        lambda secret, request: [
            NODE or "node",
            str(DOCS / "verify.js"),
            "standard",
            secret,
            *_standard_headers(request),
        ],
        scheme="standard",
        needs_node=True,
    ),
]


def _params(verifiers: list[Verifier]) -> list[object]:
    needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
    return [
        pytest.param(verifier, id=verifier.name, marks=[needs_node] if verifier.needs_node else [])
        for verifier in verifiers
    ]


EVERY_VERIFIER = _params(VERIFIERS)
STANDARD_WEBHOOKS_VERIFIERS = _params([v for v in VERIFIERS if v.scheme == "standard"])


async def deliver(*, timestamp: int) -> ReceivedRequest:
    """POST a signed delivery (during a secret rotation) and return it as received."""
    settings = Settings(allowed_networks="127.0.0.0/8")
    with loopback_only_connections():
        async with Receiver() as receiver, OutboundClient(settings) as client:
            body = render_json(
                {
                    "data": {"id": 118, "name": "Ünïcode Haulage Ltd", "tags": ["a", "b"]},
                    "delivery_id": DELIVERY_ID,
                    "event": "Customer",
                    "event_id": "8f14e45f-ceea-467f-a9b8-2e2c1a6a9c01",
                    "hook_id": 42,
                    "tenant_id": 34,
                    "timestamp": "2024-05-01T12:00:00.000000",
                }
            )
            headers = sign_delivery(
                body,
                secret=SECRET,
                previous_secrets=[PREVIOUS_SECRET],
                delivery_id=DELIVERY_ID,
                event="Customer",
                hook_id=42,
                timestamp=timestamp,
            )
            response = await client.post(receiver.url, body, headers, timeout=5)
            assert response.status == 200
            [received] = receiver.requests
            return received


@pytest.fixture
async def delivery() -> ReceivedRequest:
    return await deliver(timestamp=int(time.time()))


async def exit_code(command: list[str], body: bytes) -> int:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            _, errors = await process.communicate(body)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    assert process.returncode in (0, 1), errors.decode(errors="replace")
    return process.returncode


@pytest.mark.parametrize("verifier", EVERY_VERIFIER)
async def test_a_real_delivery_verifies(verifier: Verifier, delivery: ReceivedRequest) -> None:
    assert await exit_code(verifier.command(SECRET, delivery), delivery.body) == 0


@pytest.mark.parametrize("verifier", EVERY_VERIFIER)
async def test_a_tampered_body_does_not_verify(
    verifier: Verifier, delivery: ReceivedRequest
) -> None:
    tampered = delivery.body.replace(b'"tenant_id": 34', b'"tenant_id": 35')

    assert tampered != delivery.body
    assert await exit_code(verifier.command(SECRET, delivery), tampered) == 1


@pytest.mark.parametrize("verifier", EVERY_VERIFIER)
async def test_another_secret_does_not_verify(
    verifier: Verifier, delivery: ReceivedRequest
) -> None:
    assert await exit_code(verifier.command(UNRELATED_SECRET, delivery), delivery.body) == 1


@pytest.mark.parametrize("verifier", EVERY_VERIFIER)
async def test_the_previous_secret_verifies_only_standard_webhooks(
    verifier: Verifier, delivery: ReceivedRequest
) -> None:
    # During a rotation the previous secret signs webhook-signature only (spec 3.4).
    expected = 0 if verifier.scheme == "standard" else 1

    assert await exit_code(verifier.command(PREVIOUS_SECRET, delivery), delivery.body) == expected


@pytest.mark.parametrize("verifier", STANDARD_WEBHOOKS_VERIFIERS)
async def test_standard_webhooks_verifiers_refuse_a_stale_timestamp(verifier: Verifier) -> None:
    stale = await deliver(timestamp=int(time.time()) - 10 * 60)

    assert await exit_code(verifier.command(SECRET, stale), stale.body) == 1


@pytest.mark.parametrize("verifier", STANDARD_WEBHOOKS_VERIFIERS)
async def test_a_forged_timestamp_does_not_verify(
    verifier: Verifier, delivery: ReceivedRequest
) -> None:
    moved = str(int(_header(delivery, "webhook-timestamp")) + 1)
    forged = replace(
        delivery,
        headers=tuple(
            (name, moved if name.lower() == "webhook-timestamp" else value)
            for name, value in delivery.headers
        ),
    )

    assert await exit_code(verifier.command(SECRET, forged), forged.body) == 1
