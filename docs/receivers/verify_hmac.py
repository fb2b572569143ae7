"""Verify a crohooks delivery GitHub-style, with nothing but Python's standard library.

    python verify_hmac.py SECRET SIGNATURE < body

SECRET is the hook's secret exactly as crohooks returns it. SIGNATURE is the value of
the X-Cro-Signature-256 header (``sha256=<hex>``) or, for receivers that only know
SHA-1, of X-Cro-Signature (``sha1=<hex>``). The body is the raw request body, byte for
byte: verify before parsing it. Exits 0 if the signature is valid, 1 if it is not.
"""

from __future__ import annotations

import hashlib
import hmac
import sys

DIGESTS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}


def verify_cro_signature(secret: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` (an X-Cro-Signature[-256] value) signs ``body``."""
    algorithm, _, received = signature.strip().partition("=")
    digest = DIGESTS.get(algorithm)
    if digest is None:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, digest).hexdigest()
    # compare_digest takes as long whether or not the values match, so a forger can't
    # learn the signature one character at a time.
    return hmac.compare_digest(expected.encode("ascii"), received.encode("utf-8"))


def main(arguments: list[str]) -> int:
    if len(arguments) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    secret, signature = arguments
    body = sys.stdin.buffer.read()
    return 0 if verify_cro_signature(secret, body, signature) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
