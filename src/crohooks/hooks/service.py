"""Decisions about hooks: existence per tenant, soft-delete states, duplicate URLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from crohooks.clock import utc_now
from crohooks.delivery.ssrf import DestinationPolicy
from crohooks.errors import BadRequest, Conflict, DuplicateKey, NotFound
from crohooks.hooks.rules import generate_secret
from crohooks.model import Hook
from crohooks.settings import Settings
from crohooks.store.hooks import HookRepository


@dataclass(frozen=True, slots=True)
class HookChanges:
    url: str
    events: tuple[str, ...] | None
    secret: str | None


class HookService:
    def __init__(
        self,
        repository: HookRepository,
        *,
        secret_grace: timedelta,
        destinations: DestinationPolicy,
    ) -> None:
        self._repository = repository
        self._secret_grace = secret_grace
        self._destinations = destinations

    @classmethod
    def configured(cls, repository: HookRepository, settings: Settings) -> HookService:
        """The service as ``settings`` shape it (the API's and the operator CLI's)."""
        return cls(
            repository,
            secret_grace=timedelta(seconds=settings.secret_grace_seconds),
            destinations=DestinationPolicy(settings.allowed_networks),
        )

    def _check_reachable(self, url: str, field: str) -> None:
        """A URL whose host is an IP literal the delivery policy refuses can never work,
        so it is refused now rather than at every attempt. Names are not resolved here."""
        reason = self._destinations.literal_refusal(urlsplit(url).hostname or "")
        if reason is not None:
            raise BadRequest(
                f"url: {reason}; hook URLs reach public addresses and allowed networks only",
                field=field,
            )

    async def create(
        self, tenant_id: int, *, url: str, events: tuple[str, ...], secret: str | None, field: str
    ) -> Hook:
        self._check_reachable(url, field)
        try:
            return await self._repository.create(
                tenant_id,
                url=url,
                secret=secret if secret is not None else generate_secret(),
                events=events,
                now=utc_now(),
            )
        except DuplicateKey:
            raise _duplicate_url(field) from None

    async def get(self, tenant_id: int, hook_id: int) -> Hook:
        hook = await self._repository.get(tenant_id, hook_id)
        if hook is None:
            raise NotFound(f"hook {hook_id} does not exist", field="PathParameters.hook_id")
        return hook

    async def get_active(self, tenant_id: int, hook_id: int) -> Hook:
        """A hook that can be pinged: deleted hooks are as good as missing here."""
        hook = await self.get(tenant_id, hook_id)
        if hook.is_deleted:
            raise NotFound(f"hook {hook_id} is deleted", field="PathParameters.hook_id")
        return hook

    async def list_page(
        self, tenant_id: int, *, deleted: bool | None, limit: int, offset: int
    ) -> tuple[list[Hook], int]:
        return await self._repository.list_page(
            tenant_id, deleted=deleted, limit=limit, offset=offset
        )

    async def update(
        self, tenant_id: int, hook_id: int, changes: HookChanges, *, field: str
    ) -> Hook:
        self._check_reachable(changes.url, field)
        now = utc_now()
        try:
            hook = await self._repository.update(
                tenant_id,
                hook_id,
                url=changes.url,
                events=changes.events,
                secret=changes.secret,
                secret_grace_until=now + self._secret_grace,
                now=now,
            )
        except DuplicateKey:
            raise _duplicate_url(field) from None
        if hook is None:
            await self._raise_inactive(tenant_id, hook_id, "updated")
        assert hook is not None
        return hook

    async def delete(self, tenant_id: int, hook_id: int) -> Hook:
        hook = await self._repository.soft_delete(tenant_id, hook_id, now=utc_now())
        if hook is None:
            await self._raise_inactive(tenant_id, hook_id, "deleted")
        assert hook is not None
        return hook

    async def _raise_inactive(self, tenant_id: int, hook_id: int, verb: str) -> None:
        existing = await self.get(tenant_id, hook_id)
        if existing.is_deleted:
            raise Conflict(
                f"hook {hook_id} is deleted and can't be {verb}", field="PathParameters.hook_id"
            )


def _duplicate_url(field: str) -> Conflict:
    return Conflict("another active hook of this tenant already uses this url", field=field)
