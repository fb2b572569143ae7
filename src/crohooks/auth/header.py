"""The ``Authorization`` request header, checked by CRO's own rule (spec 1.3)."""

from __future__ import annotations

import re

from crohooks.errors import Unauthenticated

AUTHORIZATION_FIELD = "StandardRequestHeadersModel.authorization"

# CRO's pattern, unescaped dots included: they match any character, so CRO accepts
# ``abc.def`` opaque tokens and a few oddities, and so must we. ASCII: without it,
# IGNORECASE lets the Kelvin sign match ``k``.
_BEARER = re.compile(
    r"bearer [a-z0-9\-_=]+.[a-z0-9\-_=]+.?[a-z0-9\-_.+/=]*", re.IGNORECASE | re.ASCII
)


def token_from_authorization(value: str | None, *, max_length: int) -> str:
    """Return the bearer token of an ``Authorization`` header value.

    The whole value counts towards ``max_length`` (CRO: 256). Errors never quote the
    value, which is a credential.
    """
    if not value:
        raise Unauthenticated("the Authorization header is required", field=AUTHORIZATION_FIELD)
    if len(value) > max_length:
        raise Unauthenticated(
            f"the Authorization header is longer than {max_length} characters",
            field=AUTHORIZATION_FIELD,
        )
    if value[:7].lower() != "bearer ":
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <token>'", field=AUTHORIZATION_FIELD
        )
    if _BEARER.fullmatch(value) is None:
        raise Unauthenticated(
            "the bearer token is malformed",
            field=AUTHORIZATION_FIELD,
        )
    return value[7:]
