"""Ordered delivery per (hook, ordering key), at a fixed clock: sequence numbers, the
strict order of attempts, a failing head blocking only its key, latest-state collapse,
redeliver and recover; and a property test over random runs on both databases."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.retry import RetryPolicy
from crohooks.model import ClaimedDelivery, DeliveryStatus, NewEvent, Outcome
from crohooks.store.connect import open_database
from crohooks.store.connector import Database, Row, Statement
from crohooks.store.deliveries import DeliveryRepository
from crohooks.store.hook_settings import HookSettingsRepository
from crohooks.store.hooks import HookRepository
from crohooks.store.intake import Intake
from crohooks.store.ordering import lock_keys
from crohooks.store.queue import DeliveryQueue
from tests.integration.test_queue import DAY, LEASE, T0, TENANT, hook, outcome, policy

RETRY = RetryPolicy(schedule=(5.0, 30.0), jitter=0.0, retry_after_max=3600, max_deferrals=0)

_STATES = Statement.shared(
    "test_ordering_states",
    """
    SELECT id, hook_id, ordering_key, sequence, status, body FROM deliveries
    WHERE hook_id = :hook_id ORDER BY ordering_key, sequence""",
)


async def publish(db: Database, keys: list[str | None], *, at: datetime) -> None:
    """One event per entry of ``keys`` (its ordering key), in one batch, in that order."""
    events = [NewEvent("Job", {"n": n}, ordering_key=key) for n, key in enumerate(keys)]
    await Intake(db, render_delivery_body).accept(TENANT, events, now=at, idempotency_window=DAY)


async def states(db: Database, hook_id: int) -> list[Row]:
    return await db.fetch(_STATES, {"hook_id": hook_id})


async def set_latest(db: Database, hook_id: int) -> None:
    latest = await HookSettingsRepository(db).update(
        TENANT, hook_id, lambda current: dataclasses.replace(current, ordering="latest"), now=T0
    )
    assert latest is not None
    assert latest.ordering == "latest"


def succeed(claimed: ClaimedDelivery, at: datetime) -> Outcome:
    return outcome(claimed, at=at, http_status=200, status=DeliveryStatus.SUCCEEDED)


async def test_keyed_deliveries_are_numbered_per_hook_and_key(db: Database) -> None:
    first, second = await hook(db, "a"), await hook(db, "b")
    await publish(db, ["Job:1", "Job:2", "Job:1", None], at=T0)
    await publish(db, ["Job:1"], at=T0 + timedelta(seconds=1))

    for hook_id in (first, second):
        rows = await states(db, hook_id)
        numbered = [(row["ordering_key"], row["sequence"]) for row in rows]
        assert sorted(numbered, key=str) == sorted(
            [("Job:1", 1), ("Job:1", 2), ("Job:1", 3), ("Job:2", 1), (None, None)], key=str
        )
        for row in rows:
            body = json.loads(row["body"])
            if row["ordering_key"] is None:
                assert "ordering_key" not in body
                assert "sequence" not in body
            else:
                assert (body["ordering_key"], body["sequence"]) == (
                    row["ordering_key"],
                    row["sequence"],
                )
            # The stored body is exactly json.dumps(sort_keys=True) of itself.
            assert json.dumps(body, sort_keys=True) == row["body"]


async def test_only_the_head_of_a_key_is_claimed_and_the_next_follows_its_success(
    db: Database,
) -> None:
    await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1", "Job:1", "Job:1", "Job:2", None], at=T0)

    claimed = await queue.claim(policy(), now=T0)
    assert sorted((c.ordering_key or "", c.sequence or 0) for c in claimed) == [
        ("", 0),
        ("Job:1", 1),
        ("Job:2", 1),
    ]
    assert await queue.claim(policy(), now=T0) == []
    head = next(c for c in claimed if c.ordering_key == "Job:1")
    await queue.record([succeed(head, T0)], now=T0)

    [following] = await queue.claim(policy(), now=T0)
    assert (following.ordering_key, following.sequence) == ("Job:1", 2)


_LOCK_WAITERS = Statement.shared(
    "test_ordering_lock_waiters",
    "SELECT count(*) AS waiting FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'",
)
# What an intake holding the key's lock adds: a second update, waiting behind the head.
_ADD_WAITING = Statement.shared(
    "test_ordering_add_waiting",
    """
    INSERT INTO deliveries (id, tenant_id, hook_id, event_id, event, body, status, attempts,
                            next_attempt_at, created_at, updated_at, ordering_key, sequence)
    SELECT :id, tenant_id, hook_id, event_id, event, body, 'pending', 0,
           NULL, created_at, updated_at, ordering_key, 2
    FROM deliveries WHERE id = :head""",
)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_head_that_waited_for_its_keys_lock_hands_over_to_what_the_holder_added(
    db: Database,
) -> None:
    """A finished head's outcome waits while another transaction holds its key; the hand-
    over then sees what that transaction committed, or the key would have no head."""
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1"], at=T0)
    [head] = await queue.claim(policy(), now=T0)
    added = str(uuid.uuid4())
    async with db.write() as conn:
        await lock_keys(conn, db.dialect, [(hook_id, "Job:1")])
        recording = asyncio.create_task(queue.record([succeed(head, T0)], now=T0))
        while not (await db.fetch(_LOCK_WAITERS, {}))[0]["waiting"]:
            assert not recording.done(), "the outcome did not wait for the key's lock"
            await asyncio.sleep(0.01)
        await conn.execute(_ADD_WAITING, {"id": added, "head": head.id})
    await recording

    [following] = await queue.claim(policy(), now=T0)
    assert (following.id, following.ordering_key, following.sequence) == (added, "Job:1", 2)


async def test_a_failing_head_blocks_only_its_own_key(db: Database) -> None:
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1", "Job:1", "Job:2", "Job:2"], at=T0)
    claimed = await queue.claim(policy(), now=T0)
    failing = next(c for c in claimed if c.ordering_key == "Job:1")
    flowing = next(c for c in claimed if c.ordering_key == "Job:2")
    retry_at = T0 + timedelta(hours=1)
    await queue.record(
        [outcome(failing, at=T0, next_attempt_at=retry_at), succeed(flowing, T0)],
        now=T0,
    )

    [next_of_other_key] = await queue.claim(policy(), now=T0 + timedelta(seconds=1))
    assert (next_of_other_key.ordering_key, next_of_other_key.sequence) == ("Job:2", 2)
    await queue.record([succeed(next_of_other_key, T0)], now=T0 + timedelta(seconds=1))
    # Job:1's second update waits behind its failing head, even when the head is due.
    [again] = await queue.claim(policy(), now=retry_at)
    assert (again.ordering_key, again.sequence, again.attempts) == ("Job:1", 1, 1)
    await queue.record(
        [outcome(again, at=retry_at, http_status=410, status=DeliveryStatus.FAILED)],
        now=retry_at,
    )
    [after_failure] = await queue.claim(policy(), now=retry_at)
    assert (after_failure.ordering_key, after_failure.sequence) == ("Job:1", 2)
    statuses = [(r["ordering_key"], r["sequence"], r["status"]) for r in await states(db, hook_id)]
    assert ("Job:1", 1, "failed") in statuses


async def test_a_lapsed_lease_keeps_the_order(db: Database) -> None:
    await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1", "Job:1"], at=T0)
    [first] = await queue.claim(policy(worker="w1"), now=T0)  # w1 dies with it

    assert await queue.claim(policy(worker="w2"), now=T0 + LEASE / 2) == []
    [again] = await queue.claim(policy(worker="w2"), now=T0 + LEASE)
    assert (again.id, again.reclaimed, again.sequence) == (first.id, True, 1)


async def test_latest_state_mode_supersedes_waiting_updates_and_records_them(
    db: Database,
) -> None:
    hook_id = await hook(db, "a")
    await set_latest(db, hook_id)
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1"], at=T0)
    [head] = await queue.claim(policy(), now=T0)
    retry_at = T0 + timedelta(hours=1)
    await queue.record([outcome(head, at=T0, next_attempt_at=retry_at)], now=T0)
    # The receiver is down; four more updates of Job:1 arrive meanwhile.
    for n in range(4):
        await publish(db, ["Job:1"], at=T0 + timedelta(minutes=n + 1))

    rows = await states(db, hook_id)
    assert [(r["sequence"], r["status"]) for r in rows] == [
        (1, "pending"),  # the head: attempted already, never superseded
        (2, "superseded"),
        (3, "superseded"),
        (4, "superseded"),
        (5, "pending"),
    ]
    [again] = await queue.claim(policy(), now=retry_at)
    await queue.record([succeed(again, retry_at)], now=retry_at)
    [latest] = await queue.claim(policy(), now=retry_at)
    assert latest.sequence == 5
    log = DeliveryRepository(db)
    page, total = await log.list_page(TENANT, hook_id, status="superseded", limit=10, offset=0)
    assert total == 3
    assert all(d.completed_at is not None and d.last_message for d in page)


async def test_all_mode_keeps_every_update(db: Database) -> None:
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1"], at=T0)
    [head] = await queue.claim(policy(), now=T0)
    await queue.record([outcome(head, at=T0, next_attempt_at=T0 + DAY)], now=T0)
    await publish(db, ["Job:1", "Job:1", "Job:1"], at=T0 + timedelta(minutes=1))

    assert {r["status"] for r in await states(db, hook_id)} == {"pending"}


async def test_a_redelivered_update_waits_for_the_head_and_is_marked(db: Database) -> None:
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1"], at=T0)
    [first] = await queue.claim(policy(), now=T0)
    await queue.record([succeed(first, T0)], now=T0)
    await publish(db, ["Job:1", "Job:1"], at=T0)
    [second] = await queue.claim(policy(), now=T0)
    assert (second.sequence, second.redelivered) == (2, False)

    redelivered = await DeliveryRepository(db).redeliver(TENANT, hook_id, first.id, now=T0)
    assert redelivered is not None
    assert redelivered.status == "pending"
    assert await queue.claim(policy(), now=T0) == []  # the head (2) is still in flight
    await queue.record([succeed(second, T0)], now=T0)
    # The redelivered update goes next (sequence order), marked; then the third.
    [old] = await queue.claim(policy(), now=T0)
    assert (old.id, old.sequence, old.redelivered) == (first.id, 1, True)
    await queue.record([succeed(old, T0)], now=T0)
    [third] = await queue.claim(policy(), now=T0)
    assert (third.sequence, third.redelivered) == (3, False)


async def test_recover_requeues_failed_updates_in_their_keys_order(db: Database) -> None:
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, ["Job:1", "Job:1"], at=T0)
    for _ in range(2):
        [claimed] = await queue.claim(policy(), now=T0)
        await queue.record(
            [outcome(claimed, at=T0, http_status=410, status=DeliveryStatus.FAILED)], now=T0
        )
    later = T0 + timedelta(hours=1)
    recovered = await DeliveryRepository(db).recover(
        TENANT, hook_id, since=T0 - DAY, until=later, now=later
    )
    assert recovered == 2

    seen = []
    for _ in range(2):
        [claimed] = await queue.claim(policy(), now=later)
        assert await queue.claim(policy(), now=later) == []
        seen.append((claimed.sequence, claimed.redelivered))
        await queue.record([succeed(claimed, later)], now=later)
    assert seen == [(1, True), (2, True)]


# -- the property: random runs ---------------------------------------------------------

Step = tuple[str, int, int]
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 3), st.integers(1, 3)),
        st.tuples(st.just("claim"), st.integers(1, 6), st.just(0)),
        st.tuples(
            st.sampled_from(["ok", "fail", "gone", "crash", "crash_after_receipt"]),
            st.integers(0, 5),
            st.just(0),
        ),
        st.tuples(st.just("advance"), st.sampled_from([1, 5, 30, 61]), st.just(0)),
        st.tuples(st.just("redeliver"), st.integers(0, 20), st.just(0)),
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class _Run:
    """What the receiver saw and what was claimed, per (hook, key)."""

    now: datetime
    in_flight: list[ClaimedDelivery] = field(default_factory=list)
    received: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)
    """Per key, the sequence numbers of the 2xx answers, with the redelivery mark."""
    redelivered: set[str] = field(default_factory=set)

    def receive(self, claimed: ClaimedDelivery) -> None:
        assert claimed.ordering_key is not None
        assert claimed.sequence is not None
        self.received.setdefault(claimed.ordering_key, []).append(
            (claimed.sequence, claimed.redelivered)
        )


async def _ordered_run(url: str, steps: list[Step], latest: bool) -> None:
    db = open_database(url)
    try:
        await _check_run(db, steps, latest)
    finally:
        await db.dispose()


async def _check_run(db: Database, steps: list[Step], latest: bool) -> None:
    hooks = HookRepository(db)
    created = await hooks.create(
        TENANT, url=f"https://{uuid.uuid4()}.example", secret="s" * 24, events=("Job",), now=T0
    )
    try:
        await _run_on(db, created.id, steps, latest)
    finally:
        # Later examples share the database: their events must not reach this hook.
        await hooks.soft_delete(TENANT, created.id, now=T0)


async def _run_on(db: Database, hook_id: int, steps: list[Step], latest: bool) -> None:
    if latest:
        await set_latest(db, hook_id)
    queue = DeliveryQueue(db)
    log = DeliveryRepository(db)
    run = _Run(now=T0)
    workers = iter(range(10**6))

    async def answer(claimed: ClaimedDelivery, how: str) -> None:
        run.in_flight.remove(claimed)
        if how in ("crash", "crash_after_receipt"):
            if how == "crash_after_receipt":
                run.receive(claimed)  # answered 2xx, but the worker died before writing it
            return
        if how == "ok":
            run.receive(claimed)
            result = succeed(claimed, run.now)
        elif how == "gone":
            result = outcome(claimed, at=run.now, http_status=410, status=DeliveryStatus.FAILED)
        else:
            decision = RETRY.decide(
                attempts_made=claimed.attempts + 1,
                deferrals=claimed.deferrals,
                created_at=claimed.created_at,
                http_status=500,
                retry_after=None,
                now=run.now,
            )
            result = outcome(
                claimed,
                at=run.now,
                status=decision.status,
                next_attempt_at=decision.next_attempt_at,
            )
        await queue.record([result], now=run.now)

    async def claim(limit: int) -> None:
        claimed = await queue.claim(policy(limit=limit, worker=f"w{next(workers)}"), now=run.now)
        rows = {row["id"]: row for row in await states(db, hook_id)}
        for delivery in claimed:
            assert delivery.ordering_key is not None
            # Every earlier delivery of its key has finished: succeeded, failed or superseded.
            assert delivery.sequence is not None
            for row in rows.values():
                if (
                    row["ordering_key"] == delivery.ordering_key
                    and row["sequence"] < delivery.sequence
                ):
                    # A redelivered old update waits behind the head of its key.
                    assert row["status"] != "pending" or row["id"] in run.redelivered, (
                        f"{delivery.ordering_key} #{delivery.sequence} claimed before "
                        f"#{row['sequence']} finished"
                    )
            run.in_flight = [c for c in run.in_flight if c.id != delivery.id]
            run.in_flight.append(delivery)

    for kind, a, b in steps:
        if kind == "publish":
            await publish(db, [f"Job:{a}"] * b, at=run.now)
        elif kind == "claim":
            await claim(a)
        elif kind == "advance":
            run.now += timedelta(seconds=a)
        elif kind == "redeliver":
            rows = [r for r in await states(db, hook_id) if r["status"] != "pending"]
            if rows:
                chosen = rows[a % len(rows)]["id"]
                await log.redeliver(TENANT, hook_id, chosen, now=run.now)
                run.redelivered.add(chosen)
        elif run.in_flight:
            await answer(run.in_flight[a % len(run.in_flight)], kind)

    # Drain: every lease lapses, every attempt succeeds, nothing is left waiting.
    for _ in range(200):
        for claimed in list(run.in_flight):
            await answer(claimed, "ok")
        run.now += LEASE + timedelta(seconds=1)
        await claim(100)
        if not run.in_flight:
            rows = await states(db, hook_id)
            if all(row["status"] != "pending" for row in rows):
                break
    rows = await states(db, hook_id)
    assert all(row["status"] != "pending" for row in rows), "a delivery was left waiting"

    by_key: dict[str, list[Row]] = {}
    for row in rows:
        by_key.setdefault(row["ordering_key"], []).append(row)
    for key, key_rows in by_key.items():
        assert [row["sequence"] for row in key_rows] == list(range(1, len(key_rows) + 1))
        statuses = {row["sequence"]: row["status"] for row in key_rows}
        if not latest:
            assert "superseded" not in statuses.values()
        received = run.received.get(key, [])
        # What the receiver got is in publish order: a retry after a lost outcome repeats
        # the same number, never an older one; a redelivered update is marked as such.
        in_order = [sequence for sequence, redelivered in received if not redelivered]
        assert in_order == sorted(in_order), f"{key}: received {received}"
        # None skipped: every update was received, or is recorded as failed or superseded.
        seen = {sequence for sequence, _ in received}
        for sequence, status in statuses.items():
            assert sequence in seen or status in ("failed", "superseded"), (key, sequence, status)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=_steps, latest=st.booleans())
def test_every_key_is_received_in_publish_order(
    database_url: str, steps: list[Step], latest: bool
) -> None:
    asyncio.run(_ordered_run(database_url, steps, latest))
