"""Attempt outcomes: the attempt log rows, the fenced delivery updates, the per-hook fold.

A batch of outcomes is written at once. An outcome is applied only while the lease is
still the one the worker took (fencing on ``leased_by`` and ``lease_expires_at``), so a
late worker can't overwrite the state a newer attempt wrote; its attempt row is still
kept in the log.

On PostgreSQL the whole batch is one statement: the rows go in as one array per column,
unnested into data-modifying ``WITH`` clauses, so the batch costs one round trip (a
worker's loop is busy sending, and every round trip waits for a turn of it). A batch in
which keyed deliveries finished first locks their keys, in a statement of its own, and
its batch statement also hands each key over to its next delivery. SQLite has
no data-modifying ``WITH``; there it is three statements in one transaction, on the
worker's own thread, with no round trips to save.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crohooks.model import AttemptRecord, DeliveryStatus, Outcome
from crohooks.store.connector import Database, Statement
from crohooks.store.ordering import HANDOVER_CLAUSES, lock_keys, settle_keys

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

# The three above as one statement, each parameter an array with one element per row. The
# hook rows are locked in id order first (``locked``), so two workers' batches never wait
# on each other's hooks in opposite orders.
_RECORD_BATCH_SQL = """
    WITH attempt AS (
        INSERT INTO attempts (delivery_id, number, started_at, duration_ms, http_status,
                              message, request_headers, response_headers, response_body)
        SELECT * FROM unnest(
            %(delivery_id)s::text[], %(number)s::int[], %(started_at)s::timestamp[],
            %(duration_ms)s::float8[], %(http_status)s::int[], %(message)s::text[],
            %(request_headers)s::text[], %(response_headers)s::text[],
            %(response_body)s::text[])),
    outcome AS (
        UPDATE deliveries AS d
        SET status = o.status, attempts = d.attempts + 1, deferrals = d.deferrals + o.deferred,
            next_attempt_at = o.next_attempt_at, lease_expires_at = NULL, leased_by = NULL,
            updated_at = %(now)s, completed_at = o.completed_at,
            last_http_status = o.http_status, last_message = o.message
        FROM unnest(
            %(id)s::text[], %(leased_by)s::text[], %(lease_expires_at)s::timestamp[],
            %(status)s::text[], %(next_attempt_at)s::timestamp[], %(completed_at)s::timestamp[],
            %(deferred)s::int[], %(http_status)s::int[], %(message)s::text[])
          AS o(id, leased_by, lease_expires_at, status, next_attempt_at, completed_at,
               deferred, http_status, message)
        WHERE d.id = o.id AND d.status = 'pending'
          AND d.leased_by = o.leased_by AND d.lease_expires_at = o.lease_expires_at
        {returning}),{handover}
    locked AS (
        SELECT id FROM hooks WHERE id = ANY(%(hook_id)s::bigint[]) ORDER BY id FOR UPDATE)
    UPDATE hooks AS h SET
      last_http_success = CASE WHEN h.last_http_success > f.last_success
                               THEN h.last_http_success
                               ELSE COALESCE(f.last_success, h.last_http_success) END,
      last_http_fail = CASE WHEN h.last_http_fail > f.last_fail THEN h.last_http_fail
                            ELSE COALESCE(f.last_fail, h.last_http_fail) END,
      failing_since = CASE WHEN f.success_seen THEN f.failing_since
                           ELSE COALESCE(h.failing_since, f.failing_since) END
    FROM unnest(
        %(tenant_id)s::bigint[], %(hook_id)s::bigint[], %(last_success)s::timestamp[],
        %(last_fail)s::timestamp[], %(success_seen)s::bool[], %(failing_since)s::timestamp[])
      AS f(tenant_id, hook_id, last_success, last_fail, success_seen, failing_since)
    JOIN locked ON locked.id = f.hook_id
    WHERE h.tenant_id = f.tenant_id AND h.id = f.hook_id"""
_RECORD_BATCH = Statement(
    "queue_record_batch",
    sqlite="",  # no data-modifying WITH: ``record_outcomes`` runs the three statements
    postgresql=_RECORD_BATCH_SQL.format(returning="", handover=""),
)
# The same with the hand-over of the keys whose head finished (``store/ordering.py``),
# for a batch with keyed outcomes, run after ``lock_keys`` in the same transaction.
_RECORD_KEYED_BATCH = Statement(
    "queue_record_keyed_batch",
    sqlite="",
    postgresql=_RECORD_BATCH_SQL.format(
        returning="RETURNING d.id, d.hook_id, d.ordering_key, d.status",
        handover=HANDOVER_CLAUSES + ",",
    ),
)


async def record_outcomes(db: Database, outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """Write a batch of attempt outcomes, all or nothing: the attempt rows, the fenced
    delivery updates and one update per hook (``hook_outcomes`` folds the batch, in
    order). An outcome whose lease was lost updates no delivery; its attempt is logged.

    Outcomes of keyed deliveries settle their keys in the same transaction: a head that
    finished hands over to the next delivery of its key (``store/ordering.py``)."""
    if not outcomes:
        return
    attempts = [
        attempt_row(outcome.delivery.id, outcome.delivery.attempts + 1, outcome.attempt)
        for outcome in outcomes
    ]
    deliveries = [_outcome_row(outcome, now) for outcome in outcomes]
    # Sorted, so two workers' batches lock shared hook rows in the same order.
    hooks = [
        folded.params()
        for folded in sorted(hook_outcomes(outcomes), key=lambda f: (f.hook_id, f.tenant_id))
    ]
    # Keys whose head finished: the next delivery of each becomes the head.
    keys = {
        (outcome.delivery.hook_id, outcome.delivery.ordering_key)
        for outcome in outcomes
        if outcome.delivery.ordering_key is not None
        and outcome.status is not DeliveryStatus.PENDING
    }
    if db.dialect == "postgresql":
        # An attempt's status and message are its delivery's: one array serves both.
        params: dict[str, Any] = {"now": now}
        for rows in (attempts, deliveries, hooks):
            params.update({name: [row[name] for row in rows] for name in rows[0]})
        if not keys:
            await db.write_alone(_RECORD_BATCH, params)
            return
        # Keyed: lock the keys before the outcomes, then record and hand over in a later
        # statement (its snapshot sees what the lock's previous holder committed).
        async with db.write() as conn:
            await lock_keys(conn, db.dialect, keys)
            await conn.execute(_RECORD_KEYED_BATCH, params)
        return
    async with db.write() as conn:
        await conn.execute_many(INSERT_ATTEMPT, attempts)
        await conn.execute_many(_RECORD_OUTCOME, [{**row, "now": now} for row in deliveries])
        await conn.execute_many(RECORD_HOOK_OUTCOME, hooks)
        await settle_keys(conn, db.dialect, keys, now=now, collapse=False)


def _outcome_row(outcome: Outcome, now: datetime) -> dict[str, Any]:
    claimed, attempt = outcome.delivery, outcome.attempt
    final = outcome.status is not DeliveryStatus.PENDING
    return {
        "id": claimed.id,
        "leased_by": claimed.leased_by,
        "lease_expires_at": claimed.lease_expires_at,
        "status": outcome.status.value,
        "next_attempt_at": outcome.next_attempt_at,
        "completed_at": now if final else None,
        "deferred": 1 if outcome.deferred else 0,
        "http_status": attempt.http_status,
        "message": attempt.message,
    }


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
