"""IdP tokens: JWTs signed with public keys published at a JWKS URL (spec 2.1)."""

from __future__ import annotations

import asyncio
import logging

import jwt

from crohooks.auth import _jwt
from crohooks.auth._claims import principal_from_claims
from crohooks.auth.header import AUTHORIZATION_FIELD
from crohooks.auth.principal import Principal
from crohooks.errors import ConfigurationError, Unauthenticated
from crohooks.settings import Settings

logger = logging.getLogger(__name__)

PUBLIC_KEY_ALGORITHMS = frozenset(
    {
        *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
        *("ES256", "ES256K", "ES384", "ES512", "EdDSA"),
    }
)
"""What ``CROHOOKS_JWT_ALGORITHMS`` may name: an HMAC algorithm here would let anyone
holding the public key sign tokens."""

JWKS_TIMEOUT_SECONDS = 5.0
CLOCK_SKEW_SECONDS = 30.0
"""The IdP's clock is not ours; local tokens get no such allowance."""


class JwksVerifier:
    """Checks JWTs against the JWKS URL with a fixed issuer, audience and algorithm list.

    Only the key set is cached, for ``jwks_cache_seconds``; PyJWT's per-``kid`` cache is
    left off because it never expires, which would keep a key the IdP withdrew.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_header_length = settings.authorization_max_length
        self._settings = settings
        self._issuer = _required(settings.jwt_issuer, "CROHOOKS_JWT_ISSUER")
        self._audience = _required(settings.jwt_audience, "CROHOOKS_JWT_AUDIENCE")
        self._algorithms = _algorithms(settings.jwt_algorithms)
        url = _required(settings.jwks_url, "CROHOOKS_JWKS_URL")
        if settings.jwks_cache_seconds <= 0:
            raise ConfigurationError("CROHOOKS_JWKS_CACHE_SECONDS must be positive")
        try:
            self._client = jwt.PyJWKClient(
                url,
                cache_jwk_set=True,
                lifespan=settings.jwks_cache_seconds,
                timeout=JWKS_TIMEOUT_SECONDS,
            )
        except jwt.PyJWKClientError:
            raise ConfigurationError("CROHOOKS_JWKS_URL must be an http or https URL") from None

    async def verify(self, token: str) -> Principal:
        kid = self._key_id(token)
        signing_key = await asyncio.to_thread(self._signing_key, kid)
        claims = _jwt.decode(
            token,
            signing_key,
            algorithms=self._algorithms,
            issuer=self._issuer,
            audience=self._audience,
            leeway=CLOCK_SKEW_SECONDS,
        )
        return principal_from_claims(claims, self._settings)

    async def aclose(self) -> None:
        return None

    def _key_id(self, token: str) -> str:
        """Read ``kid``, refusing early what can't pass so garbage costs no key fetch."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise _jwt.unauthenticated(error) from None
        if header.get("alg") not in self._algorithms:
            raise Unauthenticated("token algorithm is not allowed", field=AUTHORIZATION_FIELD)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id ('kid')", field=AUTHORIZATION_FIELD)
        return kid

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        """Blocking (urllib), so it runs in a thread.

        A key set that can't be had is a fetch failure; a ``kid`` missing from a good set,
        even after PyJWT's rate-limited refresh, is an unknown key.
        """
        try:
            self._client.get_signing_keys()
        except jwt.PyJWTError as error:
            raise _fetch_failed(error) from None
        try:
            return self._client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as error:
            raise _fetch_failed(error) from None
        except jwt.PyJWTError:
            raise Unauthenticated(
                "token signing key is unknown", field=AUTHORIZATION_FIELD
            ) from None


def _fetch_failed(error: jwt.PyJWTError) -> Unauthenticated:
    logger.warning("could not fetch the JWKS: %s", error)
    return Unauthenticated("could not fetch signing keys", field=AUTHORIZATION_FIELD)


def _required(value: str | None, name: str) -> str:
    if not value:
        raise ConfigurationError(f"{name} is required when CROHOOKS_AUTH_MODE is jwks")
    return value


def _algorithms(configured: tuple[str, ...]) -> tuple[str, ...]:
    if not configured:
        raise ConfigurationError("CROHOOKS_JWT_ALGORITHMS must name at least one algorithm")
    refused = sorted(set(configured) - PUBLIC_KEY_ALGORITHMS)
    if refused:
        raise ConfigurationError(
            "CROHOOKS_JWT_ALGORITHMS may only name public-key algorithms "
            f"({', '.join(sorted(PUBLIC_KEY_ALGORITHMS))}), not {', '.join(refused)}"
        )
    return configured
