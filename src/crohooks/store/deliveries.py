"""The delivery queue and log: intake, lease-based claims, outcomes, redelivery, retention.

A pending delivery is due when ``next_attempt_at <= now``. Claiming it moves
``next_attempt_at`` to the end of its lease and stamps ``leased_by``/``lease_expires_at``;
so a worker that dies mid-attempt leaves a delivery that simply falls due again when the
lease ends, with no sweeper. An outcome is applied only while the lease is still the one
the worker took (fencing on ``leased_by`` and ``lease_expires_at``), so a late worker can't
overwrite the state a newer attempt wrote; its attempt row is still kept in the log.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from crohooks.clock import to_cro
from crohooks.errors import DuplicateKey
from crohooks.store.database import Database
from crohooks.store.hooks import HookRepository, cancel_pending_deliveries
from crohooks.store.schema import attempts, deliveries, events, hooks

NOTIFY_CHANNEL = "crohooks_deliveries"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def render_delivery_body(
    *,
    data_json: str,
    delivery_id: str,
    event: str,
    event_id: str,
    hook_id: int,
    tenant_id: int,
    timestamp: str,
) -> str:
    """The body of spec 3.1, identical to ``json.dumps(body, sort_keys=True)``.

    ``data_json`` is the publisher's object already rendered with ``sort_keys=True``; it is
    rendered once per event and spliced into each hook's body ("data" sorts first).
    """
    tail = json.dumps(
        {
            "delivery_id": delivery_id,
            "event": event,
            "event_id": event_id,
            "hook_id": hook_id,
            "tenant_id": tenant_id,
            "timestamp": timestamp,
        },
        sort_keys=True,
    )
    return '{"data": ' + data_json + ", " + tail[1:]


@dataclass(frozen=True, slots=True)
class NewEvent:
    event: str
    data: dict[str, Any]
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    event_id: str
    hook_count: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    tenant_id: int
    hook_id: int
    event: str
    body: bytes
    attempts: int
    url: str
    secret: str
    previous_secrets: tuple[str, ...]
    leased_by: str
    lease_expires_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one attempt sent and got back, as the delivery log shows it."""

    started_at: datetime
    duration_ms: float
    http_status: int
    message: str
    request_headers: dict[str, str]
    response_headers: list[tuple[str, str]] | None = None
    response_body: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """An attempt's result and the delivery state it leads to."""

    delivery: ClaimedDelivery
    attempt: AttemptRecord
    status: DeliveryStatus
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    tenant_id: int
    hook_id: int
    event_id: str | None
    event: str
    body: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    last_http_status: int | None
    last_message: str | None


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    started_at: datetime
    duration_ms: float
    http_status: int
    message: str
    request_headers: dict[str, str]
    response_headers: list[list[str]] | None
    response_body: str | None


@dataclass(slots=True)
class ClaimPolicy:
    limit: int
    per_hook_cap: int
    lease: timedelta
    worker_id: str
    busy_hooks: dict[int, int] = field(default_factory=dict)


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(**{name: m[name] for name in Delivery.__dataclass_fields__})


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- intake -----------------------------------------------------------------------

    async def accept(
        self,
        tenant_id: int,
        items: Sequence[NewEvent],
        *,
        now: datetime,
        idempotency_window: timedelta,
    ) -> list[AcceptedEvent]:
        """Store events and one delivery per subscribed active hook, in one transaction."""
        try:
            async with self._db.write() as conn:
                accepted = [
                    await self._accept_one(conn, tenant_id, item, now, idempotency_window)
                    for item in items
                ]
                if any(not a.duplicate and a.hook_count for a in accepted):
                    await self._notify(conn)
                return accepted
        except IntegrityError as error:
            # Two publishers raced on one idempotency key; the loser retries and finds it.
            raise DuplicateKey("idempotency_key") from error

    async def _accept_one(
        self,
        conn: AsyncConnection,
        tenant_id: int,
        item: NewEvent,
        now: datetime,
        window: timedelta,
    ) -> AcceptedEvent:
        if item.idempotency_key is not None:
            existing = (
                await conn.execute(
                    select(events.c.id, events.c.hook_count, events.c.accepted_at).where(
                        and_(
                            events.c.tenant_id == tenant_id,
                            events.c.idempotency_key == item.idempotency_key,
                        )
                    )
                )
            ).first()
            if existing is not None:
                if existing.accepted_at > now - window:
                    return AcceptedEvent(existing.id, existing.hook_count, duplicate=True)
                await conn.execute(
                    update(events).where(events.c.id == existing.id).values(idempotency_key=None)
                )
        subscribed = await HookRepository.active_subscribed(conn, tenant_id, item.event)
        event_id = str(uuid.uuid4())
        data_json = json.dumps(item.data, sort_keys=True)
        timestamp = to_cro(now)
        assert timestamp is not None
        await conn.execute(
            events.insert().values(
                id=event_id,
                tenant_id=tenant_id,
                event=item.event,
                data=data_json,
                idempotency_key=item.idempotency_key,
                hook_count=len(subscribed),
                accepted_at=now,
            )
        )
        if subscribed:
            rows = []
            for hook in subscribed:
                delivery_id = str(uuid.uuid4())
                rows.append(
                    {
                        "id": delivery_id,
                        "tenant_id": tenant_id,
                        "hook_id": hook.id,
                        "event_id": event_id,
                        "event": item.event,
                        "body": render_delivery_body(
                            data_json=data_json,
                            delivery_id=delivery_id,
                            event=item.event,
                            event_id=event_id,
                            hook_id=hook.id,
                            tenant_id=tenant_id,
                            timestamp=timestamp,
                        ),
                        "status": DeliveryStatus.PENDING.value,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            await conn.execute(deliveries.insert(), rows)
        return AcceptedEvent(event_id, len(subscribed), duplicate=False)

    async def _notify(self, conn: AsyncConnection) -> None:
        if self._db.dialect == "postgresql":
            await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))

    # -- claims -----------------------------------------------------------------------

    async def claim(self, policy: ClaimPolicy, *, now: datetime) -> list[ClaimedDelivery]:
        """Lease up to ``policy.limit`` due deliveries.

        First attempts and retries are read side by side so a backlog of retries can't
        starve fresh events, and no hook gets more than ``per_hook_cap`` deliveries in
        flight across all workers. Candidates are locked with SKIP LOCKED on PostgreSQL
        (SQLite's BEGIN IMMEDIATE already serialises claimers); the ones not chosen are
        released when the transaction ends.
        """
        if policy.limit <= 0:
            return []
        scan = policy.limit * 4
        async with self._db.write() as conn:
            first = await self._candidates(conn, now, scan, first_attempts=True)
            retries = await self._candidates(conn, now, scan, first_attempts=False)
            candidates = _interleave(first, retries)
            if not candidates:
                return []
            hook_ids = {row.hook_id for row in candidates}
            in_flight = await self._in_flight(conn, hook_ids, now)
            chosen: list[Row[Any]] = []
            cancelled: set[int] = set()
            taken: dict[int, int] = defaultdict(int)
            for row in candidates:
                if row.deleted_at is not None:
                    cancelled.add(row.hook_id)
                    continue
                load = in_flight.get(row.hook_id, 0) + taken[row.hook_id]
                if load >= policy.per_hook_cap:
                    continue
                taken[row.hook_id] += 1
                chosen.append(row)
                if len(chosen) >= policy.limit:
                    break
            if cancelled:
                await cancel_pending_deliveries(conn, sorted(cancelled), now=now)
            if not chosen:
                return []
            expires = now + policy.lease
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_([row.id for row in chosen]))
                .values(
                    leased_by=policy.worker_id,
                    lease_expires_at=expires,
                    next_attempt_at=expires,
                    updated_at=now,
                )
            )
        return [
            ClaimedDelivery(
                id=row.id,
                tenant_id=row.tenant_id,
                hook_id=row.hook_id,
                event=row.event,
                body=row.body.encode("utf-8"),
                attempts=row.attempts,
                url=row.url,
                secret=row.secret,
                previous_secrets=(row.previous_secret,)
                if row.previous_secret
                and row.previous_secret_until is not None
                and row.previous_secret_until > now
                else (),
                leased_by=policy.worker_id,
                lease_expires_at=expires,
            )
            for row in chosen
        ]

    async def _candidates(
        self, conn: AsyncConnection, now: datetime, limit: int, *, first_attempts: bool
    ) -> list[Row[Any]]:
        attempt_filter = deliveries.c.attempts == 0 if first_attempts else deliveries.c.attempts > 0
        query = (
            select(
                deliveries.c.id,
                deliveries.c.tenant_id,
                deliveries.c.hook_id,
                deliveries.c.event,
                deliveries.c.body,
                deliveries.c.attempts,
                hooks.c.url,
                hooks.c.secret,
                hooks.c.previous_secret,
                hooks.c.previous_secret_until,
                hooks.c.deleted_at,
            )
            .join(hooks, hooks.c.id == deliveries.c.hook_id)
            .where(
                and_(
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                    attempt_filter,
                    deliveries.c.next_attempt_at <= now,
                )
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(of=deliveries, skip_locked=True)
        )
        return list(await conn.execute(query))

    async def _in_flight(
        self, conn: AsyncConnection, hook_ids: set[int], now: datetime
    ) -> dict[int, int]:
        rows = await conn.execute(
            select(deliveries.c.hook_id, func.count())
            .where(
                and_(
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                    deliveries.c.lease_expires_at.is_not(None),
                    deliveries.c.lease_expires_at > now,
                    deliveries.c.hook_id.in_(hook_ids),
                )
            )
            .group_by(deliveries.c.hook_id)
        )
        return {hook_id: count for hook_id, count in rows}

    # -- outcomes ---------------------------------------------------------------------

    async def record(self, outcomes: Sequence[Outcome], *, now: datetime) -> int:
        """Write a batch of attempt outcomes in one transaction; returns how many applied."""
        if not outcomes:
            return 0
        applied = 0
        async with self._db.write() as conn:
            for outcome in outcomes:
                claimed = outcome.delivery
                number = claimed.attempts + 1
                await conn.execute(
                    attempts.insert().values(**_attempt_row(claimed.id, number, outcome.attempt))
                )
                final = outcome.status is not DeliveryStatus.PENDING
                result = await conn.execute(
                    update(deliveries)
                    .where(
                        and_(
                            deliveries.c.id == claimed.id,
                            deliveries.c.status == DeliveryStatus.PENDING.value,
                            deliveries.c.leased_by == claimed.leased_by,
                            deliveries.c.lease_expires_at == claimed.lease_expires_at,
                        )
                    )
                    .values(
                        status=outcome.status.value,
                        attempts=deliveries.c.attempts + 1,
                        next_attempt_at=outcome.next_attempt_at,
                        lease_expires_at=None,
                        leased_by=None,
                        updated_at=now,
                        completed_at=now if final else None,
                        last_http_status=outcome.attempt.http_status,
                        last_message=outcome.attempt.message,
                    )
                )
                applied += result.rowcount
                await HookRepository.record_outcome(
                    conn,
                    claimed.tenant_id,
                    claimed.hook_id,
                    succeeded=200 <= outcome.attempt.http_status < 300,
                    at=outcome.attempt.started_at,
                )
        return applied

    async def record_ping(
        self,
        *,
        delivery_id: str,
        tenant_id: int,
        hook_id: int,
        body: str,
        attempt: AttemptRecord,
        now: datetime,
    ) -> None:
        """A ping is a delivery of its own, attempted once, never retried."""
        succeeded = 200 <= attempt.http_status < 300
        async with self._db.write() as conn:
            await conn.execute(
                deliveries.insert().values(
                    id=delivery_id,
                    tenant_id=tenant_id,
                    hook_id=hook_id,
                    event_id=None,
                    event="Ping",
                    body=body,
                    status=(DeliveryStatus.SUCCEEDED if succeeded else DeliveryStatus.FAILED).value,
                    attempts=1,
                    next_attempt_at=None,
                    created_at=attempt.started_at,
                    updated_at=now,
                    completed_at=now,
                    last_http_status=attempt.http_status,
                    last_message=attempt.message,
                )
            )
            await conn.execute(attempts.insert().values(**_attempt_row(delivery_id, 1, attempt)))
            await HookRepository.record_outcome(
                conn, tenant_id, hook_id, succeeded=succeeded, at=attempt.started_at
            )

    # -- the log ----------------------------------------------------------------------

    async def list_page(
        self, tenant_id: int, hook_id: int, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        condition = and_(deliveries.c.tenant_id == tenant_id, deliveries.c.hook_id == hook_id)
        if status is not None:
            condition = and_(condition, deliveries.c.status == status)
        async with self._db.read() as conn:
            total = (await conn.execute(select(func.count()).where(condition))).scalar_one()
            rows = await conn.execute(
                select(deliveries)
                .where(condition)
                .order_by(deliveries.c.created_at.desc(), deliveries.c.id)
                .limit(limit)
                .offset(offset)
            )
            return [_delivery(row) for row in rows], total

    async def get(
        self, tenant_id: int, hook_id: int, delivery_id: str
    ) -> tuple[Delivery, list[Attempt]] | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(deliveries).where(
                        and_(
                            deliveries.c.tenant_id == tenant_id,
                            deliveries.c.hook_id == hook_id,
                            deliveries.c.id == delivery_id,
                        )
                    )
                )
            ).first()
            if row is None:
                return None
            rows = await conn.execute(
                select(attempts)
                .where(attempts.c.delivery_id == delivery_id)
                .order_by(attempts.c.number, attempts.c.id)
            )
            return _delivery(row), [_attempt(r) for r in rows]

    async def redeliver(
        self, tenant_id: int, hook_id: int, delivery_id: str, *, now: datetime
    ) -> Delivery | None:
        """Make a finished delivery due again now, keeping its id (receivers dedupe on it)."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    and_(
                        deliveries.c.tenant_id == tenant_id,
                        deliveries.c.hook_id == hook_id,
                        deliveries.c.id == delivery_id,
                        deliveries.c.status != DeliveryStatus.PENDING.value,
                    )
                )
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    completed_at=None,
                    updated_at=now,
                    lease_expires_at=None,
                    leased_by=None,
                )
                .returning(*deliveries.c)
            )
            row = result.first()
            if row is not None:
                await self._notify(conn)
            return _delivery(row) if row is not None else None

    async def recover(
        self, tenant_id: int, hook_id: int, *, since: datetime, until: datetime, now: datetime
    ) -> int:
        """Re-queue the failed event deliveries of a window (pings are not re-sent)."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(deliveries)
                .where(
                    and_(
                        deliveries.c.tenant_id == tenant_id,
                        deliveries.c.hook_id == hook_id,
                        deliveries.c.status == DeliveryStatus.FAILED.value,
                        deliveries.c.event != "Ping",
                        deliveries.c.created_at >= since,
                        deliveries.c.created_at < until,
                    )
                )
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    completed_at=None,
                    updated_at=now,
                )
            )
            if result.rowcount:
                await self._notify(conn)
            return result.rowcount

    # -- housekeeping -----------------------------------------------------------------

    async def deactivate_failing_hooks(
        self, *, failing_for: timedelta, now: datetime
    ) -> list[tuple[int, int]]:
        """Soft-delete hooks that have failed without one success for ``failing_for``."""
        async with self._db.write() as conn:
            rows = await conn.execute(
                update(hooks)
                .where(
                    and_(
                        hooks.c.deleted_at.is_(None),
                        hooks.c.failing_since.is_not(None),
                        hooks.c.failing_since < now - failing_for,
                    )
                )
                .values(
                    deleted_at=now,
                    updated_at=now,
                    deleted_reason=f"auto-deactivated: no success for {failing_for}",
                )
                .returning(hooks.c.id, hooks.c.tenant_id)
            )
            found = [(hook_id, tenant_id) for hook_id, tenant_id in rows]
            if found:
                await cancel_pending_deliveries(conn, [hook_id for hook_id, _ in found], now=now)
            return found

    async def purge(self, *, older_than: datetime, batch: int = 500) -> int:
        """Delete one small batch of finished deliveries (with attempts) older than a time."""
        async with self._db.write() as conn:
            ids = list(
                (
                    await conn.execute(
                        select(deliveries.c.id)
                        .where(
                            and_(
                                deliveries.c.created_at < older_than,
                                deliveries.c.status != DeliveryStatus.PENDING.value,
                            )
                        )
                        .limit(batch)
                    )
                ).scalars()
            )
            if ids:
                await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(ids)))
                await conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))
            old_events = select(events.c.id).where(events.c.accepted_at < older_than).limit(batch)
            orphan = old_events.where(
                ~select(deliveries.c.id).where(deliveries.c.event_id == events.c.id).exists()
            )
            event_ids = list((await conn.execute(orphan)).scalars())
            if event_ids:
                await conn.execute(delete(events).where(events.c.id.in_(event_ids)))
            return len(ids)

    async def counts(self) -> dict[str, int]:
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            )
            return {status: count for status, count in rows}


def _interleave(first: list[Row[Any]], retries: list[Row[Any]]) -> list[Row[Any]]:
    merged: list[Row[Any]] = []
    for pair in zip(first, retries, strict=False):
        merged.extend(pair)
    shorter = min(len(first), len(retries))
    merged.extend(first[shorter:])
    merged.extend(retries[shorter:])
    return merged


def _attempt_row(delivery_id: str, number: int, attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "number": number,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "http_status": attempt.http_status,
        "message": attempt.message,
        "request_headers": json.dumps(attempt.request_headers, sort_keys=True),
        "response_headers": json.dumps(attempt.response_headers)
        if attempt.response_headers is not None
        else None,
        "response_body": attempt.response_body,
    }


def _attempt(row: Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(
        number=m["number"],
        started_at=m["started_at"],
        duration_ms=m["duration_ms"],
        http_status=m["http_status"],
        message=m["message"],
        request_headers=json.loads(m["request_headers"]),
        response_headers=json.loads(m["response_headers"]) if m["response_headers"] else None,
        response_body=m["response_body"],
    )
