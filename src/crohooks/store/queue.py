"""The delivery queue: lease-based claims, fenced outcomes, and the per-hook fold.

A pending delivery is due when ``next_attempt_at <= now``. Claiming it moves
``next_attempt_at`` to the end of its lease and stamps ``leased_by``/``lease_expires_at``;
so a worker that dies mid-attempt leaves a delivery that simply falls due again when the
lease ends, with no sweeper. An outcome is applied only while the lease is still the one
the worker took (fencing on ``leased_by`` and ``lease_expires_at``), so a late worker can't
overwrite the state a newer attempt wrote; its attempt row is still kept in the log.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crohooks.model import AttemptRecord, ClaimedDelivery, ClaimPolicy, DeliveryStatus, Outcome
from crohooks.store.connector import Connection, Database, Row, Statement

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
    first AS (
        SELECT id, tenant_id, hook_id, event, attempts, leased_by, next_attempt_at
        FROM deliveries
        WHERE status = 'pending' AND attempts = 0 AND next_attempt_at <= :now
          AND hook_id NOT IN (SELECT hook_id FROM in_flight WHERE leased >= :cap)
        ORDER BY next_attempt_at LIMIT :limit {lock}),
    retries AS (
        SELECT id, tenant_id, hook_id, event, attempts, leased_by, next_attempt_at
        FROM deliveries
        WHERE status = 'pending' AND attempts > 0 AND next_attempt_at <= :now
          AND hook_id NOT IN (SELECT hook_id FROM in_flight WHERE leased >= :cap)
        ORDER BY next_attempt_at LIMIT :limit {lock})
    SELECT d.id, d.tenant_id, d.hook_id, d.event, d.attempts, d.leased_by,
           h.url, h.secret, h.previous_secret, h.previous_secret_until, h.deleted_at,
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
_LEASE = Statement(
    "queue_lease",
    sqlite="""
        UPDATE deliveries SET leased_by = :worker, lease_expires_at = :expires,
                              next_attempt_at = :expires, updated_at = :now
        WHERE id IN (SELECT value FROM json_each(:ids))
        RETURNING id, body, deferrals, created_at""",
    postgresql="""
        UPDATE deliveries SET leased_by = %(worker)s, lease_expires_at = %(expires)s,
                              next_attempt_at = %(expires)s, updated_at = %(now)s
        WHERE id = ANY(%(ids)s::text[])
        RETURNING id, body, deferrals, created_at""",
)

INSERT_ATTEMPT = Statement.shared(
    "attempt_insert",
    """
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status, message,
                          request_headers, response_headers, response_body)
    VALUES (:delivery_id, :number, :started_at, :duration_ms, :http_status, :message,
            :request_headers, :response_headers, :response_body)""",
)

# Fencing: only the lease this worker took may write the delivery's state.
_RECORD_OUTCOME = Statement.shared(
    "queue_record_outcome",
    """
    UPDATE deliveries SET status = :status, attempts = attempts + 1,
                          deferrals = deferrals + :deferred, next_attempt_at = :next_attempt_at,
                          lease_expires_at = NULL, leased_by = NULL, updated_at = :now,
                          completed_at = :completed_at, last_http_status = :http_status,
                          last_message = :message
    WHERE id = :id AND status = 'pending'
      AND leased_by = :leased_by AND lease_expires_at = :lease_expires_at""",
)

# ``HookOutcomes`` applied to its hook. Times move forward, never back: a NULL parameter
# compares as unknown and falls through to the COALESCE, which keeps the stored time.
RECORD_HOOK_OUTCOME = Statement.shared(
    "hook_record_outcomes",
    """
    UPDATE hooks SET
      last_http_success = CASE WHEN last_http_success > :last_success THEN last_http_success
                               ELSE COALESCE(:last_success, last_http_success) END,
      last_http_fail = CASE WHEN last_http_fail > :last_fail THEN last_http_fail
                            ELSE COALESCE(:last_fail, last_http_fail) END,
      failing_since = CASE WHEN :success_seen THEN :failing_since
                           ELSE COALESCE(failing_since, :failing_since) END
    WHERE tenant_id = :tenant_id AND id = :hook_id""",
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
        starve fresh events, and no hook gets more than ``per_hook_cap`` deliveries in
        flight across all workers. Claims are serialised (SQLite's BEGIN IMMEDIATE, a
        transaction-scoped advisory lock on PostgreSQL): counting a hook's leases and
        adding to them must not interleave with another worker doing the same, or both
        would see room under the cap and fill it twice.
        """
        if policy.limit <= 0:
            return []
        async with self._db.write() as conn:
            await conn.execute(_SERIALIZE_CLAIMS)
            due = await conn.fetch(
                _DUE, {"now": now, "limit": policy.limit * 4, "cap": policy.per_hook_cap}
            )
            in_flight = {row["hook_id"]: row["leased"] for row in due}
            first = [row for row in due if row["attempts"] == 0]
            retries = [row for row in due if row["attempts"] > 0]
            chosen, deleted_hooks = _choose(_interleave(first, retries), in_flight, policy)
            if deleted_hooks:
                await cancel_pending_deliveries(conn, deleted_hooks, now=now)
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
            _claimed(row, by_id[row["id"]], policy=policy, expires=expires, now=now)
            for row in chosen
        ]

    async def record(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Write a batch of attempt outcomes in one transaction.

        Three statements whatever the batch size: the attempt rows, the fenced delivery
        updates and one update per hook (``hook_outcomes`` folds the batch, in order). An
        outcome whose lease was lost updates no delivery; its attempt is still logged.
        """
        if not outcomes:
            return
        attempt_rows = []
        delivery_rows = []
        for outcome in outcomes:
            claimed, attempt = outcome.delivery, outcome.attempt
            attempt_rows.append(attempt_row(claimed.id, claimed.attempts + 1, attempt))
            final = outcome.status is not DeliveryStatus.PENDING
            delivery_rows.append(
                {
                    "id": claimed.id,
                    "leased_by": claimed.leased_by,
                    "lease_expires_at": claimed.lease_expires_at,
                    "status": outcome.status.value,
                    "next_attempt_at": outcome.next_attempt_at,
                    "now": now,
                    "completed_at": now if final else None,
                    "deferred": 1 if outcome.deferred else 0,
                    "http_status": attempt.http_status,
                    "message": attempt.message,
                }
            )
        # Sorted, so two workers' batches lock shared hook rows in the same order.
        folded = sorted(hook_outcomes(outcomes), key=lambda f: (f.hook_id, f.tenant_id))
        async with self._db.write() as conn:
            await conn.execute_many(INSERT_ATTEMPT, attempt_rows)
            await conn.execute_many(_RECORD_OUTCOME, delivery_rows)
            await conn.execute_many(RECORD_HOOK_OUTCOME, [f.params() for f in folded])


async def cancel_pending_deliveries(
    conn: Connection, hook_ids: list[int], *, now: datetime
) -> None:
    """A deleted hook receives nothing more: its queued deliveries end as cancelled."""
    await conn.execute_many(
        _CANCEL_PENDING, [{"hook_id": hook_id, "now": now} for hook_id in hook_ids]
    )


@dataclass(slots=True)
class HookOutcomes:
    """A batch of outcomes of one hook, folded into the effect of applying them in order.

    Applying one outcome at a time would move each timestamp to its maximum, clear
    ``failing_since`` at every success and set it at the first failure after that; so the
    fold keeps the latest success and failure times, whether a success was seen, and the
    first failure after the last success (or, with no success in the batch, the first
    failure, which only applies if none is recorded yet).
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

    def params(self) -> dict[str, Any]:
        """The parameters of ``RECORD_HOOK_OUTCOME``."""
        return {
            "tenant_id": self.tenant_id,
            "hook_id": self.hook_id,
            "last_success": self.last_success,
            "last_fail": self.last_fail,
            "success_seen": self.success_seen,
            "failing_since": self.failing_since,
        }


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


def attempt_row(delivery_id: str, number: int, attempt: AttemptRecord) -> dict[str, Any]:
    """The parameters of ``INSERT_ATTEMPT``."""
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


def _interleave(first: list[Row], retries: list[Row]) -> list[Row]:
    """First attempts and retries taken turn about, each kind oldest first."""
    merged: list[Row] = []
    for pair in zip(first, retries, strict=False):
        merged.extend(pair)
    shorter = min(len(first), len(retries))
    merged.extend(first[shorter:])
    merged.extend(retries[shorter:])
    return merged


def _choose(
    candidates: list[Row], in_flight: dict[int, int], policy: ClaimPolicy
) -> tuple[list[Row], list[int]]:
    """The candidates to lease, in order, within each hook's cap; and the deleted hooks met
    on the way (their deliveries are cancelled instead)."""
    chosen: list[Row] = []
    deleted: set[int] = set()
    taken: dict[int, int] = defaultdict(int)
    for row in candidates:
        hook_id = row["hook_id"]
        if row["deleted_at"] is not None:
            deleted.add(hook_id)
            continue
        if in_flight.get(hook_id, 0) + taken[hook_id] >= policy.per_hook_cap:
            continue
        taken[hook_id] += 1
        chosen.append(row)
        if len(chosen) >= policy.limit:
            break
    return chosen, sorted(deleted)


def _claimed(
    row: Row, leased: Row, *, policy: ClaimPolicy, expires: datetime, now: datetime
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
    )
