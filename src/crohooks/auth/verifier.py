"""The one interface the API uses to turn a bearer token into a :class:`Principal`."""

from __future__ import annotations

from typing import Protocol

from crohooks.auth.header import token_from_authorization
from crohooks.auth.introspection import IntrospectionVerifier
from crohooks.auth.jwks import JwksVerifier
from crohooks.auth.local import LocalVerifier
from crohooks.auth.principal import Principal
from crohooks.settings import Settings


class TokenVerifier(Protocol):
    """Checks bearer tokens; every failure is :class:`~crohooks.errors.Unauthenticated`."""

    max_header_length: int
    """The longest ``Authorization`` value accepted: CRO's 256 for local tokens."""

    async def verify(self, token: str) -> Principal: ...

    async def aclose(self) -> None: ...


def build_verifier(settings: Settings) -> TokenVerifier:
    """The verifier ``CROHOOKS_AUTH_MODE`` names; bad settings raise ConfigurationError now."""
    if settings.auth_mode == "jwks":
        return JwksVerifier(settings)
    if settings.auth_mode == "introspection":
        return IntrospectionVerifier(settings)
    return LocalVerifier(settings)


async def authenticate(verifier: TokenVerifier, authorization: str | None) -> Principal:
    """Check a raw ``Authorization`` header value end to end."""
    token = token_from_authorization(authorization, max_length=verifier.max_header_length)
    return await verifier.verify(token)
