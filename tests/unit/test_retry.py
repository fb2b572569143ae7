"""The retry schedule of spec 3.2: jitter, Retry-After, deferrals, 410 and exhaustion."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crohooks.delivery.retry import RetryDecision, RetryPolicy, parse_retry_after
from crohooks.model import DeliveryStatus
from crohooks.settings import DEFAULT_RETRY_SCHEDULE, Settings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT = RetryPolicy(
    schedule=DEFAULT_RETRY_SCHEDULE, jitter=0.2, retry_after_max=86400, max_deferrals=20
)


def decide(
    policy: RetryPolicy = DEFAULT,
    *,
    attempts_made: int = 1,
    deferrals: int = 0,
    created_at: datetime = NOW,
    http_status: int = 500,
    retry_after: str | None = None,
    now: datetime = NOW,
    **extra: Any,
) -> RetryDecision:
    """One decision; by default for the first attempt of a delivery created just now."""
    return policy.decide(
        attempts_made=attempts_made,
        deferrals=deferrals,
        created_at=created_at,
        http_status=http_status,
        retry_after=retry_after,
        now=now,
        **extra,
    )


def wait_of(decision: RetryDecision, now: datetime = NOW) -> float:
    assert decision.next_attempt_at is not None
    return (decision.next_attempt_at - now).total_seconds()


def test_default_schedule_is_eight_attempts_over_about_a_day() -> None:
    assert DEFAULT.max_attempts == 8
    assert sum(DEFAULT_RETRY_SCHEDULE) / 3600 == pytest.approx(27.6, abs=0.1)
    assert DEFAULT.budget == timedelta(seconds=sum(DEFAULT_RETRY_SCHEDULE))


def test_the_policy_follows_the_settings() -> None:
    settings = Settings(database_url="sqlite://", retry_after_max_deferrals=3)
    assert RetryPolicy.from_settings(settings).max_deferrals == 3
    assert Settings(database_url="sqlite://").retry_after_max_deferrals == 20


@pytest.mark.parametrize("attempts_made", range(1, 8))
def test_each_retry_waits_its_step_within_jitter(attempts_made: int) -> None:
    step = DEFAULT_RETRY_SCHEDULE[attempts_made - 1]
    waits = []
    for seed in range(50):
        decision = decide(attempts_made=attempts_made, rng=random.Random(seed))
        assert decision.status is DeliveryStatus.PENDING
        assert not decision.deferred
        waits.append(wait_of(decision))
    assert min(waits) >= step * 0.8
    assert max(waits) <= step * 1.2
    assert len(set(waits)) > 1


def test_the_eighth_failure_ends_the_delivery() -> None:
    assert decide(attempts_made=8) == RetryDecision(DeliveryStatus.FAILED, None)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert decide(http_status=status) == RetryDecision(DeliveryStatus.SUCCEEDED, None)
    assert decide(attempts_made=9, deferrals=3, http_status=status) == RetryDecision(
        DeliveryStatus.SUCCEEDED, None
    )


@pytest.mark.parametrize("status", [-1, 301, 302, 400, 404, 500, 503])
def test_everything_else_is_retried(status: int) -> None:
    assert decide(http_status=status).status is DeliveryStatus.PENDING


def test_410_ends_at_once() -> None:
    assert decide(http_status=410) == RetryDecision(DeliveryStatus.FAILED, None)
    # Even with a Retry-After, and with deferrals to spare.
    assert decide(http_status=410, retry_after="1") == RetryDecision(DeliveryStatus.FAILED, None)


@pytest.mark.parametrize("status", [429, 503])
def test_a_short_retry_after_defers_without_using_a_step(status: int) -> None:
    # The second attempt: the schedule's step would be 5 min; the receiver asks for 1 s.
    decision = decide(attempts_made=2, http_status=status, retry_after="1")
    assert decision == RetryDecision(
        DeliveryStatus.PENDING, NOW + timedelta(seconds=1), deferred=True
    )
    # The next attempt is still at the same step: a plain failure then waits 5 min ± 20 %.
    after = decide(attempts_made=3, deferrals=1, rng=random.Random(1))
    assert not after.deferred
    assert 240 <= wait_of(after) <= 360


def test_a_receiver_throttling_every_attempt_keeps_the_whole_schedule() -> None:
    """Twelve answers of 429 + ``Retry-After: 1``, one a second: the issue's "done when"."""
    attempts = deferrals = 0
    now = NOW
    for _ in range(12):
        decision = decide(
            attempts_made=attempts + 1,
            deferrals=deferrals,
            http_status=429,
            retry_after="1",
            now=now,
        )
        assert decision.status is DeliveryStatus.PENDING
        assert decision.next_attempt_at is not None
        attempts, deferrals = attempts + 1, deferrals + decision.deferred
        now = decision.next_attempt_at
    assert (attempts, deferrals) == (12, 12)
    # Seven plain failures after that still get all seven retries of the schedule.
    for retry in range(7):
        decision = decide(attempts_made=attempts + 1, deferrals=deferrals, now=now)
        assert decision.status is DeliveryStatus.PENDING, retry
        assert not decision.deferred
        attempts += 1
    assert decide(attempts_made=attempts + 1, deferrals=deferrals, now=now).status is (
        DeliveryStatus.FAILED
    )


@pytest.mark.parametrize("status", [429, 503])
def test_a_long_retry_after_lengthens_the_wait_and_uses_the_step(status: int) -> None:
    decision = decide(http_status=status, retry_after="120")
    assert decision == RetryDecision(DeliveryStatus.PENDING, NOW + timedelta(seconds=120))
    date = "Thu, 01 Jan 2026 00:10:00 GMT"
    decision = decide(http_status=status, retry_after=date)
    assert decision == RetryDecision(DeliveryStatus.PENDING, NOW + timedelta(minutes=10))
    # After seven deferrals, the step is still the first one.
    decision = decide(attempts_made=8, deferrals=7, http_status=status, retry_after="120")
    assert decision == RetryDecision(DeliveryStatus.PENDING, NOW + timedelta(seconds=120))


def test_retry_after_equal_to_the_step_uses_it() -> None:
    decision = decide(http_status=429, retry_after="5", rng=random.Random(3))
    assert not decision.deferred
    assert 5 <= wait_of(decision) <= 6


def test_deferrals_stop_at_the_cap_and_the_step_is_used_again() -> None:
    policy = RetryPolicy(schedule=(60.0, 60.0), jitter=0.2, retry_after_max=86400, max_deferrals=3)
    at_cap = decide(policy, attempts_made=4, deferrals=2, http_status=429, retry_after="1")
    assert at_cap.deferred
    over = decide(
        policy,
        attempts_made=5,
        deferrals=3,
        http_status=429,
        retry_after="1",
        rng=random.Random(0),
    )
    assert over.status is DeliveryStatus.PENDING
    assert not over.deferred
    # The step's own wait, not the 1 s asked: the cap must not let the schedule run out.
    assert 48 <= wait_of(over) <= 72
    # Past the cap the schedule's last attempt ends the delivery.
    assert decide(
        policy, attempts_made=6, deferrals=3, http_status=429, retry_after="1"
    ) == RetryDecision(DeliveryStatus.FAILED, None)


def test_no_deferrals_when_the_cap_is_zero() -> None:
    policy = RetryPolicy(schedule=(60.0,), jitter=0.0, retry_after_max=86400, max_deferrals=0)
    decision = decide(policy, http_status=503, retry_after="1")
    assert decision == RetryDecision(DeliveryStatus.PENDING, NOW + timedelta(seconds=60))


def test_deferrals_stay_within_the_schedules_span_from_creation() -> None:
    # Default schedule: 99,305 s (about 27.6 h) from the delivery's creation.
    budget = DEFAULT.budget
    created = NOW - budget + timedelta(seconds=10)
    inside = decide(
        attempts_made=3, deferrals=1, created_at=created, http_status=429, retry_after="10"
    )
    assert inside.deferred
    assert inside.next_attempt_at == created + budget
    beyond = decide(
        attempts_made=3,
        deferrals=1,
        created_at=created,
        http_status=429,
        retry_after="11",
        rng=random.Random(0),
    )
    assert not beyond.deferred
    assert beyond.status is DeliveryStatus.PENDING
    assert 240 <= wait_of(beyond) <= 360  # the second step, 5 min ± 20 %


def test_the_last_step_is_never_deferred() -> None:
    # Eight attempts that used a step (and one deferral): nothing is left to postpone.
    ended = RetryDecision(DeliveryStatus.FAILED, None)
    assert decide(attempts_made=9, deferrals=1, http_status=429, retry_after="1") == ended
    assert decide(attempts_made=9, deferrals=1, http_status=503, retry_after="1") == ended
    # One step earlier, with deferrals to spare, the same answer is deferred.
    assert decide(attempts_made=8, deferrals=1, http_status=429, retry_after="1").deferred


def test_retry_after_is_bounded_and_ignored_elsewhere() -> None:
    assert wait_of(decide(http_status=429, retry_after="9999999")) == 86400
    assert decide(http_status=429, retry_after="0") == RetryDecision(
        DeliveryStatus.PENDING, NOW + timedelta(seconds=1), deferred=True
    )
    other = decide(http_status=500, retry_after="1")
    assert not other.deferred
    assert wait_of(other) >= 4
    assert wait_of(decide(http_status=500, retry_after="120")) <= 6
    unreadable = decide(http_status=429, retry_after="soon")
    assert not unreadable.deferred
    assert 4 <= wait_of(unreadable) <= 6


def test_parse_retry_after() -> None:
    assert parse_retry_after(" 30 ", NOW) == 30
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", NOW) == 0
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("", NOW) is None
