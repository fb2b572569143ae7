"""Principals of tokens already verified, so a client's next request skips the check."""

from __future__ import annotations

import hashlib
import time

from crohooks.auth.principal import Principal

MAX_CACHED_TOKENS = 10_000


class VerifiedTokens:
    """A bounded map from a token's SHA-256 to its principal, each entry until a deadline.

    A verifier remembers a token only after checking it in full, and never past the
    token's own ``exp``; whatever else may change (a JWKS key withdrawn, an opaque token
    revoked at the IdP) bounds the time-to-live it passes to :meth:`remember`. Keys are
    digests, so the cache holds no usable token.
    """

    def __init__(self, max_entries: int = MAX_CACHED_TOKENS) -> None:
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[Principal, float]] = {}

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, token: str) -> Principal | None:
        key = self._key(token)
        cached = self._entries.get(key)
        if cached is None:
            return None
        if cached[1] > time.monotonic():
            return cached[0]
        del self._entries[key]
        return None

    def remember(self, token: str, principal: Principal, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= self._max_entries:
            for stale in [k for k, (_, deadline) in self._entries.items() if deadline <= now]:
                del self._entries[stale]
            if len(self._entries) >= self._max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[self._key(token)] = (principal, now + ttl_seconds)

    def clear(self) -> None:
        self._entries.clear()
