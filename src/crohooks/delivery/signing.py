"""What a hook URL receives besides the body: the signed headers of spec 3.1.

Each delivery is signed twice over the exact body bytes, so receivers can pick either
scheme: GitHub-style (``X-Cro-Signature``/``X-Cro-Signature-256``, keyed with the
secret's UTF-8 bytes as stored) and Standard Webhooks (``webhook-*``, keyed with the
base64-decoded secret). During a secret rotation the previous secrets keep signing in
``webhook-signature`` only, which is the one header built to carry several signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import crohooks

USER_AGENT = f"crohooks/{crohooks.__version__}"


def standard_webhooks_key(secret: str) -> bytes:
    """The Standard Webhooks key of a hook secret: the secret, base64-decoded.

    Decoded the way the reference ``standardwebhooks`` library does (missing padding
    tolerated), so a receiver can pass the secret to it unchanged.
    """
    return base64.b64decode(secret + "==")


@dataclass(frozen=True)
class SignatureSet:
    """The signature headers of one delivery attempt."""

    sha1: str
    sha256: str
    webhook_id: str
    webhook_timestamp: int
    webhook_signature: str

    def headers(self) -> dict[str, str]:
        return {
            "X-Cro-Signature": self.sha1,
            "X-Cro-Signature-256": self.sha256,
            "webhook-id": self.webhook_id,
            "webhook-timestamp": str(self.webhook_timestamp),
            "webhook-signature": self.webhook_signature,
        }


def sign(
    body: bytes,
    *,
    secret: str,
    previous_secrets: Sequence[str] = (),
    delivery_id: str,
    timestamp: int,
) -> SignatureSet:
    """Sign ``body`` with the hook's current secret (and still-live previous ones)."""
    key = secret.encode("utf-8")
    signed_content = b"%s.%d.%s" % (delivery_id.encode("utf-8"), timestamp, body)
    live_secrets = list(dict.fromkeys([secret, *previous_secrets]))
    webhook_signatures = " ".join(
        "v1,"
        + base64.b64encode(
            hmac.digest(standard_webhooks_key(live), signed_content, hashlib.sha256)
        ).decode("ascii")
        for live in live_secrets
    )
    return SignatureSet(
        sha1="sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        sha256="sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        webhook_id=delivery_id,
        webhook_timestamp=timestamp,
        webhook_signature=webhook_signatures,
    )


def sign_delivery(
    body: bytes,
    *,
    secret: str,
    previous_secrets: Sequence[str] = (),
    delivery_id: str,
    event: str,
    hook_id: int,
    timestamp: int,
) -> dict[str, str]:
    """Every header of one delivery attempt's POST, in a stable order (spec 3.1).

    ``timestamp`` is the Unix time of this attempt, not of the event: Standard Webhooks
    receivers reject signatures older than a few minutes, and retries come hours later.
    """
    signatures = sign(
        body,
        secret=secret,
        previous_secrets=previous_secrets,
        delivery_id=delivery_id,
        timestamp=timestamp,
    )
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Cro-Event": event,
        "X-Cro-Delivery": delivery_id,
        "X-Cro-Hook-Id": str(hook_id),
        **signatures.headers(),
    }
