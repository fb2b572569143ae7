"""Rules of a hook's own settings (headers, receiver auth), as plain functions the request
models call; and how credentials are shown: never in full."""

from __future__ import annotations

import re

MAX_HEADERS = 20
MAX_HEADER_NAME = 64
MAX_HEADER_VALUE = 1024
MAX_IN_FLIGHT = 100
MIN_RATE = 0.01
MAX_RATE = 10_000.0
MAX_BURST = 1000
MAX_REASON = 200

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP field name (RFC 9110's ``token``)."""
_VISIBLE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$")
"""Visible ASCII, inner spaces allowed: no control characters, no line breaks."""

RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "expect",
        "host",
        "keep-alive",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)
"""Headers crohooks sets itself, or that would break the request; ``Authorization`` is
set through ``auth``."""
RESERVED_PREFIXES = ("x-cro-", "webhook-", "proxy-")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Static headers for every request to a hook: valid names, none reserved, at most
    ``MAX_HEADERS``, each name once whatever its case."""
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        lowered = name.lower()
        if not _TOKEN.match(name) or len(name) > MAX_HEADER_NAME:
            raise ValueError(
                f"{name!r} is not a header name (1 to {MAX_HEADER_NAME} letters, digits "
                "or !#$%&'*+-.^_`|~)"
            )
        if lowered == "authorization":
            raise ValueError("Authorization is reserved; set receiver credentials with auth")
        if lowered in RESERVED_HEADERS or lowered.startswith(RESERVED_PREFIXES):
            raise ValueError(f"{name} is reserved: crohooks sets it on every request")
        if lowered in seen:
            raise ValueError(f"{name} is given more than once (names ignore case)")
        seen.add(lowered)
        check_credential(value, what=f"the value of {name}", most=MAX_HEADER_VALUE)
    return headers


def check_credential(value: str, *, what: str, most: int) -> str:
    if not 1 <= len(value) <= most or not _VISIBLE.match(value):
        raise ValueError(
            f"{what} must be 1 to {most} visible ASCII characters (inner spaces allowed)"
        )
    return value


def check_username(value: str) -> str:
    check_credential(value, what="username", most=255)
    if ":" in value:
        raise ValueError("username must not contain ':' (basic auth separates it with one)")
    return value


def masked(value: str) -> str:
    """A credential as the API shows it: its last 4 characters when it is long enough that
    they give little away, otherwise nothing of it."""
    return "****" + value[-4:] if len(value) >= 16 else "****"
