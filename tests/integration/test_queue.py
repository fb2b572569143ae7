"""The queue's rules at a fixed clock: claim order, the per-hook cap, leases, retries.

Every claim and outcome is given its ``now``; nothing sleeps.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from crohooks.delivery.body import render_delivery_body
from crohooks.delivery.retry import RetryPolicy
from crohooks.model import (
    AttemptRecord,
    ClaimedDelivery,
    ClaimPolicy,
    DeliveryStatus,
    NewEvent,
    Outcome,
    RateLimit,
)
from crohooks.store.connector import Database
from crohooks.store.deliveries import DeliveryRepository
from crohooks.store.hook_settings import HookSettingsRepository
from crohooks.store.hooks import HookRepository
from crohooks.store.housekeeping import Housekeeping
from crohooks.store.intake import Intake
from crohooks.store.queue import DeliveryQueue

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANT = 34
LEASE = timedelta(seconds=60)
DAY = timedelta(hours=24)


def policy(*, limit: int = 100, cap: int = 100, worker: str = "w1") -> ClaimPolicy:
    return ClaimPolicy(limit=limit, per_hook_cap=cap, lease=LEASE, worker_id=worker)


async def hook(db: Database, name: str) -> int:
    created = await HookRepository(db).create(
        TENANT, url=f"https://{name}.example", secret="s" * 24, events=("Job",), now=T0
    )
    return created.id


async def publish(db: Database, count: int, *, at: datetime) -> None:
    """``count`` events at ``at``, each delivered to every hook."""
    events = [NewEvent("Job", {"n": n}) for n in range(count)]
    await Intake(db, render_delivery_body).accept(TENANT, events, now=at, idempotency_window=DAY)


def attempt(at: datetime, status: int) -> AttemptRecord:
    return AttemptRecord(
        started_at=at, duration_ms=1.0, http_status=status, message="", request_headers={}
    )


def outcome(
    claimed: ClaimedDelivery,
    *,
    at: datetime,
    http_status: int = 500,
    status: DeliveryStatus = DeliveryStatus.PENDING,
    next_attempt_at: datetime | None = None,
    deferred: bool = False,
) -> Outcome:
    return Outcome(claimed, attempt(at, http_status), status, next_attempt_at, deferred)


async def test_first_attempts_and_retries_are_claimed_turn_about(db: Database) -> None:
    await hook(db, "a")
    queue = DeliveryQueue(db)
    # Three deliveries that failed once and are due again, older than any first attempt.
    await publish(db, 3, at=T0 - timedelta(hours=2))
    failed = await queue.claim(policy(), now=T0 - timedelta(hours=2))
    await queue.record(
        [
            outcome(c, at=T0 - timedelta(hours=2), next_attempt_at=T0 - timedelta(minutes=30 - n))
            for n, c in enumerate(failed)
        ],
        now=T0 - timedelta(hours=2),
    )
    await publish(db, 3, at=T0 - timedelta(minutes=1))

    claimed = await queue.claim(policy(limit=6), now=T0)

    assert [c.attempts for c in claimed] == [0, 1, 0, 1, 0, 1]
    assert [c.id for c in claimed if c.attempts] == [c.id for c in failed]


async def test_a_backlog_of_retries_does_not_starve_first_attempts(db: Database) -> None:
    await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, 10, at=T0 - DAY)
    failed = await queue.claim(policy(), now=T0 - DAY)
    await queue.record([outcome(c, at=T0 - DAY, next_attempt_at=T0 - DAY) for c in failed], now=T0)
    await publish(db, 1, at=T0)

    claimed = await queue.claim(policy(limit=2), now=T0)

    assert sorted(c.attempts for c in claimed) == [0, 1]


async def test_no_hook_gets_more_than_its_cap_in_flight(db: Database) -> None:
    busy, quiet = await hook(db, "busy"), await hook(db, "quiet")
    queue = DeliveryQueue(db)
    await publish(db, 5, at=T0)  # five deliveries to each hook

    first = await queue.claim(policy(cap=2, worker="w1"), now=T0)
    second = await queue.claim(policy(cap=2, worker="w2"), now=T0)

    assert sorted(c.hook_id for c in first) == [busy, busy, quiet, quiet]
    assert second == []
    # Room comes back as outcomes are recorded.
    done = [c for c in first if c.hook_id == busy][:1]
    await queue.record(
        [outcome(c, at=T0, http_status=200, status=DeliveryStatus.SUCCEEDED) for c in done],
        now=T0,
    )
    third = await queue.claim(policy(cap=2, worker="w2"), now=T0)
    assert [c.hook_id for c in third] == [busy]


async def test_a_saturated_hook_is_left_out_of_the_scan(db: Database) -> None:
    """A hook at its cap with a deep backlog must not fill the candidate window (four
    times the limit) and hide other hooks' deliveries behind it."""
    slow = await hook(db, "slow")
    await publish(db, 20, at=T0 - timedelta(hours=1))  # all to the slow hook
    fast = await hook(db, "fast")
    await publish(db, 1, at=T0)  # to both; the slow hook's is the newest of all
    queue = DeliveryQueue(db)
    leased = await queue.claim(policy(limit=2, cap=2), now=T0)
    assert [c.hook_id for c in leased] == [slow, slow]

    claimed = await queue.claim(policy(limit=1, cap=2), now=T0)

    assert [c.hook_id for c in claimed] == [fast]


async def test_a_lapsed_lease_is_claimed_again_and_the_late_outcome_is_fenced_off(
    db: Database,
) -> None:
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    await publish(db, 1, at=T0)
    [first] = await queue.claim(policy(worker="w1"), now=T0)
    assert not first.reclaimed
    assert first.lease_expires_at == T0 + LEASE

    assert await queue.claim(policy(worker="w2"), now=T0 + LEASE - timedelta(seconds=1)) == []
    [again] = await queue.claim(policy(worker="w2"), now=T0 + LEASE)

    assert again.id == first.id
    assert again.reclaimed
    assert (again.attempts, again.leased_by) == (0, "w2")
    # The worker that lost its lease reports while the new lease runs: its attempt is
    # logged, but the delivery's state is left to the worker holding the lease.
    late = T0 + LEASE + timedelta(seconds=1)
    await queue.record([outcome(first, at=T0, next_attempt_at=late + DAY)], now=late)
    await queue.record(
        [outcome(again, at=T0 + LEASE, http_status=200, status=DeliveryStatus.SUCCEEDED)],
        now=late + timedelta(seconds=1),
    )
    found = await DeliveryRepository(db).get(TENANT, hook_id, first.id)
    assert found is not None
    delivery, attempts = found
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 1)
    assert sorted(a.http_status for a in attempts) == [200, 500]


async def test_a_failing_delivery_follows_the_retry_schedule(db: Database) -> None:
    """Retried exactly when the schedule says (no jitter), a short Retry-After deferring
    an attempt without using a step, until the schedule is spent."""
    hook_id = await hook(db, "a")
    queue = DeliveryQueue(db)
    retry = RetryPolicy(schedule=(5.0, 300.0), jitter=0.0, retry_after_max=3600, max_deferrals=5)
    await publish(db, 1, at=T0)
    answers = [(500, None), (429, "2"), (503, None), (500, None)]
    due, seen = T0, []
    for http_status, retry_after in answers:
        assert await queue.claim(policy(), now=due - timedelta(microseconds=1)) == []
        [claimed] = await queue.claim(policy(), now=due)
        seen.append((claimed.attempts, claimed.deferrals, claimed.created_at))
        now = due + timedelta(seconds=1)
        decision = retry.decide(
            attempts_made=claimed.attempts + 1,
            deferrals=claimed.deferrals,
            created_at=claimed.created_at,
            http_status=http_status,
            retry_after=retry_after,
            now=now,
        )
        await queue.record(
            [
                outcome(
                    claimed,
                    at=due,
                    http_status=http_status,
                    status=decision.status,
                    next_attempt_at=decision.next_attempt_at,
                    deferred=decision.deferred,
                )
            ],
            now=now,
        )
        due = decision.next_attempt_at or due

    assert seen == [(0, 0, T0), (1, 0, T0), (2, 1, T0), (3, 1, T0)]
    assert await queue.claim(policy(), now=T0 + DAY * 30) == []
    found = await DeliveryRepository(db).get(TENANT, hook_id, claimed.id)
    assert found is not None
    delivery, attempts = found
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 4)
    assert [a.started_at - T0 for a in attempts] == [
        timedelta(0),
        timedelta(seconds=1 + 5),  # the first step
        timedelta(seconds=1 + 5 + 1 + 2),  # deferred: Retry-After 2, no step used
        timedelta(seconds=1 + 5 + 1 + 2 + 1 + 300),  # the second (last) step
    ]


async def test_one_batch_of_outcomes_over_several_hooks_lands_whole(db: Database) -> None:
    """A batch as the worker writes it: each delivery's state, every attempt row, and each
    hook's outcomes folded in order (the last word on ``failing_since`` is its last
    outcome: the hook that failed last is the one auto-deactivation finds)."""
    recovered, failing = await hook(db, "recovered"), await hook(db, "failing")
    queue = DeliveryQueue(db)
    await publish(db, 2, at=T0)
    claimed = await queue.claim(policy(), now=T0)
    by_hook = {
        hook_id: sorted((c for c in claimed if c.hook_id == hook_id), key=lambda c: c.id)
        for hook_id in (recovered, failing)
    }
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    retry_at = T0 + DAY
    batch = [
        outcome(by_hook[recovered][0], at=t1, next_attempt_at=retry_at),
        outcome(by_hook[failing][0], at=t1, http_status=200, status=DeliveryStatus.SUCCEEDED),
        outcome(by_hook[recovered][1], at=t2, http_status=204, status=DeliveryStatus.SUCCEEDED),
        outcome(by_hook[failing][1], at=t2, http_status=410, status=DeliveryStatus.FAILED),
    ]
    await queue.record(batch, now=t2)

    log = DeliveryRepository(db)
    states = {}
    for item in batch:
        found = await log.get(TENANT, item.delivery.hook_id, item.delivery.id)
        assert found is not None
        delivery, attempts = found
        states[item.delivery.id] = (delivery.status, delivery.attempts, len(attempts))
        assert [a.http_status for a in attempts] == [item.attempt.http_status]
    assert list(states.values()) == [
        (DeliveryStatus.PENDING, 1, 1),
        (DeliveryStatus.SUCCEEDED, 1, 1),
        (DeliveryStatus.SUCCEEDED, 1, 1),
        (DeliveryStatus.FAILED, 1, 1),
    ]
    hooks = HookRepository(db)
    a, b = await hooks.get(TENANT, recovered), await hooks.get(TENANT, failing)
    assert a is not None
    assert b is not None
    assert (a.last_http_success, a.last_http_fail) == (t2, t1)
    assert (b.last_http_success, b.last_http_fail) == (t1, t2)
    deactivated = await Housekeeping(db).deactivate_failing_hooks(
        failing_for=timedelta(seconds=1), now=T0 + DAY
    )
    assert [hook_id for hook_id, _ in deactivated] == [failing]
    # The retry is due when the outcome said, not before.
    assert await queue.claim(policy(), now=retry_at - timedelta(seconds=1)) == []
    [again] = await queue.claim(policy(), now=retry_at)
    assert (again.id, again.attempts) == (by_hook[recovered][0].id, 1)


async def test_a_rate_limited_hook_gets_paced_slots_shared_by_every_claim(db: Database) -> None:
    """At 4/s with a burst of 1, claims up to a one-second horizon hand out slots: two at
    once, then one every 0.25 s, whichever worker claims; the rest stay queued, and an
    idle hook earns its burst back."""
    limited, free = await hook(db, "limited"), await hook(db, "free")
    settings = HookSettingsRepository(db)
    await settings.update(
        TENANT, limited, lambda s: replace(s, rate_limit=RateLimit(4.0, burst=1)), now=T0
    )
    await publish(db, 10, at=T0)
    queue = DeliveryQueue(db)
    first = await queue.claim(policy(worker="w1"), now=T0)
    slots = [d.not_before for d in first if d.hook_id == limited]
    assert [d.not_before for d in first if d.hook_id == free] == [None] * 10
    quarter = timedelta(seconds=0.25)
    # T0 itself is no wait; slots before T0 + 1 s (the horizon) only.
    assert slots == [None, None, T0 + quarter, T0 + 2 * quarter, T0 + 3 * quarter]

    # Another worker, half a second on: the hook's next slot (T0 + 1 s) is its first.
    now = T0 + 2 * quarter
    second = await queue.claim(policy(worker="w2"), now=now)
    assert [d.not_before for d in second] == [T0 + 4 * quarter, T0 + 5 * quarter]
    assert {d.hook_id for d in second} == {limited}
    # Nothing more within the horizon until time moves on: the rest wait in the queue.
    assert await queue.claim(policy(), now=now) == []
    later = T0 + timedelta(seconds=10)
    rest = await queue.claim(policy(), now=later)
    # Idle long enough to earn the burst back: two at once, then the next slot.
    assert [d.not_before for d in rest] == [None, None, later + quarter]
