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
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    BindParameter,
    Boolean,
    ColumnElement,
    Integer,
    Select,
    String,
    all_,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from crohooks.clock import to_cro
from crohooks.delivery.body import render_delivery_body
from crohooks.errors import DuplicateKey
from crohooks.model import (
    AcceptedEvent,
    Attempt,
    AttemptRecord,
    ClaimedDelivery,
    ClaimPolicy,
    Delivery,
    DeliveryStatus,
    Hook,
    NewEvent,
    Outcome,
)
from crohooks.store.database import Conn, Database, execute_many
from crohooks.store.hooks import (
    HookRepository,
    cancel_pending_deliveries,
    record_outcome_statement,
)
from crohooks.store.schema import UTCDateTime, attempts, deliveries, events, hooks

NOTIFY_CHANNEL = "crohooks_deliveries"


@dataclass(slots=True)
class _Intake:
    """The rows of one accepted batch, written together when the batch is complete."""

    tenant_id: int
    now: datetime
    timestamp: str
    subscribers: dict[str, list[Hook]] = field(default_factory=dict)
    keys: dict[str, AcceptedEvent] = field(default_factory=dict)
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    delivery_rows: list[dict[str, Any]] = field(default_factory=list)


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
        """Store events and one delivery per subscribed active hook, in one transaction.

        The rows of the whole batch are written by two multi-row inserts at the end, and
        each event type's subscribers are read once per batch.
        """
        timestamp = to_cro(now)
        assert timestamp is not None
        intake = _Intake(tenant_id=tenant_id, now=now, timestamp=timestamp)
        try:
            async with self._db.write() as conn:
                accepted = [
                    await self._accept_one(conn, intake, item, idempotency_window) for item in items
                ]
                await execute_many(conn, _INSERT_EVENT, intake.event_rows)
                await execute_many(conn, _INSERT_DELIVERY, intake.delivery_rows)
                if any(not a.duplicate and a.hook_count for a in accepted):
                    await self._notify(conn)
                return accepted
        except IntegrityError as error:
            # Two publishers raced on one idempotency key; the loser retries and finds it.
            raise DuplicateKey("idempotency_key") from error

    async def _accept_one(
        self,
        conn: Conn,
        intake: _Intake,
        item: NewEvent,
        window: timedelta,
    ) -> AcceptedEvent:
        tenant_id, now = intake.tenant_id, intake.now
        key = item.idempotency_key
        if key is not None:
            earlier = intake.keys.get(key)
            if earlier is not None:
                return AcceptedEvent(earlier.event_id, earlier.hook_count, duplicate=True)
            existing = (
                await conn.execute(
                    select(events.c.id, events.c.hook_count, events.c.accepted_at).where(
                        and_(
                            events.c.tenant_id == tenant_id,
                            events.c.idempotency_key == key,
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
        subscribed = intake.subscribers.get(item.event)
        if subscribed is None:
            subscribed = await HookRepository.active_subscribed(conn, tenant_id, item.event)
            intake.subscribers[item.event] = subscribed
        event_id = str(uuid.uuid4())
        data_json = json.dumps(item.data, sort_keys=True)
        intake.event_rows.append(
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
            delivery_id = str(uuid.uuid4())
            intake.delivery_rows.append(
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
                        timestamp=intake.timestamp,
                    ),
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        accepted = AcceptedEvent(event_id, len(subscribed), duplicate=False)
        if key is not None:
            intake.keys[key] = accepted
        return accepted

    async def _notify(self, conn: Conn) -> None:
        if self._db.dialect == "postgresql":
            await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))

    # -- claims -----------------------------------------------------------------------

    async def claim(self, policy: ClaimPolicy, *, now: datetime) -> list[ClaimedDelivery]:
        """Lease up to ``policy.limit`` due deliveries.

        First attempts and retries are read side by side so a backlog of retries can't
        starve fresh events, and no hook gets more than ``per_hook_cap`` deliveries in
        flight across all workers. Claims are serialised (SQLite's BEGIN IMMEDIATE, a
        transaction-scoped advisory lock on PostgreSQL): counting a hook's leases and
        adding to them must not interleave with another worker doing the same, or both
        would see room under the cap and fill it twice. Candidates are also locked with
        SKIP LOCKED on PostgreSQL, so rows another transaction holds are passed over.
        """
        if policy.limit <= 0:
            return []
        scan = policy.limit * 4
        due: dict[str, Any] = {"b_now": now, "b_limit": scan}
        async with self._db.write() as conn:
            if self._db.dialect == "postgresql":
                await conn.execute(_CLAIM_LOCK)
            # Hooks already at their cap are left out of the scan, so a slow hook with a
            # deep backlog can't fill the candidate window and starve the others.
            in_flight: dict[int, int] = {
                hook_id: count for hook_id, count in await conn.execute(_IN_FLIGHT, {"b_now": now})
            }
            due["b_saturated"] = [
                hook_id for hook_id, count in in_flight.items() if count >= policy.per_hook_cap
            ]
            dialect = self._db.dialect
            first = list(await conn.execute(_DUE_FIRST_ATTEMPTS[dialect], due))
            retries = list(await conn.execute(_DUE_RETRIES[dialect], due))
            candidates = _interleave(first, retries)
            if not candidates:
                return []
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
            leased = await conn.execute(
                _LEASE[self._db.dialect],
                {
                    "b_ids": [row.id for row in chosen],
                    "b_worker": policy.worker_id,
                    "b_expires": expires,
                    "b_now": now,
                },
            )
            leased_rows: dict[str, Row[Any]] = {row.id: row for row in leased}
        return [
            ClaimedDelivery(
                id=row.id,
                tenant_id=row.tenant_id,
                hook_id=row.hook_id,
                event=row.event,
                body=leased_rows[row.id].body.encode("utf-8"),
                attempts=row.attempts,
                deferrals=leased_rows[row.id].deferrals,
                created_at=leased_rows[row.id].created_at,
                url=row.url,
                secret=row.secret,
                previous_secrets=(row.previous_secret,)
                if row.previous_secret
                and row.previous_secret_until is not None
                and row.previous_secret_until > now
                else (),
                leased_by=policy.worker_id,
                lease_expires_at=expires,
                reclaimed=row.leased_by is not None,
            )
            for row in chosen
        ]

    # -- outcomes ---------------------------------------------------------------------

    async def record(self, outcomes: Sequence[Outcome], *, now: datetime) -> int:
        """Write a batch of attempt outcomes in one transaction; returns how many applied.

        Three statements whatever the batch size: the attempt rows, the fenced delivery
        updates and one update per hook (``hook_outcomes`` folds the batch, in order).
        """
        if not outcomes:
            return 0
        attempt_rows = []
        delivery_rows = []
        for outcome in outcomes:
            claimed = outcome.delivery
            attempt_rows.append(_attempt_row(claimed.id, claimed.attempts + 1, outcome.attempt))
            final = outcome.status is not DeliveryStatus.PENDING
            delivery_rows.append(
                {
                    "b_id": claimed.id,
                    "b_leased_by": claimed.leased_by,
                    "b_lease": claimed.lease_expires_at,
                    "b_status": outcome.status.value,
                    "b_next": outcome.next_attempt_at,
                    "b_now": now,
                    "b_completed": now if final else None,
                    "b_deferred": 1 if outcome.deferred else 0,
                    "b_http": outcome.attempt.http_status,
                    "b_message": outcome.attempt.message,
                }
            )
        hook_rows = [
            {
                "b_tenant": folded.tenant_id,
                "b_hook": folded.hook_id,
                "b_success": folded.last_success,
                "b_fail": folded.last_fail,
                "b_reset": folded.success_seen,
                "b_failing": folded.failing_since,
            }
            # Sorted, so two workers' batches lock shared hook rows in the same order.
            for folded in sorted(hook_outcomes(outcomes), key=lambda f: (f.hook_id, f.tenant_id))
        ]
        async with self._db.write() as conn:
            await execute_many(conn, _INSERT_ATTEMPT, attempt_rows)
            applied = await execute_many(conn, _RECORD_OUTCOME, delivery_rows)
            await execute_many(conn, _RECORD_HOOK_OUTCOME, hook_rows)
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
        row = {
            "id": delivery_id,
            "tenant_id": tenant_id,
            "hook_id": hook_id,
            "event_id": None,
            "event": "Ping",
            "body": body,
            "status": (DeliveryStatus.SUCCEEDED if succeeded else DeliveryStatus.FAILED).value,
            "attempts": 1,
            "deferrals": 0,
            "next_attempt_at": None,
            "lease_expires_at": None,
            "leased_by": None,
            "created_at": attempt.started_at,
            "updated_at": now,
            "completed_at": now,
            "last_http_status": attempt.http_status,
            "last_message": attempt.message,
        }
        attempt_row = _attempt_row(delivery_id, 1, attempt)
        if self._db.dialect == "postgresql":
            # One statement in autocommit: one round trip instead of five (BEGIN, three
            # statements, COMMIT), still all or nothing.
            parameters = {f"p_{name}": value for name, value in row.items()}
            parameters.update({f"a_{name}": value for name, value in attempt_row.items()})
            parameters.update(
                {"b_tenant": tenant_id, "b_hook": hook_id, "b_at": attempt.started_at}
            )
            await self._db.write_alone(_RECORD_PING[succeeded], parameters)
            return
        async with self._db.write() as conn:
            await conn.execute(_INSERT_DELIVERY, row)
            await conn.execute(_INSERT_ATTEMPT, attempt_row)
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


@dataclass(slots=True)
class HookOutcomes:
    """A batch of outcomes of one hook, folded into the effect of applying them in order.

    Applying ``HookRepository.record_outcome`` once per outcome moves each timestamp to
    its maximum, clears ``failing_since`` at every success and sets it at the first
    failure after that; so the fold keeps the latest success and failure times, whether a
    success was seen, and the first failure after the last success (or, with no success
    in the batch, the first failure, which only applies if none is recorded yet).
    """

    tenant_id: int
    hook_id: int
    last_success: datetime | None = None
    last_fail: datetime | None = None
    success_seen: bool = False
    failing_since: datetime | None = None

    def add(self, succeeded: bool, at: datetime) -> None:
        if succeeded:
            self.success_seen = True
            self.failing_since = None
            if self.last_success is None or at > self.last_success:
                self.last_success = at
        else:
            if self.failing_since is None:
                self.failing_since = at
            if self.last_fail is None or at > self.last_fail:
                self.last_fail = at


def hook_outcomes(outcomes: Sequence[Outcome]) -> list[HookOutcomes]:
    folded: dict[tuple[int, int], HookOutcomes] = {}
    for outcome in outcomes:
        claimed = outcome.delivery
        key = (claimed.tenant_id, claimed.hook_id)
        entry = folded.get(key)
        if entry is None:
            entry = folded[key] = HookOutcomes(claimed.tenant_id, claimed.hook_id)
        status = outcome.attempt.http_status
        entry.add(200 <= status < 300, outcome.attempt.started_at)
    return list(folded.values())


# The hot statements are built once: building SQLAlchemy constructs per call costs more
# than executing them. Statuses are literals so the partial queue indexes match them.
_PENDING: ColumnElement[Any] = literal_column("'pending'")


def _later(column: ColumnElement[Any], moment: BindParameter[Any]) -> ColumnElement[Any]:
    """The later of a stored time and a parameter that may be NULL (never moves back)."""
    return case(
        (moment.is_(None), column),
        (column > moment, column),
        else_=moment,
    )


def _due(*, first_attempts: bool, dialect: str) -> Select[Any]:
    """Due deliveries, oldest first; one query per kind so each uses its partial index.

    Bodies (and what only the retry decision needs: deferrals, creation time) are not
    read here: most candidates are not chosen, and the lease update returns them for
    those that are.
    """
    zero: ColumnElement[Any] = literal_column("0")
    kind = deliveries.c.attempts == zero if first_attempts else deliveries.c.attempts > zero
    # One fixed statement text per dialect, whatever the number of saturated hooks.
    unsaturated = (
        deliveries.c.hook_id != all_(bindparam("b_saturated", type_=ARRAY(BigInteger)))
        if dialect == "postgresql"
        else deliveries.c.hook_id.not_in(bindparam("b_saturated", expanding=True))
    )
    return (
        select(
            deliveries.c.id,
            deliveries.c.tenant_id,
            deliveries.c.hook_id,
            deliveries.c.event,
            deliveries.c.attempts,
            deliveries.c.leased_by,
            hooks.c.url,
            hooks.c.secret,
            hooks.c.previous_secret,
            hooks.c.previous_secret_until,
            hooks.c.deleted_at,
        )
        .join(hooks, hooks.c.id == deliveries.c.hook_id)
        .where(
            and_(
                deliveries.c.status == _PENDING,
                kind,
                deliveries.c.next_attempt_at <= bindparam("b_now", type_=UTCDateTime),
                unsaturated,
            )
        )
        .order_by(deliveries.c.next_attempt_at)
        .limit(bindparam("b_limit", type_=Integer))
        .with_for_update(of=deliveries, skip_locked=True)
    )


_INSERT_EVENT = events.insert()
_INSERT_DELIVERY = deliveries.insert()
_INSERT_ATTEMPT = attempts.insert()


def _record_ping_statement(*, succeeded: bool) -> Any:
    """PostgreSQL: the ping's delivery and attempt rows and its hook's ``last_http_*`` in
    one statement (data-modifying CTEs; the attempt's foreign key is checked at its end)."""
    delivery = (
        deliveries.insert()
        .values({c.name: bindparam(f"p_{c.name}") for c in deliveries.c})
        .cte("ping_delivery")
    )
    attempt = (
        attempts.insert()
        .values({c.name: bindparam(f"a_{c.name}") for c in attempts.c if not c.primary_key})
        .cte("ping_attempt")
    )
    return record_outcome_statement(succeeded=succeeded).add_cte(delivery, attempt)


_RECORD_PING = {
    succeeded: _record_ping_statement(succeeded=succeeded) for succeeded in (True, False)
}

_DUE_FIRST_ATTEMPTS = {d: _due(first_attempts=True, dialect=d) for d in ("postgresql", "sqlite")}
_DUE_RETRIES = {d: _due(first_attempts=False, dialect=d) for d in ("postgresql", "sqlite")}

# Only leased rows are in the partial index ix_deliveries_leased, so counting all of them
# costs no more than the deliveries in flight, and the statement never changes (prepared
# once on PostgreSQL, where a list of hook ids would make a new statement per claim).
_IN_FLIGHT = (
    select(deliveries.c.hook_id, func.count())
    .where(
        and_(
            deliveries.c.status == _PENDING,
            deliveries.c.lease_expires_at.is_not(None),
            deliveries.c.lease_expires_at > bindparam("b_now", type_=UTCDateTime),
        )
    )
    .group_by(deliveries.c.hook_id)
)


# Claiming moves next_attempt_at to the end of the lease: a worker that dies leaves a
# delivery that falls due again by itself when the lease ends.
CLAIM_LOCK_KEY = 0x63726F686F6F6B73  # "crohooks"
_CLAIM_LOCK = text(f"SELECT pg_advisory_xact_lock({CLAIM_LOCK_KEY})")


def _lease(ids: ColumnElement[bool]) -> Any:
    return (
        update(deliveries)
        .where(ids)
        .values(
            leased_by=bindparam("b_worker"),
            lease_expires_at=bindparam("b_expires", type_=UTCDateTime),
            next_attempt_at=bindparam("b_expires", type_=UTCDateTime),
            updated_at=bindparam("b_now", type_=UTCDateTime),
        )
        .returning(
            deliveries.c.id, deliveries.c.body, deliveries.c.deferrals, deliveries.c.created_at
        )
    )


_LEASE = {
    # One array parameter keeps the PostgreSQL statement the same whatever the batch size.
    "postgresql": _lease(deliveries.c.id == any_(bindparam("b_ids", type_=ARRAY(String)))),
    "sqlite": _lease(deliveries.c.id.in_(bindparam("b_ids", expanding=True))),
}


_RECORD_OUTCOME = (
    update(deliveries)
    .where(
        and_(
            deliveries.c.id == bindparam("b_id"),
            deliveries.c.status == _PENDING,
            # Fencing: only the lease this worker took may write the delivery's state.
            deliveries.c.leased_by == bindparam("b_leased_by"),
            deliveries.c.lease_expires_at == bindparam("b_lease", type_=UTCDateTime),
        )
    )
    .values(
        status=bindparam("b_status"),
        attempts=deliveries.c.attempts + 1,
        deferrals=deliveries.c.deferrals + bindparam("b_deferred", type_=Integer),
        next_attempt_at=bindparam("b_next", type_=UTCDateTime),
        lease_expires_at=None,
        leased_by=None,
        updated_at=bindparam("b_now", type_=UTCDateTime),
        completed_at=bindparam("b_completed", type_=UTCDateTime),
        last_http_status=bindparam("b_http"),
        last_message=bindparam("b_message"),
    )
)

_RECORD_HOOK_OUTCOME = (
    update(hooks)
    .where(and_(hooks.c.tenant_id == bindparam("b_tenant"), hooks.c.id == bindparam("b_hook")))
    .values(
        last_http_success=_later(
            hooks.c.last_http_success, bindparam("b_success", type_=UTCDateTime)
        ),
        last_http_fail=_later(hooks.c.last_http_fail, bindparam("b_fail", type_=UTCDateTime)),
        failing_since=case(
            (bindparam("b_reset", type_=Boolean), bindparam("b_failing", type_=UTCDateTime)),
            else_=func.coalesce(hooks.c.failing_since, bindparam("b_failing", type_=UTCDateTime)),
        ),
    )
)


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
