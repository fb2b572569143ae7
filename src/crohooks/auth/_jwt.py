"""PyJWT, called one way, with its errors translated to :class:`Unauthenticated`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jwt

from crohooks.auth.header import AUTHORIZATION_FIELD
from crohooks.errors import Unauthenticated

_DETAILS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm is not allowed"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.InvalidIssuedAtError, "token issue time is invalid"),
    (jwt.InvalidKeyError, "token signing key is unusable"),
    (jwt.DecodeError, "token is not a well-formed JWT"),
)


def unauthenticated(error: jwt.PyJWTError) -> Unauthenticated:
    """A short detail for the user; PyJWT's own messages may quote claims or keys."""
    if isinstance(error, jwt.MissingRequiredClaimError):
        return Unauthenticated(f"token has no '{error.claim}' claim", field=AUTHORIZATION_FIELD)
    for kind, detail in _DETAILS:
        if isinstance(error, kind):
            return Unauthenticated(detail, field=AUTHORIZATION_FIELD)
    return Unauthenticated("token is invalid", field=AUTHORIZATION_FIELD)


def decode(
    token: str,
    key: jwt.PyJWK | str,
    *,
    algorithms: Sequence[str],
    issuer: str,
    audience: str | None = None,
    leeway: float = 0.0,
) -> dict[str, Any]:
    """Verify signature, ``exp``, ``iss`` and (when given) ``aud``; return the claims.

    ``algorithms`` always comes from configuration. Weak keys are refused rather than
    warned about: a warning per request helps nobody.
    """
    required = ["exp", "iss"] if audience is None else ["exp", "iss", "aud"]
    try:
        return jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": required, "enforce_minimum_key_length": True},
        )
    except jwt.PyJWTError as error:
        raise unauthenticated(error) from None
