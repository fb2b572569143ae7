"""Portal links and sessions: a one-time code becomes a tenant-bound session.

Codes and session tokens are random and handed out once; the store keeps only their
SHA-256 digests, so a copy of the database opens nothing. Both live in the database, so a
code issued by one API process can be redeemed by any other.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from crohooks.auth.principal import Principal, Role
from crohooks.clock import utc_now
from crohooks.store.portal import PortalGrant, PortalRepository

_KNOWN_ROLES = frozenset(role.value for role in Role)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PortalLink:
    code: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class PortalSession:
    """A signed-in browser: its tenant, the principal the services check, its CSRF token."""

    tenant_id: int
    principal: Principal
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    session: PortalSession


def _session(grant: PortalGrant, csrf_token: str, expires_at: datetime) -> PortalSession:
    principal = Principal(
        subject=grant.subject,
        roles=frozenset(Role(name) for name in grant.roles if name in _KNOWN_ROLES),
        tenants=frozenset({grant.tenant_id}),
        client=f"portal:{grant.subject}",
    )
    return PortalSession(
        tenant_id=grant.tenant_id,
        principal=principal,
        csrf_token=csrf_token,
        expires_at=expires_at,
    )


class PortalAccess:
    def __init__(self, repository: PortalRepository, *, session_lifetime: timedelta) -> None:
        self._repository = repository
        self._session_lifetime = session_lifetime

    async def issue_link(
        self, tenant_id: int, *, subject: str, roles: tuple[str, ...], ttl: timedelta
    ) -> PortalLink:
        code = secrets.token_urlsafe(32)
        now = utc_now()
        grant = PortalGrant(tenant_id=tenant_id, subject=subject, roles=roles)
        expires_at = now + ttl
        await self._repository.add_code(_digest(code), grant, now=now, expires_at=expires_at)
        return PortalLink(code=code, expires_at=expires_at)

    async def redeem(self, code: str) -> NewSession | None:
        """A new session for a live, unused code; ``None`` for any other code."""
        if not code or len(code) > 256:
            return None
        token = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        now = utc_now()
        expires_at = now + self._session_lifetime
        grant = await self._repository.redeem(
            _digest(code),
            token_hash=_digest(token),
            csrf_token=csrf_token,
            now=now,
            expires_at=expires_at,
        )
        if grant is None:
            return None
        return NewSession(token=token, session=_session(grant, csrf_token, expires_at))

    async def session(self, token: str) -> PortalSession | None:
        if not token or len(token) > 256:
            return None
        stored = await self._repository.session(_digest(token), now=utc_now())
        if stored is None:
            return None
        return _session(stored.grant, stored.csrf_token, stored.expires_at)

    async def sign_out(self, token: str) -> None:
        await self._repository.end_session(_digest(token))
