"""Verify a crohooks delivery with the Standard Webhooks library (pip install standardwebhooks).

    python verify_standardwebhooks.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body

SECRET is the hook's secret exactly as crohooks returns it; the other arguments are the
values of the webhook-id, webhook-timestamp and webhook-signature headers. The library
also rejects a timestamp more than five minutes away from now, which stops an old
request from being replayed. Exits 0 if the delivery is valid, 1 if it is not.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from standardwebhooks import Webhook, WebhookVerificationError


def verify_standard_webhook(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether the webhook-* headers sign ``body``; ``headers`` may hold any others too."""
    try:
        Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError:
        return False
    return True


def main(arguments: list[str]) -> int:
    if len(arguments) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    secret, webhook_id, webhook_timestamp, webhook_signature = arguments
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": webhook_timestamp,
        "webhook-signature": webhook_signature,
    }
    body = sys.stdin.buffer.read()
    return 0 if verify_standard_webhook(secret, body, headers) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
