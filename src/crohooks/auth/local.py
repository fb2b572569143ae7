"""Local tokens: HS256 JWTs minted and checked with the server's own secret (spec 2.1)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import jwt

from crohooks.auth import _jwt
from crohooks.auth._claims import MAX_TENANT_ID, principal_from_claims
from crohooks.auth.cache import VerifiedTokens
from crohooks.auth.principal import Principal, Role
from crohooks.errors import ConfigurationError
from crohooks.settings import Settings

LOCAL_HEADER_LIMIT = 256
"""CRO's limit on the whole ``Authorization`` value, ``"Bearer "`` included."""

LOCAL_ALGORITHMS = ("HS256",)
MIN_KEY_BYTES = 32
"""RFC 7518 3.2: an HS256 key at least as long as the hash."""


def local_key(settings: Settings) -> str:
    """The HS256 key, refused at start-up when too short to be safe."""
    if not settings.local_issuer:
        raise ConfigurationError("CROHOOKS_LOCAL_ISSUER must not be empty")
    key = settings.local_jwt_key()
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ConfigurationError(f"CROHOOKS_JWT_SECRET must be at least {MIN_KEY_BYTES} bytes")
    return key


def mint_local_token(
    settings: Settings,
    *,
    subject: str,
    roles: Sequence[str],
    tenants: Sequence[int],
    ttl_seconds: int = 3600,
    client_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """Mint a token that fits, with ``"Bearer "``, in CRO's 256 characters.

    To stay small the header is just ``{"alg":"HS256"}``, empty lists and a client id
    equal to the subject are left out, and ``iat`` is added only when it fits. Unknown
    role names, bad tenant ids, a naive ``now`` or a non-positive TTL raise
    ``ValueError``; a token that can't fit raises ``ConfigurationError``.
    """
    if not subject:
        raise ValueError("subject must not be empty")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    issued_at = datetime.now(UTC) if now is None else now
    if issued_at.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    role_names = [_role(name).value for name in dict.fromkeys(roles)]
    tenant_ids = [_tenant(tenant) for tenant in dict.fromkeys(tenants)]

    iat = int(issued_at.timestamp())
    claims: dict[str, object] = {settings.claim_sub: subject}
    if role_names:
        claims[settings.claim_roles] = role_names
    if tenant_ids:
        claims[settings.claim_tenants] = tenant_ids
    if client_id and client_id != subject:
        claims[settings.claim_client_id] = client_id
    claims["iss"] = settings.local_issuer
    claims["exp"] = iat + ttl_seconds

    key = local_key(settings)
    for candidate in ({**claims, "iat": iat}, claims):
        token = jwt.encode(candidate, key, algorithm="HS256", headers={"typ": None})
        if len("Bearer ") + len(token) <= LOCAL_HEADER_LIMIT:
            return token
    raise ConfigurationError(
        f"token would be {len('Bearer ') + len(token)} characters; CRO allows "
        f"{LOCAL_HEADER_LIMIT} for 'Bearer <token>', so use fewer roles or tenants, "
        "or a shorter subject, client id or issuer"
    )


def _role(name: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise ValueError(f"unknown role {name!r}; roles are {known}") from None


def _tenant(tenant: int) -> int:
    if isinstance(tenant, bool) or not isinstance(tenant, int):
        raise ValueError(f"tenant ids are integers, not {tenant!r}")
    if not 0 <= tenant <= MAX_TENANT_ID:
        raise ValueError(f"tenant id {tenant} is out of range")
    return tenant


class LocalVerifier:
    """Checks tokens minted by :func:`mint_local_token`: HS256 only, our issuer, ``exp``."""

    def __init__(self, settings: Settings) -> None:
        self.max_header_length = LOCAL_HEADER_LIMIT
        self._settings = settings
        self._key = local_key(settings)
        self._verified = VerifiedTokens()

    async def verify(self, token: str) -> Principal:
        """Checked in full once; then remembered until its ``exp`` (the key never changes
        while the process runs, and local tokens have no revocation)."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        claims = _jwt.decode(
            token, self._key, algorithms=LOCAL_ALGORITHMS, issuer=self._settings.local_issuer
        )
        principal = principal_from_claims(claims, self._settings)
        self._verified.remember(token, principal, float(claims["exp"]) - time.time())
        return principal

    async def aclose(self) -> None:
        self._verified.clear()
