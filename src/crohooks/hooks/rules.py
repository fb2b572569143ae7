"""Field rules of CRO's hook models, as plain functions the request models call."""

from __future__ import annotations

import base64
import re
import secrets
from urllib.parse import urlsplit

HOOK_EVENTS = ("Ping", "Customer", "CustomerLocation", "Job", "Truck")
PUBLISHABLE_EVENTS = ("Customer", "CustomerLocation", "Job", "Truck")
MAX_URL_LENGTH = 2048

# CRO's secret pattern, with the `*`s its current site lost when rendering it.
_SECRET_PATTERN = re.compile(r"^\s*[A-Za-z0-9/+=]{11,270}\s*$")
# Canonical base64: whole quads, padding only at the end. Python's decoder would also
# accept padding in the middle or extra `=`s, which other receivers' libraries refuse.
_CANONICAL_BASE64 = re.compile(
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)$"
)


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host and no user-info (CRO: "conforming to RFC 1738")."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if url != url.strip() or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise ValueError("must not contain white space or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"is not a valid URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an absolute http or https URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        raise ValueError(
            "must name a valid host (no empty labels or labels over 63 characters)"
        ) from None
    if "@" in parts.netloc:
        raise ValueError("must not contain a user-info part")
    if port == 0:
        raise ValueError("must not use port 0")
    return url


def check_secret(secret: str) -> str:
    """CRO's pattern, and valid base64 once stripped; returned stripped.

    Whole quads within CRO's 11..270 leave 12..268 characters, which is what users are told.
    """
    if not _SECRET_PATTERN.match(secret):
        raise ValueError(
            "must be 12 to 268 base64 characters (A-Z, a-z, 0-9, +, /, =) in whole groups of 4"
        )
    stripped = secret.strip()
    if not _CANONICAL_BASE64.match(stripped):
        raise ValueError("must be valid base64 (whole 4-character groups, padding at the end)")
    return stripped


def check_events(events: list[str]) -> tuple[str, ...]:
    if len(set(events)) != len(events):
        raise ValueError("must not contain duplicates")
    return tuple(events)


def generate_secret() -> str:
    """24 random bytes, base64: what CRO hands out when a client sends no secret."""
    return base64.b64encode(secrets.token_bytes(24)).decode("ascii")
