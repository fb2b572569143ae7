"""Event intake: events and their deliveries, durable together, idempotent per tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from crohooks.clock import to_cro
from crohooks.errors import DuplicateKey
from crohooks.model import AcceptedEvent, NewEvent
from crohooks.store.connector import Connection, Database, Dialect, Statement
from crohooks.store.ordering import OrderingKey, next_sequences, settle_keys

_EARLIER_EVENT = Statement.shared(
    "intake_earlier_event",
    """
    SELECT id, hook_count, accepted_at FROM events
    WHERE tenant_id = :tenant_id AND idempotency_key = :key""",
)
_RELEASE_KEY = Statement.shared(
    "intake_release_key", "UPDATE events SET idempotency_key = NULL WHERE id = :id"
)
_INSERT_EVENT = Statement.shared(
    "intake_insert_event",
    """
    INSERT INTO events (id, tenant_id, event, data, idempotency_key, hook_count, accepted_at)
    VALUES (:id, :tenant_id, :event, :data, :idempotency_key, :hook_count, :accepted_at)""",
)
# Every active hook of the tenant, read once per batch: which events each takes, and its
# payload filter (hook settings), if any.
_SUBSCRIBERS = Statement.shared(
    "intake_subscribers",
    "SELECT id, events, filter FROM hooks"
    " WHERE tenant_id = :tenant_id AND deleted_at IS NULL ORDER BY id",
)
_INSERT_DELIVERY = Statement.shared(
    "intake_insert_delivery",
    """
    INSERT INTO deliveries (id, tenant_id, hook_id, event_id, event, body, status, attempts,
                            next_attempt_at, created_at, updated_at, trace_context,
                            ordering_key, sequence)
    VALUES (:id, :tenant_id, :hook_id, :event_id, :event, :body, 'pending', 0,
            :next_attempt_at, :now, :now, :trace_context, :ordering_key, :sequence)""",
)


class BodyRenderer(Protocol):
    """The body a hook receives (``delivery.body.render_delivery_body``): the wire format
    is the delivery room's, so the store is handed it rather than importing it."""

    def __call__(
        self,
        *,
        data_json: str,
        delivery_id: str,
        event: str,
        event_id: str,
        hook_id: int,
        tenant_id: int,
        timestamp: str,
        ordering_key: str | None = None,
        sequence: int | None = None,
    ) -> str: ...


class FilterJudge(Protocol):
    """Judges one event for the hooks that filter their events (``delivery.intake``): the
    expression language is the delivery room's, so the store is handed it. The judge it
    returns answers, for a hook id and its filter, whether that hook gets the event."""

    def __call__(
        self, *, tenant_id: int, event_id: str, event: str, data: dict[str, Any]
    ) -> Callable[[int, str], bool]: ...


@dataclass(frozen=True, slots=True)
class _Subscriber:
    hook_id: int
    filter: str | None


@dataclass(slots=True)
class _Batch:
    """The rows of one accepted batch, written together when the batch is complete."""

    tenant_id: int
    dialect: Dialect
    now: datetime
    timestamp: str
    render_body: BodyRenderer
    trace_context: str | None
    """The intake's trace context (a W3C ``traceparent``), stored with each delivery."""
    judge: FilterJudge | None
    subscribers: dict[str, list[_Subscriber]] | None = None
    """By event name, read at the batch's first event."""
    keys: dict[str, AcceptedEvent] = field(default_factory=dict)
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    delivery_rows: list[dict[str, Any]] = field(default_factory=list)
    keyed_rows: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """The rows of keyed deliveries, with their event's data: their bodies are rendered
    once their sequence numbers are known."""


class Intake:
    def __init__(
        self, db: Database, render_body: BodyRenderer, judge: FilterJudge | None = None
    ) -> None:
        """Without a ``judge``, hooks' payload filters are not applied (every subscribed
        hook gets every event)."""
        self._db = db
        self._render_body = render_body
        self._judge = judge

    async def accept(
        self,
        tenant_id: int,
        items: Sequence[NewEvent],
        *,
        now: datetime,
        idempotency_window: timedelta,
        trace_context: str | None = None,
    ) -> list[AcceptedEvent]:
        """Store events and one delivery per subscribed active hook whose filter (if any)
        takes the event, in one transaction.

        The rows of the whole batch are written by two batched inserts at the end, and the
        tenant's hooks are read once per batch. Workers are woken once it commits.
        """
        timestamp = to_cro(now)
        assert timestamp is not None
        batch = _Batch(
            tenant_id,
            self._db.dialect,
            now,
            timestamp,
            self._render_body,
            trace_context,
            self._judge,
        )
        try:
            async with self._db.write() as conn:
                accepted = [
                    await _accept_one(conn, batch, item, idempotency_window) for item in items
                ]
                joined = await _number_keyed(conn, batch) if batch.keyed_rows else []
                await conn.execute_many(_INSERT_EVENT, batch.event_rows)
                await conn.execute_many(_INSERT_DELIVERY, batch.delivery_rows)
                if joined:
                    await settle_keys(conn, batch.dialect, joined, now=now)
                if batch.delivery_rows:
                    conn.announce_work()
                return accepted
        except DuplicateKey as error:
            # Two publishers raced on one idempotency key; the loser retries and finds it.
            raise DuplicateKey("idempotency_key") from error


async def _accept_one(
    conn: Connection, batch: _Batch, item: NewEvent, window: timedelta
) -> AcceptedEvent:
    tenant_id, now = batch.tenant_id, batch.now
    key = item.idempotency_key
    if key is not None:
        earlier = batch.keys.get(key)
        if earlier is not None:
            return AcceptedEvent(earlier.event_id, earlier.hook_count, duplicate=True)
        rows = await conn.fetch(_EARLIER_EVENT, {"tenant_id": tenant_id, "key": key})
        if rows:
            existing = rows[0]
            if existing["accepted_at"] > now - window:
                return AcceptedEvent(existing["id"], existing["hook_count"], duplicate=True)
            await conn.execute(_RELEASE_KEY, {"id": existing["id"]})
    if batch.subscribers is None:
        batch.subscribers = await _subscribers(conn, tenant_id)
    event_id = str(uuid.uuid4())
    subscribed = batch.subscribers.get(item.event, [])
    if batch.judge is not None and any(hook.filter for hook in subscribed):
        wants = batch.judge(
            tenant_id=tenant_id, event_id=event_id, event=item.event, data=item.data
        )
        subscribed = [h for h in subscribed if h.filter is None or wants(h.hook_id, h.filter)]
    data_json = json.dumps(item.data, sort_keys=True)
    batch.event_rows.append(
        {
            "id": event_id,
            "tenant_id": tenant_id,
            "event": item.event,
            "data": data_json,
            "idempotency_key": key,
            "hook_count": len(subscribed),
            "accepted_at": now,
        }
    )
    for hook in subscribed:
        hook_id = hook.hook_id
        delivery_id = str(uuid.uuid4())
        row: dict[str, Any] = {
            "id": delivery_id,
            "tenant_id": tenant_id,
            "hook_id": hook_id,
            "event_id": event_id,
            "event": item.event,
            "body": "",
            "now": now,
            "next_attempt_at": now,
            "trace_context": batch.trace_context,
            "ordering_key": item.ordering_key,
            "sequence": None,
        }
        if item.ordering_key is None:
            row["body"] = batch.render_body(
                data_json=data_json,
                delivery_id=delivery_id,
                event=item.event,
                event_id=event_id,
                hook_id=hook_id,
                tenant_id=tenant_id,
                timestamp=batch.timestamp,
            )
        else:
            # It waits until settling makes it the head of its key (``store/ordering.py``).
            row["next_attempt_at"] = None
            batch.keyed_rows.append((row, data_json))
        batch.delivery_rows.append(row)
    accepted = AcceptedEvent(event_id, len(subscribed), duplicate=False)
    if key is not None:
        batch.keys[key] = accepted
    return accepted


async def _subscribers(conn: Connection, tenant_id: int) -> dict[str, list[_Subscriber]]:
    by_event: dict[str, list[_Subscriber]] = {}
    for row in await conn.fetch(_SUBSCRIBERS, {"tenant_id": tenant_id}):
        subscriber = _Subscriber(row["id"], row["filter"])
        for event in json.loads(row["events"]):
            by_event.setdefault(event, []).append(subscriber)
    return by_event


async def _number_keyed(conn: Connection, batch: _Batch) -> list[OrderingKey]:
    """Give the batch's keyed deliveries their sequence numbers, in publish order, and
    render their bodies; the keys that need settling.

    A key seen for the first time with one delivery needs none: that delivery is its head,
    due now. Any other key may have a head already, or updates to collapse."""
    added: dict[OrderingKey, int] = {}
    for row, _ in batch.keyed_rows:
        key = (row["hook_id"], row["ordering_key"])
        added[key] = added.get(key, 0) + 1
    following = await next_sequences(conn, batch.dialect, added)
    settling = [key for key, first in following.items() if first > 1 or added[key] > 1]
    for row, data_json in batch.keyed_rows:
        key = (row["hook_id"], row["ordering_key"])
        row["sequence"] = following[key]
        if row["sequence"] == 1 and added[key] == 1:
            row["next_attempt_at"] = batch.now
        following[key] += 1
        row["body"] = batch.render_body(
            data_json=data_json,
            delivery_id=row["id"],
            event=row["event"],
            event_id=row["event_id"],
            hook_id=row["hook_id"],
            tenant_id=batch.tenant_id,
            timestamp=batch.timestamp,
            ordering_key=row["ordering_key"],
            sequence=row["sequence"],
        )
    return settling
