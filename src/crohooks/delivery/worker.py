"""The delivery worker: claim due deliveries, POST them, write outcomes back in batches.

Many workers may run against one PostgreSQL database; each is stateless beyond its
leases. HTTP calls never happen inside a database transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from crohooks import metrics, tracing
from crohooks.clock import utc_now
from crohooks.delivery.attempt import send_attempt
from crohooks.delivery.outbound import OutboundClient
from crohooks.delivery.retry import RETRY_AFTER_STATUSES, RetryPolicy
from crohooks.errors import DatabaseUnavailable
from crohooks.model import ClaimedDelivery, ClaimPolicy, DeliveryStatus, Outcome
from crohooks.settings import Settings
from crohooks.store.housekeeping import Housekeeping
from crohooks.store.queue import DeliveryQueue

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = structlog.get_logger("crohooks.worker")

MAINTENANCE_INTERVAL = 60.0
_OUTCOME_LABELS = {
    DeliveryStatus.SUCCEEDED: "succeeded",
    DeliveryStatus.PENDING: "retrying",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.CANCELLED: "cancelled",
}
_DELIVERIES_BY_OUTCOME = {
    status: metrics.deliveries.labels(label) for status, label in _OUTCOME_LABELS.items()
}
PURGE_BATCHES_PER_ROUND = 20


class DeliveryWorker:
    def __init__(
        self,
        settings: Settings,
        queue: DeliveryQueue,
        housekeeping: Housekeeping,
        client: OutboundClient,
        *,
        concurrency: int | None = None,
    ) -> None:
        self._settings = settings
        self._queue = queue
        self._housekeeping = housekeeping
        self._client = client
        self._concurrency = concurrency or settings.worker_concurrency
        self._retry = RetryPolicy.from_settings(settings)
        self.worker_id = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._recorded = asyncio.Event()
        self._claim_batch = min(self._concurrency, 100)
        # Claiming a handful of slots at a time costs a whole claim transaction each; wait
        # for a quarter of the slots unless the worker is idle.
        self._claim_at_least = max(1, self._concurrency // 4)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then finish what is in flight and write it down."""
        log.info("worker started", worker_id=self.worker_id, concurrency=self._concurrency)
        helpers = [
            asyncio.create_task(self._flush_loop(stop), name="crohooks-flush"),
            asyncio.create_task(self._maintenance_loop(stop), name="crohooks-maintenance"),
        ]
        listening = asyncio.create_task(self._listen_loop(stop), name="crohooks-listen")
        try:
            await self._claim_loop(stop)
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)
            stop.set()
            self._outcome_ready.set()
            listening.cancel()  # it may be waiting out a whole poll interval
            await asyncio.gather(listening, *helpers, return_exceptions=True)
            await self._flush()
            log.info("worker stopped", worker_id=self.worker_id)

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        lease = timedelta(seconds=self._settings.lease_seconds)
        while not stop.is_set():
            # Cleared before the claim, so a wake-up that lands during it is not lost.
            self._wakeup.clear()
            self._slot_freed.clear()
            self._recorded.clear()
            free = self._concurrency - len(self._in_flight)
            worth_claiming = free >= self._claim_at_least or (free > 0 and not self._in_flight)
            if worth_claiming:
                limit = min(free, self._claim_batch)
                claim_started = utc_now()
                try:
                    claimed = await self._queue.claim(
                        ClaimPolicy(
                            limit=limit,
                            per_hook_cap=self._settings.per_hook_inflight,
                            lease=lease,
                            worker_id=self.worker_id,
                            # Rate-limited hooks get send slots up to the next poll.
                            rate_horizon=timedelta(seconds=self._settings.poll_interval),
                        ),
                        now=utc_now(),
                    )
                except DatabaseUnavailable:  # logged once by the store; back off, resume alone
                    await _wait_any(stop, timeout=self._settings.poll_interval)
                    continue
                except Exception:
                    log.exception("claim failed", worker_id=self.worker_id)
                    await _wait_any(stop, timeout=self._settings.poll_interval)
                    continue
                if tracing.tracer() is not None:
                    self._trace_claim(claimed, started=claim_started)
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver(delivery))
                    self._in_flight.add(task)
                    task.add_done_callback(self._task_done)
                if len(claimed) == limit:
                    await asyncio.sleep(0)
                    continue
            # Wake for new work, for free slots, and after outcomes are written: a hook at
            # its in-flight cap gets room only once its finished attempts are recorded.
            waiters = [self._wakeup, stop, self._recorded]
            if not worth_claiming:
                waiters.append(self._slot_freed)
            await _wait_any(*waiters, timeout=self._settings.poll_interval)

    def _trace_claim(self, claimed: list[ClaimedDelivery], *, started: datetime) -> None:
        """One claim span in each claimed delivery's trace, as long as the claim took."""
        for delivery in claimed:
            attributes = {
                "crohooks.delivery_id": delivery.id,
                "crohooks.worker_id": self.worker_id,
                "crohooks.claimed": len(claimed),
            }
            with tracing.child_of(
                delivery.trace_context, "crohooks.claim", attributes=attributes, start=started
            ):
                pass

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task failed", error=repr(task.exception()))

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        if tracing.tracer() is None:
            await self._attempt(delivery, None)
            return
        attributes = {
            "crohooks.delivery_id": delivery.id,
            "crohooks.hook_id": delivery.hook_id,
            "crohooks.tenant_id": delivery.tenant_id,
            "crohooks.attempt": delivery.attempts + 1,
        }
        with tracing.child_of(
            delivery.trace_context, "crohooks.attempt", attributes=attributes, kind="CLIENT"
        ) as span:
            await self._attempt(delivery, span)

    async def _attempt(self, delivery: ClaimedDelivery, span: Span | None) -> None:
        if delivery.not_before is not None:  # the hook's rate limit gave it a later slot
            await asyncio.sleep(max(0.0, (delivery.not_before - utc_now()).total_seconds()))
        sent = tracing.traceparent(span) if span is not None else None
        extra_headers = ordering_headers(delivery)
        if sent is not None and self._settings.trace_receivers:
            extra_headers["traceparent"] = sent
        result = await send_attempt(
            self._client,
            url=delivery.url,
            body=delivery.body,
            secret=delivery.secret,
            previous_secrets=delivery.previous_secrets,
            delivery_id=delivery.id,
            event=delivery.event,
            hook_id=delivery.hook_id,
            timeout=self._settings.attempt_timeout,
            extra_headers=extra_headers or None,
            receiver_headers=delivery.receiver_headers,
        )
        now = utc_now()
        response = result.response
        retry_after = (
            response.header("Retry-After")
            if response is not None and response.status in RETRY_AFTER_STATUSES
            else None
        )
        decision = self._retry.decide(
            attempts_made=delivery.attempts + 1,
            deferrals=delivery.deferrals,
            created_at=delivery.created_at,
            http_status=result.record.http_status,
            retry_after=retry_after,
            now=now,
        )
        status = decision.status
        outcome = _OUTCOME_LABELS[status]
        if span is not None:
            span.set_attributes(
                {
                    "http.response.status_code": result.record.http_status,
                    "crohooks.outcome": outcome,
                    "crohooks.duration_ms": result.record.duration_ms,
                }
            )
        _DELIVERIES_BY_OUTCOME[status].inc()
        metrics.attempt_seconds.observe(result.record.duration_ms / 1000.0)
        if delivery.reclaimed:
            metrics.lease_expiries.inc()
        log.info(
            "delivery attempt",
            delivery_id=delivery.id,
            hook_id=delivery.hook_id,
            tenant_id=delivery.tenant_id,
            hook_event=delivery.event,
            attempt=delivery.attempts + 1,
            http_status=result.record.http_status,
            outcome=outcome,
            deferred=decision.deferred,
            duration_ms=result.record.duration_ms,
            message=result.record.message,
        )
        self._outcomes.append(
            Outcome(
                delivery=delivery,
                attempt=result.record,
                status=status,
                next_attempt_at=decision.next_attempt_at,
                deferred=decision.deferred,
            )
        )
        self._outcome_ready.set()

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                await self._queue.record(batch, now=utc_now())
                self._recorded.set()
            except Exception as error:
                if not isinstance(error, DatabaseUnavailable):
                    log.exception("recording outcomes failed; retrying", count=len(batch))
                self._outcomes[:0] = batch
                await asyncio.sleep(1.0)

    async def _maintenance_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await self.maintain()
            await _wait_any(stop, timeout=MAINTENANCE_INTERVAL)

    async def maintain(self) -> None:
        """Auto-disable hooks failing for too long; purge old deliveries in small batches."""
        now = utc_now()
        failing_for = timedelta(seconds=self._settings.auto_deactivate_after_seconds)
        for hook_id, tenant_id in await self._housekeeping.deactivate_failing_hooks(
            failing_for=failing_for, now=now
        ):
            log.warning(
                "hook auto-disabled",
                hook_id=hook_id,
                tenant_id=tenant_id,
                reason=f"every delivery failed for {failing_for}",
            )
        cutoff = now - timedelta(days=self._settings.retention_days)
        await self._housekeeping.expire_held(older_than=cutoff, now=now)
        for _ in range(PURGE_BATCHES_PER_ROUND):
            if await self._housekeeping.purge(older_than=cutoff) == 0:
                break

    async def _listen_loop(self, stop: asyncio.Event) -> None:
        """Wake the claim loop when work is announced; polling covers whatever is missed."""
        while not stop.is_set():
            try:
                await self._queue.wait_for_work(self._settings.poll_interval)
            except Exception:  # the store logs its own outages; polling goes on meanwhile
                await _wait_any(stop, timeout=self._settings.poll_interval)
                continue
            self._wakeup.set()


def ordering_headers(delivery: ClaimedDelivery) -> dict[str, str]:
    """A keyed delivery's place in its (hook, key) (spec 3.5); none for an unkeyed one."""
    if delivery.sequence is None:
        return {}
    headers = {"X-Cro-Sequence": str(delivery.sequence)}
    if delivery.redelivered:
        headers["X-Cro-Redelivery"] = "true"
    return headers


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:  # noqa: ASYNC109
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
