"""What follows an attempt: the schedule with jitter, Retry-After, 410 and failing endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.webhook.policy import (
    AttemptResult,
    AttemptStatus,
    RetryPolicy,
    parse_retry_after,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
SCHEDULE = [0, 5, 300, 1800]
OK = AttemptResult(200, "")
ERROR = AttemptResult(500, "HTTP 500")
REFUSED = AttemptResult(0, "connection refused")


def policy(*, rng: float = 0.5, jitter: float = 0.1, disable_after_s: float = 86400) -> RetryPolicy:
    return RetryPolicy(
        SCHEDULE,
        jitter=jitter,
        retry_after_max_s=3600,
        disable_after_s=disable_after_s,
        rng=lambda: rng,
    )


def test_success_ends_the_delivery() -> None:
    outcome = policy().decide(1, OK, NOW, None)
    assert outcome.status is AttemptStatus.SUCCEEDED
    assert outcome.retry_in_s is None
    assert outcome.disable_reason == ""


@pytest.mark.parametrize("result", [ERROR, REFUSED, AttemptResult(302, "HTTP 302")])
def test_failures_follow_the_schedule_then_die(result: AttemptResult) -> None:
    retry = policy()
    delays = [retry.decide(attempt, result, NOW, None).retry_in_s for attempt in (1, 2, 3)]
    assert delays == [5, 300, 1800]
    last = retry.decide(4, result, NOW, None)
    assert last.status is AttemptStatus.DEAD
    assert last.retry_in_s is None
    assert last.disable_reason == ""


@pytest.mark.parametrize(("rng", "factor"), [(0.0, 0.9), (1.0, 1.1), (0.25, 0.95)])
def test_jitter_is_ten_percent_either_way(rng: float, factor: float) -> None:
    retry = policy(rng=rng)
    assert retry.decide(2, ERROR, NOW, None).retry_in_s == pytest.approx(300 * factor)
    assert retry.first_delay_s() == 0


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, 20.0, 20.0),  # later than the schedule's 5 s
        (503, 2.0, 5.0),  # never sooner than the schedule
        (429, 86400.0, 3600.0),  # capped
        (500, 20.0, 5.0),  # only 429 and 503 carry a meaningful Retry-After
        (429, None, 5.0),
    ],
)
def test_retry_after(status: int, retry_after: float | None, expected: float) -> None:
    result = AttemptResult(status, f"HTTP {status}", retry_after_s=retry_after)
    outcome = policy(jitter=0).decide(1, result, NOW, None)
    assert outcome.status is AttemptStatus.FAILED
    assert outcome.retry_in_s == expected


def test_410_is_dead_and_disables_at_once() -> None:
    outcome = policy().decide(1, AttemptResult(410, "HTTP 410"), NOW, None)
    assert outcome.status is AttemptStatus.DEAD
    assert outcome.disable_kind == "gone"
    assert "410" in outcome.disable_reason


def test_an_endpoint_failing_for_the_whole_span_is_disabled() -> None:
    retry = policy(disable_after_s=5 * 86400)
    almost = retry.decide(1, ERROR, NOW, NOW - timedelta(days=4, hours=23))
    assert almost.status is AttemptStatus.FAILED
    outcome = retry.decide(1, ERROR, NOW, NOW - timedelta(days=5))
    assert outcome.status is AttemptStatus.DEAD
    assert outcome.disable_kind == "failing"
    assert "5 days" in outcome.disable_reason
    # A success in between restarts the clock: the store clears failing_since.
    assert retry.decide(1, ERROR, NOW, None).status is AttemptStatus.FAILED


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after(" 7 ", NOW) == 7
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", NOW) == 30
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", NOW) == 0
    for unusable in (None, "", "-5", "soon", "1.5"):
        assert parse_retry_after(unusable, NOW) is None


def test_a_schedule_is_not_empty() -> None:
    with pytest.raises(ValueError, match="schedule"):
        RetryPolicy([], jitter=0, retry_after_max_s=1, disable_after_s=1)
