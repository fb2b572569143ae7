"""Opaque tokens, checked by RFC 7662 introspection at the IdP (spec 2.1)."""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Mapping
from urllib.parse import quote_plus, urlsplit

import aiohttp

from crohooks.auth._claims import principal_from_claims
from crohooks.auth.cache import VerifiedTokens
from crohooks.auth.header import AUTHORIZATION_FIELD
from crohooks.auth.principal import Principal
from crohooks.errors import ConfigurationError, Unauthenticated
from crohooks.settings import Settings

logger = logging.getLogger(__name__)

INTROSPECTION_TIMEOUT_SECONDS = 5.0


class IntrospectionVerifier:
    """Asks the IdP whether a token is active, and who it belongs to.

    The IdP's word is final on signature and revocation, but an active token must
    still carry a future ``exp``, must not be a refresh token (Hydra's ``token_use``),
    and, when ``CROHOOKS_JWT_ISSUER`` / ``CROHOOKS_JWT_AUDIENCE`` are set, must name
    that ``iss`` and include that ``aud``. Roles and tenants are read at the top level
    of the response, else from Hydra's ``ext`` object.

    Positive answers are cached, keyed by the token's SHA-256, for
    ``introspection_cache_seconds`` at most and never past ``exp``: a revoked token
    stays usable for at most that long.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_header_length = settings.authorization_max_length
        self._settings = settings
        url = settings.introspection_url
        if not url or urlsplit(url).scheme not in ("http", "https"):
            raise ConfigurationError(
                "CROHOOKS_INTROSPECTION_URL must be an http or https URL "
                "when CROHOOKS_AUTH_MODE is introspection"
            )
        self._url = url
        client_id = settings.introspection_client_id
        secret = settings.introspection_client_secret
        if (client_id is None) != (secret is None):
            raise ConfigurationError(
                "set both CROHOOKS_INTROSPECTION_CLIENT_ID and "
                "CROHOOKS_INTROSPECTION_CLIENT_SECRET, or neither"
            )
        self._headers = {"Accept": "application/json"}
        if client_id is not None and secret is not None:
            self._headers["Authorization"] = _basic_auth(client_id, secret.get_secret_value())
        self._session: aiohttp.ClientSession | None = None
        self._cache = VerifiedTokens()

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        answer = await self._introspect(token)
        principal, expires_at = self._principal(answer)
        ttl = min(self._settings.introspection_cache_seconds, expires_at - time.time())
        self._cache.remember(token, principal, ttl)
        return principal

    async def aclose(self) -> None:
        self._cache.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _introspect(self, token: str) -> Mapping[str, object]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=INTROSPECTION_TIMEOUT_SECONDS),
                trust_env=False,
            )
        try:
            async with self._session.post(
                self._url,
                data={"token": token, "token_type_hint": "access_token"},
                headers=self._headers,
                allow_redirects=False,
            ) as response:
                status = response.status
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            logger.warning("token introspection failed: %s", type(error).__name__)
            raise _unavailable() from None
        if status != 200:
            logger.warning("token introspection answered HTTP %d", status)
            raise _unavailable()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            logger.warning("token introspection answered something other than a JSON object")
            raise _unavailable()
        return answer

    def _principal(self, answer: Mapping[str, object]) -> tuple[Principal, float]:
        if answer.get("active") is not True:
            raise _refused("token is not active")
        exp = answer.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            raise _refused("token has no 'exp' claim")
        if exp <= time.time():
            raise _refused("token has expired")
        token_use = answer.get("token_use")
        if token_use is not None and token_use != "access_token":
            raise _refused("token is not an access token")
        settings = self._settings
        if settings.jwt_issuer is not None and answer.get("iss") != settings.jwt_issuer:
            raise _refused("token issuer is not accepted")
        if settings.jwt_audience is not None and settings.jwt_audience not in _audiences(answer):
            raise _refused("token audience is not accepted")
        claims = dict(answer)
        ext = answer.get("ext")
        if isinstance(ext, dict):
            for name in (settings.claim_roles, settings.claim_tenants):
                if name not in claims and name in ext:
                    claims[name] = ext[name]
        return principal_from_claims(claims, settings), float(exp)


def _basic_auth(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: both parts form-encoded before Basic; Hydra decodes them."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _audiences(answer: Mapping[str, object]) -> list[object]:
    aud = answer.get("aud")
    if isinstance(aud, str):
        return [aud]
    return list(aud) if isinstance(aud, list) else []


def _refused(detail: str) -> Unauthenticated:
    return Unauthenticated(detail, field=AUTHORIZATION_FIELD)


def _unavailable() -> Unauthenticated:
    return _refused("could not check the token with the identity provider")
