"""The delivery log of a hook: listing, detail, redelivery and recovery decisions."""

from __future__ import annotations

from datetime import datetime

from crohooks.clock import utc_now
from crohooks.errors import Conflict, NotFound
from crohooks.hooks.service import HookService
from crohooks.model import Attempt, Delivery, DeliveryStatus
from crohooks.store.deliveries import DeliveryRepository


class DeliveryLog:
    def __init__(self, hooks: HookService, store: DeliveryRepository) -> None:
        self._hooks = hooks
        self._store = store

    async def list_page(
        self, tenant_id: int, hook_id: int, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        await self._hooks.get(tenant_id, hook_id)
        return await self._store.list_page(
            tenant_id, hook_id, status=status, limit=limit, offset=offset
        )

    async def get(
        self, tenant_id: int, hook_id: int, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]]:
        await self._hooks.get(tenant_id, hook_id)
        found = await self._store.get(tenant_id, hook_id, delivery_id)
        if found is None:
            raise NotFound(
                f"delivery {delivery_id} does not exist for hook {hook_id}",
                field="PathParameters.delivery_id",
            )
        return found

    async def redeliver(self, tenant_id: int, hook_id: int, delivery_id: str) -> Delivery:
        hook = await self._hooks.get(tenant_id, hook_id)
        delivery, _ = await self.get(tenant_id, hook_id, delivery_id)
        if hook.is_deleted:
            raise Conflict(f"hook {hook_id} is deleted", field="PathParameters.hook_id")
        if delivery.event == "Ping":
            raise Conflict("pings are not redelivered; ping the hook again")
        if delivery.status == DeliveryStatus.PENDING:
            raise Conflict("the delivery is already queued", field="PathParameters.delivery_id")
        redelivered = await self._store.redeliver(tenant_id, hook_id, delivery_id, now=utc_now())
        if redelivered is None:
            raise Conflict("the delivery is already queued", field="PathParameters.delivery_id")
        return redelivered

    async def recover(
        self, tenant_id: int, hook_id: int, *, since: datetime, until: datetime | None
    ) -> int:
        hook = await self._hooks.get(tenant_id, hook_id)
        if hook.is_deleted:
            raise Conflict(f"hook {hook_id} is deleted", field="PathParameters.hook_id")
        now = utc_now()
        return await self._store.recover(
            tenant_id, hook_id, since=since, until=until or now, now=now
        )
