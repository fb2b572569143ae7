"""Decisions about a hook's own settings: which hook, in which state, may change how."""

from __future__ import annotations

import dataclasses
from typing import Any, NoReturn

from crohooks.clock import utc_now
from crohooks.errors import Conflict, NotFound
from crohooks.model import HookSettings
from crohooks.store.hook_settings import HookSettingsRepository

_FIELD = "PathParameters.hook_id"


class HookSettingsService:
    def __init__(self, repository: HookSettingsRepository) -> None:
        self._repository = repository

    async def get(self, tenant_id: int, hook_id: int) -> HookSettings:
        found = await self._repository.get(tenant_id, hook_id)
        if found is None:
            raise NotFound(f"hook {hook_id} does not exist", field=_FIELD)
        return found

    async def update(self, tenant_id: int, hook_id: int, changes: dict[str, Any]) -> HookSettings:
        """Set the named settings (``HookSettings`` field names), keep the others."""
        updated = await self._repository.update(
            tenant_id,
            hook_id,
            lambda current: dataclasses.replace(current, **changes),
            now=utc_now(),
        )
        return updated or await self._inactive(tenant_id, hook_id, "changed")

    async def disable(self, tenant_id: int, hook_id: int, *, reason: str, by: str) -> HookSettings:
        disabled = await self._repository.disable(
            tenant_id, hook_id, reason=reason, by=by, now=utc_now()
        )
        return disabled or await self._inactive(tenant_id, hook_id, "disabled")

    async def enable(self, tenant_id: int, hook_id: int) -> HookSettings:
        enabled = await self._repository.enable(tenant_id, hook_id)
        return enabled or await self._inactive(tenant_id, hook_id, "enabled")

    async def _inactive(self, tenant_id: int, hook_id: int, verb: str) -> NoReturn:
        """The error for a hook that was not there to change: 404, or 409 if deleted."""
        await self.get(tenant_id, hook_id)
        raise Conflict(f"hook {hook_id} is deleted and can't be {verb}", field=_FIELD)
