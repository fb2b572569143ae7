"""Ping (the seed page): a synchronous, signed ``Ping`` delivery, recorded, never retried."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from crohooks import metrics
from crohooks.clock import to_cro, utc_now
from crohooks.delivery.attempt import NO_EXCEPTION, send_attempt
from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.outbound import OutboundClient
from crohooks.hooks.service import HookService
from crohooks.model import Hook
from crohooks.store.deliveries import DeliveryRepository
from crohooks.store.hook_settings import HookSettingsRepository


@dataclass(frozen=True, slots=True)
class PingResult:
    delivery_id: str
    http_status: int
    message: str
    signature: str
    """The exact ``X-Cro-Signature`` sent, echoed to the caller to compare with the receiver's."""


class PingService:
    def __init__(
        self,
        hooks: HookService,
        settings: HookSettingsRepository,
        store: DeliveryRepository,
        client: OutboundClient,
        *,
        timeout: float,
    ) -> None:
        self._hooks = hooks
        self._settings = settings
        self._store = store
        self._client = client
        self._timeout = timeout

    async def ping(self, tenant_id: int, hook_id: int) -> PingResult:
        return await self.send(tenant_id, await self._hooks.get_active(tenant_id, hook_id))

    async def send(self, tenant_id: int, hook: Hook) -> PingResult:
        """Ping a hook already read (``HookService.get_active``), with its own headers and
        receiver auth; a disabled hook is pinged too (it is how an owner tests a fix)."""
        controls = await self._settings.get(tenant_id, hook.id)
        now = utc_now()
        delivery_id = str(uuid.uuid4())
        timestamp = to_cro(now)
        assert timestamp is not None
        body = render_delivery_body(
            data_json=json.dumps({"hook_id": hook.id, "url": hook.url}, sort_keys=True),
            delivery_id=delivery_id,
            event="Ping",
            event_id=str(uuid.uuid4()),
            hook_id=hook.id,
            tenant_id=tenant_id,
            timestamp=timestamp,
        )
        result = await send_attempt(
            self._client,
            url=hook.url,
            body=body.encode("utf-8"),
            secret=hook.secret,
            previous_secrets=hook.live_previous_secrets(now),
            delivery_id=delivery_id,
            event="Ping",
            hook_id=hook.id,
            timeout=self._timeout,
            receiver_headers=controls.outbound_headers() if controls is not None else None,
        )
        await self._store.record_ping(
            delivery_id=delivery_id,
            tenant_id=tenant_id,
            hook_id=hook.id,
            body=body,
            attempt=result.record,
            now=utc_now(),
        )
        metrics.pings.labels(metrics.status_class(result.record.http_status)).inc()
        # The spec's (and CRO's) ping message is "No exceptions raised." whenever a
        # response came, whatever its status; the delivery log says which status it was.
        return PingResult(
            delivery_id=delivery_id,
            http_status=result.record.http_status,
            message=NO_EXCEPTION if result.response is not None else result.record.message,
            signature=result.headers["X-Cro-Signature"],
        )
