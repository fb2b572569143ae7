"""Verified claims → :class:`Principal`, the same way for every kind of token."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from crohooks.auth.header import AUTHORIZATION_FIELD
from crohooks.auth.principal import Principal, Role
from crohooks.errors import Unauthenticated
from crohooks.settings import Settings

MAX_TENANT_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_ROLES_BY_NAME = {role.value: role for role in Role}


def principal_from_claims(claims: Mapping[str, object], settings: Settings) -> Principal:
    """Build the caller from claims whose signature or activity is already established.

    A missing or empty subject is a 401: nothing else can be pinned to the caller.
    Roles and tenants are lenient, element by element, so one odd entry added by an IdP
    doesn't lock a user out: unknown role names are dropped, and so are tenant ids that
    are neither integers nor strings of ASCII digits (``7`` and ``"7"`` both grant
    tenant 7; ``true``, ``7.0``, ``"-7"`` and ids beyond a signed 64-bit integer grant
    nothing). A single string or integer is read as a one-element list.
    """
    subject = claims.get(settings.claim_sub)
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated(
            f"token has no '{settings.claim_sub}' claim", field=AUTHORIZATION_FIELD
        )
    return Principal(
        subject=subject,
        roles=frozenset(_roles(claims.get(settings.claim_roles))),
        tenants=frozenset(_tenants(claims.get(settings.claim_tenants))),
        client=_client(claims, settings) or subject,
    )


def _as_list(value: object) -> Iterable[object]:
    if isinstance(value, list | tuple):
        return value
    if isinstance(value, str | int):
        return (value,)
    return ()


def _roles(value: object) -> Iterable[Role]:
    for name in _as_list(value):
        if isinstance(name, str) and name in _ROLES_BY_NAME:
            yield _ROLES_BY_NAME[name]


def _tenants(value: object) -> Iterable[int]:
    for item in _as_list(value):
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            tenant = item
        elif isinstance(item, str) and _DIGITS.fullmatch(item):
            tenant = int(item)
        else:
            continue
        if 0 <= tenant <= MAX_TENANT_ID:
            yield tenant


def _client(claims: Mapping[str, object], settings: Settings) -> str | None:
    for name in (settings.claim_client_id, "azp"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return None
