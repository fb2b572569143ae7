"""A portal visitor over HTTP: opens a link as a browser would, keeps the cookie, and
sends the forms with the page's CSRF token."""

from __future__ import annotations

import re
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def code_of(url: str) -> str:
    query = urlsplit(url).query
    assert query.startswith("code=")
    return query.removeprefix("code=")


class PortalVisitor:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def open_link(self, url: str) -> httpx.Response:
        """The landing page, then its form's POST, as the page's script sends it."""
        path = url.removeprefix(str(self.client.base_url).rstrip("/"))
        landing = await self.client.get(path)
        assert landing.status_code == 200, landing.text
        entered = await self.client.post("/portal/enter", data={"code": code_of(url)})
        if entered.status_code == 303:
            await self.page("/portal/hooks")
        return entered

    async def page(self, path: str, **params: Any) -> httpx.Response:
        response = await self.client.get(path, params=params or None)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = unescape(found.group(1))
        return response

    async def submit(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        fields = dict(data or {})
        if csrf:
            fields["csrf_token"] = self.csrf
        return await self.client.post(path, data=fields, **kwargs)
