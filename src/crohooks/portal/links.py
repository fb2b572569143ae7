"""Portal links: their address, shared by the API and the CLI, and the operator's own."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from crohooks.portal.access import PortalAccess, PortalLink
from crohooks.settings import Settings

ENTER_PATH = "/portal/enter"


def portal_url(base_url: str, link: PortalLink) -> str:
    return f"{base_url.rstrip('/')}{ENTER_PATH}?{urlencode({'code': link.code})}"


DEFAULT_BASE_URL = "http://127.0.0.1:8003"


async def issue_portal_link(
    settings: Settings, *, tenant_id: int, role: str, ttl_seconds: int, base_url: str | None
) -> str:
    """A link for the operator (``crohooks portal-link``, ``make run``), who has the
    database rather than a token: the session is the operator's, with ``role``."""
    from crohooks.store.connect import open_database
    from crohooks.store.connector import DatabaseLimits
    from crohooks.store.portal import PortalRepository

    db = open_database(settings.database_url, DatabaseLimits.of(settings))
    try:
        access = PortalAccess(
            PortalRepository(db),
            session_lifetime=timedelta(seconds=settings.portal_session_seconds),
        )
        link = await access.issue_link(
            tenant_id, subject="operator", roles=(role,), ttl=timedelta(seconds=ttl_seconds)
        )
    finally:
        await db.dispose()
    return portal_url(base_url or settings.portal_base_url or DEFAULT_BASE_URL, link)
