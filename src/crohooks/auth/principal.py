"""Who is calling, as established from a verified bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """CRO's roles (spec 2.2), plus crohooks' own ``System`` for event publishers."""

    PUBLIC = "Public"
    ADMIN = "Admin"
    DRIVER = "Driver"
    DISPATCHER = "Dispatcher"
    CRM_USER = "CrmUser"
    THIRD_PARTY_DISPATCHER = "ThirdPartyDispatcher"
    THIRD_PARTY_DRIVER = "ThirdPartyDriver"
    THIRD_PARTY_ADMIN = "ThirdPartyAdmin"
    THIRD_PARTY_CRM_USER = "ThirdPartyCrmUser"
    CLIENT_CUSTOMER = "ClientCustomer"
    SYSTEM = "System"


HOOK_ROLES = frozenset({Role.ADMIN, Role.DISPATCHER})
PUBLISH_ROLES = frozenset({Role.SYSTEM, Role.ADMIN})
PORTAL_LINK_ROLES = frozenset({Role.ADMIN, Role.SYSTEM})
"""Who may open the portal for a tenant: its Admins, and the platform backend for its users."""


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller. Unknown role names from the token are dropped."""

    subject: str
    roles: frozenset[Role]
    tenants: frozenset[int]
    client: str
    """The client the API version is pinned to: ``client_id``, else ``azp``, else ``sub``."""

    def has_any_role(self, allowed: frozenset[Role]) -> bool:
        return not self.roles.isdisjoint(allowed)

    def grants_tenant(self, tenant_id: int) -> bool:
        return tenant_id in self.tenants
