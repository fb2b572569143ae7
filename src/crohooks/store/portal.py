"""The portal's one-time link codes and sessions, by digest (never the secrets themselves)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from crohooks.store.connector import Database, Row, Statement

_ADD_CODE = Statement.shared(
    "portal_code_add",
    "INSERT INTO portal_codes (code_hash, tenant_id, subject, roles, created_at, expires_at)"
    " VALUES (:code_hash, :tenant_id, :subject, :roles, :now, :expires_at)",
)
# One statement marks the code used and hands back its grant: of two processes redeeming
# the same code at once, exactly one gets the row.
_USE_CODE = Statement.shared(
    "portal_code_use",
    "UPDATE portal_codes SET used_at = :now"
    " WHERE code_hash = :code_hash AND used_at IS NULL AND expires_at > :now"
    " RETURNING tenant_id, subject, roles",
)
_ADD_SESSION = Statement.shared(
    "portal_session_add",
    "INSERT INTO portal_sessions"
    " (token_hash, tenant_id, subject, roles, csrf_token, created_at, expires_at)"
    " VALUES (:token_hash, :tenant_id, :subject, :roles, :csrf_token, :now, :expires_at)",
)
_SESSION = Statement.shared(
    "portal_session",
    "SELECT tenant_id, subject, roles, csrf_token, expires_at FROM portal_sessions"
    " WHERE token_hash = :token_hash AND expires_at > :now",
)
_END_SESSION = Statement.shared(
    "portal_session_end", "DELETE FROM portal_sessions WHERE token_hash = :token_hash"
)
_PURGE_CODES = Statement.shared(
    "portal_codes_purge", "DELETE FROM portal_codes WHERE expires_at <= :now"
)
_PURGE_SESSIONS = Statement.shared(
    "portal_sessions_purge", "DELETE FROM portal_sessions WHERE expires_at <= :now"
)


@dataclass(frozen=True, slots=True)
class PortalGrant:
    """Who a link or a session lets in: one tenant, with the roles its issuer had."""

    tenant_id: int
    subject: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoredSession:
    grant: PortalGrant
    csrf_token: str
    expires_at: datetime


def _grant(row: Row) -> PortalGrant:
    return PortalGrant(
        tenant_id=row["tenant_id"], subject=row["subject"], roles=tuple(json.loads(row["roles"]))
    )


class PortalRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_code(
        self, code_hash: str, grant: PortalGrant, *, now: datetime, expires_at: datetime
    ) -> None:
        async with self._db.write() as conn:
            await conn.execute(_PURGE_CODES, {"now": now})
            await conn.execute(
                _ADD_CODE,
                {
                    "code_hash": code_hash,
                    "tenant_id": grant.tenant_id,
                    "subject": grant.subject,
                    "roles": json.dumps(list(grant.roles)),
                    "now": now,
                    "expires_at": expires_at,
                },
            )

    async def redeem(
        self,
        code_hash: str,
        *,
        token_hash: str,
        csrf_token: str,
        now: datetime,
        expires_at: datetime,
    ) -> PortalGrant | None:
        """The code's grant, now a session, if the code is live and unused; else ``None``."""
        async with self._db.write() as conn:
            rows = await conn.fetch(_USE_CODE, {"code_hash": code_hash, "now": now})
            if not rows:
                return None
            await conn.execute(_PURGE_SESSIONS, {"now": now})
            await conn.execute(
                _ADD_SESSION,
                {
                    **rows[0],
                    "token_hash": token_hash,
                    "csrf_token": csrf_token,
                    "now": now,
                    "expires_at": expires_at,
                },
            )
        return _grant(rows[0])

    async def session(self, token_hash: str, *, now: datetime) -> StoredSession | None:
        rows = await self._db.fetch(_SESSION, {"token_hash": token_hash, "now": now})
        if not rows:
            return None
        row = rows[0]
        return StoredSession(
            grant=_grant(row), csrf_token=row["csrf_token"], expires_at=row["expires_at"]
        )

    async def end_session(self, token_hash: str) -> None:
        await self._db.write_alone(_END_SESSION, {"token_hash": token_hash})
