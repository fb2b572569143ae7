"""The delivery queue: lease-based claims (``outcomes.py`` writes what the attempts did).

A pending delivery is due when ``next_attempt_at <= now``. Claiming it moves
``next_attempt_at`` to the end of its lease and stamps ``leased_by``/``lease_expires_at``;
so a worker that dies mid-attempt leaves a delivery that simply falls due again when the
lease ends, with no sweeper. Outcomes are fenced on that lease (``outcomes.py``)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from crohooks.model import ClaimedDelivery, ClaimPolicy, Outcome
from crohooks.store.connector import Connection, Database, Row, Statement
from crohooks.store.hook_settings import outbound_headers
from crohooks.store.outcomes import record_outcomes

# Due deliveries, oldest first, each with its hook and the number of its deliveries
# already in flight: one statement (one round trip on PostgreSQL).
# - Statuses are literals so the partial indexes (schema.py) match: only leased rows are
#   in ix_deliveries_leased, so counting them costs no more than the deliveries in flight;
#   first attempts and retries are read apart, each from its own index
#   (ix_deliveries_due_first, ix_deliveries_due_retry), so a backlog of retries can't
#   starve fresh events.
# - Hooks already at their cap are left out of the scan, so a slow hook with a deep
#   backlog can't fill the candidate window and starve the others.
# - Bodies (and what only the retry decision needs) are not read here: most candidates
#   are not chosen, and the lease returns them for those that are.
# - PostgreSQL passes over rows another transaction holds (SKIP LOCKED).
_DUE_SQL = """
    WITH in_flight AS MATERIALIZED (
        SELECT hook_id, count(*) AS leased FROM deliveries
        WHERE status = 'pending' AND lease_expires_at IS NOT NULL AND lease_expires_at > :now
        GROUP BY hook_id),
    -- Hook controls (settings): a disabled hook's deliveries wait in the queue, a hook's
    -- own max_in_flight replaces the server's cap, and a rate-limited hook whose next send
    -- slot is beyond the horizon waits too. All are held out of the scan.
    held AS MATERIALIZED (
        SELECT id AS hook_id FROM hooks
        WHERE disabled_at IS NOT NULL OR rate_next_at >= :horizon
        UNION ALL
        SELECT f.hook_id FROM in_flight AS f JOIN hooks AS fh ON fh.id = f.hook_id
        WHERE f.leased >= COALESCE(fh.max_in_flight, :cap)),
    first AS (
        SELECT id, tenant_id, hook_id, event, attempts, leased_by, next_attempt_at
        FROM deliveries
        WHERE status = 'pending' AND attempts = 0 AND next_attempt_at <= :now
          AND hook_id NOT IN (SELECT hook_id FROM held)
        ORDER BY next_attempt_at LIMIT :limit {lock}),
    retries AS (
        SELECT id, tenant_id, hook_id, event, attempts, leased_by, next_attempt_at
        FROM deliveries
        WHERE status = 'pending' AND attempts > 0 AND next_attempt_at <= :now
          AND hook_id NOT IN (SELECT hook_id FROM held)
        ORDER BY next_attempt_at LIMIT :limit {lock})
    SELECT d.id, d.tenant_id, d.hook_id, d.event, d.attempts, d.leased_by,
           h.url, h.secret, h.previous_secret, h.previous_secret_until, h.deleted_at,
           h.headers, h.auth, h.max_in_flight, h.rate_per_second, h.rate_burst, h.rate_next_at,
           COALESCE(f.leased, 0) AS leased
    FROM (SELECT * FROM first UNION ALL SELECT * FROM retries) AS d
    JOIN hooks AS h ON h.id = d.hook_id
    LEFT JOIN in_flight AS f ON f.hook_id = d.hook_id
    ORDER BY d.next_attempt_at"""
_DUE = Statement(
    "queue_due",
    sqlite=_DUE_SQL.format(lock="").replace("AS MATERIALIZED", "AS"),
    postgresql=Statement.shared("", _DUE_SQL.format(lock="FOR UPDATE SKIP LOCKED")).postgresql,
)

CLAIM_LOCK_KEY = 0x63726F686F6F6B73  # "crohooks"
_SERIALIZE_CLAIMS = Statement(
    "queue_claim_lock",
    # SQLite's write transaction is BEGIN IMMEDIATE: claims are serialised already.
    sqlite="SELECT 1",
    postgresql=f"SELECT pg_advisory_xact_lock({CLAIM_LOCK_KEY})",
)

# Claiming moves next_attempt_at to the end of the lease: a worker that dies leaves a
# delivery that falls due again by itself when the lease ends.
# Ordered delivery (issue 15) needs nothing of _DUE: a keyed delivery waiting behind the
# head of its (hook, key) has no next_attempt_at, so no claim reads it, and a leased head
# keeps one (its lease end), so its key stays blocked (store/ordering.py). The lease only
# hands back the key, the sequence number and the redelivery mark for the headers.
_LEASE = Statement(
    "queue_lease",
    sqlite="""
        UPDATE deliveries SET leased_by = :worker, lease_expires_at = :expires,
                              next_attempt_at = :expires, updated_at = :now
        WHERE id IN (SELECT value FROM json_each(:ids))
        RETURNING id, body, deferrals, created_at, trace_context, ordering_key, sequence,
                  redelivered""",
    postgresql="""
        UPDATE deliveries SET leased_by = %(worker)s, lease_expires_at = %(expires)s,
                              next_attempt_at = %(expires)s, updated_at = %(now)s
        WHERE id = ANY(%(ids)s::text[])
        RETURNING id, body, deferrals, created_at, trace_context, ordering_key, sequence,
                  redelivered""",
)

_RATE_MOVED = Statement.shared(
    "queue_rate_moved", "UPDATE hooks SET rate_next_at = :next_at WHERE id = :hook_id"
)

_CANCEL_PENDING = Statement.shared(
    "queue_cancel_pending",
    """
    UPDATE deliveries SET status = 'cancelled', completed_at = :now, updated_at = :now,
                          next_attempt_at = NULL, lease_expires_at = NULL, leased_by = NULL,
                          last_message = 'hook deleted'
    WHERE hook_id = :hook_id AND status = 'pending'""",
)


class DeliveryQueue:
    def __init__(self, db: Database) -> None:
        self._db = db
        # A list parameter: a JSON array for SQLite's json_each, a list for PostgreSQL's ANY.
        self._list: Callable[[list[Any]], Any] = json.dumps if db.dialect == "sqlite" else list

    async def wait_for_work(self, seconds: float) -> None:
        """Return when a transaction announced queued work (in any process), or after
        ``seconds``."""
        await self._db.wait_for_work(seconds)

    async def claim(self, policy: ClaimPolicy, *, now: datetime) -> list[ClaimedDelivery]:
        """Lease up to ``policy.limit`` due deliveries.

        First attempts and retries are read side by side so a backlog of retries can't
        starve fresh events, and no hook gets more than ``per_hook_cap`` deliveries (or its
        own ``max_in_flight``) in flight across all workers; a disabled hook's deliveries
        are not claimed, they wait. Claims are serialised (SQLite's BEGIN IMMEDIATE, a
        transaction-scoped advisory lock on PostgreSQL): counting a hook's leases and
        adding to them must not interleave with another worker doing the same, or both
        would see room under the cap and fill it twice.
        """
        if policy.limit <= 0:
            return []
        async with self._db.write() as conn:
            await conn.execute(_SERIALIZE_CLAIMS)
            horizon = now + policy.rate_horizon
            due = await conn.fetch(
                _DUE,
                {
                    "now": now,
                    "limit": policy.limit * 4,
                    "cap": policy.per_hook_cap,
                    "horizon": horizon,
                },
            )
            in_flight = {row["hook_id"]: row["leased"] for row in due}
            first = [row for row in due if row["attempts"] == 0]
            retries = [row for row in due if row["attempts"] > 0]
            paced = _Pacing(now, horizon)
            chosen, deleted_hooks = _choose(_interleave(first, retries), in_flight, policy, paced)
            if deleted_hooks:
                await cancel_pending_deliveries(conn, deleted_hooks, now=now)
            if paced.moved:
                await conn.execute_many(_RATE_MOVED, paced.moved_rows())
            if not chosen:
                return []
            expires = now + policy.lease
            leased = await conn.fetch(
                _LEASE,
                {
                    "ids": self._list([row["id"] for row in chosen]),
                    "worker": policy.worker_id,
                    "expires": expires,
                    "now": now,
                },
            )
        by_id = {row["id"]: row for row in leased}
        return [
            _claimed(
                row,
                by_id[row["id"]],
                policy=policy,
                expires=expires,
                now=now,
                not_before=paced.slots.get(row["id"]),
            )
            for row in chosen
        ]

    async def record(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Write a batch of attempt outcomes at once (``outcomes.record_outcomes``)."""
        await record_outcomes(self._db, outcomes, now=now)


async def cancel_pending_deliveries(
    conn: Connection, hook_ids: list[int], *, now: datetime
) -> None:
    """A deleted hook receives nothing more: its queued deliveries end as cancelled."""
    await conn.execute_many(
        _CANCEL_PENDING, [{"hook_id": hook_id, "now": now} for hook_id in hook_ids]
    )


def _interleave(first: list[Row], retries: list[Row]) -> list[Row]:
    """First attempts and retries taken turn about, each kind oldest first."""
    merged: list[Row] = []
    for pair in zip(first, retries, strict=False):
        merged.extend(pair)
    shorter = min(len(first), len(retries))
    merged.extend(first[shorter:])
    merged.extend(retries[shorter:])
    return merged


class _Pacing:
    """Send slots of rate-limited hooks, handed out by the (serialised) claim: GCRA.

    A hook's ``rate_next_at`` is the earliest time its next delivery may be sent. Each
    chosen delivery takes the next slot (now at the earliest) and moves it on by
    1/``per_second``; ``burst`` slots may fall on the same instant. Slots up to the horizon
    are handed out (the worker waits for its slot); the rest of the hook's deliveries stay
    queued. The state lives in the database, so every worker of every process shares it.
    """

    def __init__(self, now: datetime, horizon: datetime) -> None:
        self.now = now
        self.horizon = horizon
        self.slots: dict[str, datetime] = {}
        self.moved: dict[int, datetime] = {}

    def slot(self, row: Row) -> datetime | bool | None:
        """The send time of this delivery; ``None``: not rate-limited; ``False``: no slot
        before the horizon."""
        per_second = row["rate_per_second"]
        if per_second is None:
            return None
        hook_id = row["hook_id"]
        interval = timedelta(seconds=1.0 / per_second)
        tolerance = interval * (row["rate_burst"] or 0)
        next_at = self.moved.get(hook_id, row["rate_next_at"])
        # The theoretical arrival time of GCRA: next_at + tolerance, never in the past.
        arrival = max(next_at + tolerance if next_at is not None else self.now, self.now)
        send_at = max(self.now, arrival - tolerance)
        if send_at >= self.horizon:
            return False
        self.moved[hook_id] = arrival + interval - tolerance
        self.slots[row["id"]] = send_at
        return send_at

    def moved_rows(self) -> list[dict[str, Any]]:
        return [{"hook_id": hook, "next_at": at} for hook, at in self.moved.items()]


def _choose(
    candidates: list[Row], in_flight: dict[int, int], policy: ClaimPolicy, paced: _Pacing
) -> tuple[list[Row], list[int]]:
    """The candidates to lease, in order, within each hook's cap and rate; and the deleted
    hooks met on the way (their deliveries are cancelled instead)."""
    chosen: list[Row] = []
    deleted: set[int] = set()
    taken: dict[int, int] = defaultdict(int)
    for row in candidates:
        hook_id = row["hook_id"]
        if row["deleted_at"] is not None:
            deleted.add(hook_id)
            continue
        cap = row["max_in_flight"] or policy.per_hook_cap  # the hook's own, if set
        if in_flight.get(hook_id, 0) + taken[hook_id] >= cap:
            continue
        if paced.slot(row) is False:
            continue
        taken[hook_id] += 1
        chosen.append(row)
        if len(chosen) >= policy.limit:
            break
    return chosen, sorted(deleted)


def _claimed(
    row: Row,
    leased: Row,
    *,
    policy: ClaimPolicy,
    expires: datetime,
    now: datetime,
    not_before: datetime | None,
) -> ClaimedDelivery:
    previous, until = row["previous_secret"], row["previous_secret_until"]
    return ClaimedDelivery(
        id=row["id"],
        tenant_id=row["tenant_id"],
        hook_id=row["hook_id"],
        event=row["event"],
        body=leased["body"].encode("utf-8"),
        attempts=row["attempts"],
        deferrals=leased["deferrals"],
        created_at=leased["created_at"],
        url=row["url"],
        secret=row["secret"],
        previous_secrets=(previous,) if previous and until is not None and until > now else (),
        leased_by=policy.worker_id,
        lease_expires_at=expires,
        reclaimed=row["leased_by"] is not None,
        trace_context=leased["trace_context"],
        ordering_key=leased["ordering_key"],
        sequence=leased["sequence"],
        redelivered=bool(leased["redelivered"]),
        receiver_headers=outbound_headers(row["headers"], row["auth"]),
        not_before=not_before if not_before is not None and not_before > now else None,
    )
