"""The retry schedule of spec 3.2: jitter, Retry-After, 410 and exhaustion."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from crohooks.delivery.retry import RetryPolicy, parse_retry_after
from crohooks.settings import DEFAULT_RETRY_SCHEDULE
from crohooks.store.deliveries import DeliveryStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT = RetryPolicy(schedule=DEFAULT_RETRY_SCHEDULE, jitter=0.2, retry_after_max=86400)


def test_default_schedule_is_eight_attempts_over_about_a_day() -> None:
    assert DEFAULT.max_attempts == 8
    assert sum(DEFAULT_RETRY_SCHEDULE) / 3600 == pytest.approx(27.6, abs=0.1)


@pytest.mark.parametrize("attempts_made", range(1, 8))
def test_each_retry_waits_its_step_within_jitter(attempts_made: int) -> None:
    step = DEFAULT_RETRY_SCHEDULE[attempts_made - 1]
    waits = []
    for seed in range(50):
        status, at = DEFAULT.decide(
            attempts_made=attempts_made,
            http_status=500,
            retry_after=None,
            now=NOW,
            rng=random.Random(seed),
        )
        assert status is DeliveryStatus.PENDING
        assert at is not None
        waits.append((at - NOW).total_seconds())
    assert min(waits) >= step * 0.8
    assert max(waits) <= step * 1.2
    assert len(set(waits)) > 1


def test_the_eighth_failure_ends_the_delivery() -> None:
    assert DEFAULT.decide(attempts_made=8, http_status=500, retry_after=None, now=NOW) == (
        DeliveryStatus.FAILED,
        None,
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert DEFAULT.decide(attempts_made=1, http_status=status, retry_after=None, now=NOW)[0] is (
        DeliveryStatus.SUCCEEDED
    )


@pytest.mark.parametrize("status", [-1, 301, 302, 400, 404, 500, 503])
def test_everything_else_is_retried(status: int) -> None:
    assert DEFAULT.decide(attempts_made=1, http_status=status, retry_after=None, now=NOW)[0] is (
        DeliveryStatus.PENDING
    )


def test_410_ends_at_once() -> None:
    assert DEFAULT.decide(attempts_made=1, http_status=410, retry_after=None, now=NOW)[0] is (
        DeliveryStatus.FAILED
    )


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_replaces_the_step(status: int) -> None:
    _, at = DEFAULT.decide(attempts_made=1, http_status=status, retry_after="120", now=NOW)
    assert at == NOW + timedelta(seconds=120)
    date = "Thu, 01 Jan 2026 00:10:00 GMT"
    _, at = DEFAULT.decide(attempts_made=1, http_status=status, retry_after=date, now=NOW)
    assert at == NOW + timedelta(minutes=10)


def test_retry_after_is_bounded_and_ignored_elsewhere() -> None:
    _, at = DEFAULT.decide(attempts_made=1, http_status=429, retry_after="9999999", now=NOW)
    assert at == NOW + timedelta(days=1)
    _, at = DEFAULT.decide(attempts_made=1, http_status=429, retry_after="0", now=NOW)
    assert at == NOW + timedelta(seconds=1)
    _, at = DEFAULT.decide(attempts_made=1, http_status=500, retry_after="120", now=NOW)
    assert at is not None
    assert (at - NOW).total_seconds() <= 6
    _, at = DEFAULT.decide(attempts_made=1, http_status=429, retry_after="soon", now=NOW)
    assert at is not None
    assert (at - NOW).total_seconds() <= 6


def test_parse_retry_after() -> None:
    assert parse_retry_after(" 30 ", NOW) == 30
    assert parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", NOW) == 0
    assert parse_retry_after("-5", NOW) is None
    assert parse_retry_after("", NOW) is None
