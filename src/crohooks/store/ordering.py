"""Ordered delivery per (hook, ordering key): sequence numbers, the head of each key, and
the latest-state collapse (docs/decisions.md, "Ordered delivery per entity").

A keyed delivery is queued like any other, with one difference: only the *head* of its
(hook, key), the oldest pending delivery by sequence number, has a ``next_attempt_at``.
The others wait with ``next_attempt_at`` NULL, which no claim ever reads, so the claim
statement is the same for keyed and unkeyed deliveries and stays flat however deep a
key's backlog is. Whatever changes a key's queue (intake, an outcome, redeliver,
recover) then *settles* the key in the same transaction: in latest-state mode it
supersedes the waiting deliveries that a newer one makes stale, and if the key has no
head any more, the oldest waiting delivery becomes it.

Settling reads the key's other pending deliveries, so two transactions changing one key
must not settle it from snapshots that miss each other's change. SQLite's write
transactions are serialised already; on PostgreSQL each one first locks the key's row in
``ordering_keys`` (intake's upsert of the sequence does it, the others ``lock_keys``),
and settles in a later statement, whose snapshot sees whatever the previous holder of
that lock committed (an outcome batch settles in its batch statement: ``HANDOVER_CLAUSES``).
Rows are locked in (hook, key) order, so two batches can't deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from crohooks.store.connector import Connection, Dialect, Statement

OrderingKey = tuple[int, str]
"""A (hook id, ordering key) pair: one ordered queue."""

ORDERING_MODES = ("all", "latest")

# The count of new deliveries per key is added to its last sequence number; the new
# deliveries are numbered up to the returned one. The insert is in (hook, key) order, so
# concurrent intakes lock the rows in one order.
_NEXT_SEQUENCES = Statement(
    "ordering_next_sequences",
    # ``WHERE true``: SQLite's parser needs it between a SELECT and ON CONFLICT.
    sqlite="""
        INSERT INTO ordering_keys (hook_id, ordering_key, last_sequence)
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
        FROM json_each(:rows) WHERE true
        ON CONFLICT (hook_id, ordering_key)
        DO UPDATE SET last_sequence = last_sequence + excluded.last_sequence
        RETURNING hook_id, ordering_key, last_sequence""",
    postgresql="""
        INSERT INTO ordering_keys (hook_id, ordering_key, last_sequence)
        SELECT hook_id, ordering_key, added
        FROM unnest(%(hook_ids)s::bigint[], %(keys)s::text[], %(counts)s::bigint[])
          AS n(hook_id, ordering_key, added)
        ORDER BY hook_id, ordering_key
        ON CONFLICT (hook_id, ordering_key)
        DO UPDATE SET last_sequence = ordering_keys.last_sequence + excluded.last_sequence
        RETURNING hook_id, ordering_key, last_sequence""",
)

_LOCK_KEYS = Statement(
    "ordering_lock_keys",
    sqlite="SELECT 1",  # BEGIN IMMEDIATE holds the database's one write lock already
    postgresql="""
        SELECT k.hook_id FROM ordering_keys AS k
        JOIN unnest(%(hook_ids)s::bigint[], %(keys)s::text[]) AS p(hook_id, ordering_key)
          ON k.hook_id = p.hook_id AND k.ordering_key = p.ordering_key
        ORDER BY k.hook_id, k.ordering_key
        FOR UPDATE OF k""",
)

# Latest-state mode: a waiting delivery with a newer pending one behind it in its key is
# superseded. The head (attempted or due) is never superseded: it may be on its way.
# SQLite runs it once per key; PostgreSQL once for all the keys (one round trip).
_COLLAPSE = Statement(
    "ordering_collapse",
    sqlite="""
        UPDATE deliveries SET status = 'superseded', completed_at = :now, updated_at = :now,
                              last_message = :message
        WHERE hook_id = :hook_id AND ordering_key = :ordering_key AND status = 'pending'
          AND ordering_key IS NOT NULL AND next_attempt_at IS NULL
          AND sequence < (SELECT max(sequence) FROM deliveries
                          WHERE hook_id = :hook_id AND ordering_key = :ordering_key
                            AND status = 'pending' AND ordering_key IS NOT NULL)
          AND EXISTS (SELECT 1 FROM hooks WHERE id = :hook_id AND ordering = 'latest')""",
    postgresql="""
        WITH latest AS (
            SELECT k.hook_id, k.ordering_key,
                   (SELECT max(n.sequence) FROM deliveries AS n
                    WHERE n.hook_id = k.hook_id AND n.ordering_key = k.ordering_key
                      AND n.status = 'pending' AND n.ordering_key IS NOT NULL) AS newest
            FROM unnest(%(hook_ids)s::bigint[], %(keys)s::text[]) AS k(hook_id, ordering_key)
            JOIN hooks AS h ON h.id = k.hook_id AND h.ordering = 'latest')
        UPDATE deliveries AS d
        SET status = 'superseded', completed_at = %(now)s, updated_at = %(now)s,
            last_message = %(message)s
        FROM latest
        WHERE d.hook_id = latest.hook_id AND d.ordering_key = latest.ordering_key
          AND d.status = 'pending' AND d.ordering_key IS NOT NULL
          AND d.next_attempt_at IS NULL AND d.sequence < latest.newest""",
)
_SUPERSEDED = "superseded by a newer delivery of its ordering key"

# A key with no head (no pending delivery with a next_attempt_at) gets its oldest pending
# delivery as the head, due now.
_PROMOTE = Statement(
    "ordering_promote",
    sqlite="""
        UPDATE deliveries SET next_attempt_at = :now, updated_at = :now
        WHERE id = (SELECT id FROM deliveries
                    WHERE hook_id = :hook_id AND ordering_key = :ordering_key
                      AND status = 'pending' AND ordering_key IS NOT NULL
                    ORDER BY sequence LIMIT 1)
          AND next_attempt_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM deliveries
                          WHERE hook_id = :hook_id AND ordering_key = :ordering_key
                            AND status = 'pending' AND ordering_key IS NOT NULL
                            AND next_attempt_at IS NOT NULL)""",
    postgresql="""
        WITH heads AS (
            SELECT (SELECT o.id FROM deliveries AS o
                    WHERE o.hook_id = k.hook_id AND o.ordering_key = k.ordering_key
                      AND o.status = 'pending' AND o.ordering_key IS NOT NULL
                    ORDER BY o.sequence LIMIT 1) AS id
            FROM unnest(%(hook_ids)s::bigint[], %(keys)s::text[]) AS k(hook_id, ordering_key)
            WHERE NOT EXISTS (
                SELECT 1 FROM deliveries AS a
                WHERE a.hook_id = k.hook_id AND a.ordering_key = k.ordering_key
                  AND a.status = 'pending' AND a.ordering_key IS NOT NULL
                  AND a.next_attempt_at IS NOT NULL))
        UPDATE deliveries AS d SET next_attempt_at = %(now)s, updated_at = %(now)s
        FROM heads WHERE d.id = heads.id AND d.next_attempt_at IS NULL""",
)


# The hand-over of ``_PROMOTE`` as clauses of a data-modifying ``WITH`` (PostgreSQL), for a
# statement that finishes heads in an earlier clause named ``outcome`` (``RETURNING id,
# hook_id, ordering_key, status``; ``store/outcomes.py``). The clauses share the statement's
# snapshot, in which the finished heads are still pending: they are left out by id. The
# keys must be locked by an earlier statement (``lock_keys``), so that snapshot holds all
# the previous lock holders committed.
HANDOVER_CLAUSES = """
    finished AS (
        SELECT id, hook_id, ordering_key FROM outcome
        WHERE ordering_key IS NOT NULL AND status <> 'pending'),
    handed AS (
        SELECT (SELECT o.id FROM deliveries AS o
                WHERE o.hook_id = k.hook_id AND o.ordering_key = k.ordering_key
                  AND o.status = 'pending' AND o.ordering_key IS NOT NULL
                  AND o.id NOT IN (SELECT id FROM finished)
                ORDER BY o.sequence LIMIT 1) AS id
        FROM (SELECT DISTINCT hook_id, ordering_key FROM finished) AS k
        WHERE NOT EXISTS (
            SELECT 1 FROM deliveries AS a
            WHERE a.hook_id = k.hook_id AND a.ordering_key = k.ordering_key
              AND a.status = 'pending' AND a.ordering_key IS NOT NULL
              AND a.next_attempt_at IS NOT NULL
              AND a.id NOT IN (SELECT id FROM finished))),
    promoted AS (
        UPDATE deliveries AS d SET next_attempt_at = %(now)s, updated_at = %(now)s
        FROM handed
        WHERE d.id = handed.id AND d.status = 'pending' AND d.next_attempt_at IS NULL)"""


async def next_sequences(
    conn: Connection, dialect: Dialect, added: Mapping[OrderingKey, int]
) -> dict[OrderingKey, int]:
    """Count ``added[key]`` new deliveries into each key; the first sequence number of each
    key's new deliveries. On PostgreSQL this also locks the keys (see the module doc)."""
    pairs = sorted(added)
    if dialect == "sqlite":
        params: dict[str, object] = {
            "rows": json.dumps([[hook_id, key, added[hook_id, key]] for hook_id, key in pairs])
        }
    else:
        params = {
            "hook_ids": [hook_id for hook_id, _ in pairs],
            "keys": [key for _, key in pairs],
            "counts": [added[pair] for pair in pairs],
        }
    rows = await conn.fetch(_NEXT_SEQUENCES, params)
    return {
        (row["hook_id"], row["ordering_key"]): row["last_sequence"]
        - added[row["hook_id"], row["ordering_key"]]
        + 1
        for row in rows
    }


async def lock_keys(conn: Connection, dialect: Dialect, keys: Iterable[OrderingKey]) -> None:
    """Hold the keys' queues until the transaction ends (PostgreSQL; SQLite holds the
    whole database already)."""
    if dialect == "sqlite":
        return
    pairs = sorted(set(keys))
    if pairs:
        await conn.fetch(
            _LOCK_KEYS,
            {"hook_ids": [hook_id for hook_id, _ in pairs], "keys": [key for _, key in pairs]},
        )


async def settle_keys(
    conn: Connection,
    dialect: Dialect,
    keys: Iterable[OrderingKey],
    *,
    now: datetime,
    collapse: bool = True,
) -> None:
    """After a change to these keys' queues: collapse (latest-state hooks; ``collapse``
    only where newer updates may have joined a key), then give every key without a head
    its next one. The keys must be locked (``lock_keys``)."""
    pairs = sorted(set(keys))
    if not pairs:
        return
    statements = (_COLLAPSE, _PROMOTE) if collapse else (_PROMOTE,)
    if dialect == "sqlite":
        rows = [
            {"hook_id": hook_id, "ordering_key": key, "now": now, "message": _SUPERSEDED}
            for hook_id, key in pairs
        ]
        for statement in statements:
            await conn.execute_many(statement, rows)
        return
    params = {
        "hook_ids": [hook_id for hook_id, _ in pairs],
        "keys": [key for _, key in pairs],
        "now": now,
        "message": _SUPERSEDED,
    }
    for statement in statements:
        await conn.execute(statement, params)
