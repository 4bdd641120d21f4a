"""What follows an attempt: success, a retry (when), dead, or the endpoint disabled. Pure code."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

GONE = 410
# Answers whose Retry-After the retry honours (RFC 9110 §10.2.3; 429 from RFC 6585).
RETRY_AFTER_STATUSES = frozenset({429, 503})
DISABLED_GONE = "gone"
DISABLED_FAILING = "failing"


class AttemptStatus(StrEnum):
    """The state of one row of the delivery log."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    DEAD = "DEAD"


@dataclass(frozen=True)
class AttemptResult:
    """What one HTTP attempt came to."""

    # The answer's HTTP status; 0 when there was none (DNS, refused, timeout, TLS, SSRF guard).
    status_code: int
    # Why it failed, for the tenant's log; empty on success.
    error: str
    # The start of the answer's body (capped), for the log.
    body: str = ""
    # The answer's Retry-After in seconds, when it had a usable one.
    retry_after_s: float | None = None
    duration_s: float = 0.0

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True)
class Outcome:
    """The decision after an attempt."""

    status: AttemptStatus
    # Seconds from now until the retry (FAILED only); relative, so that the database's clock
    # alone decides when it is due.
    retry_in_s: float | None = None
    # Non-empty when the endpoint is disabled by this attempt: the tenant-facing reason, and
    # its kind (`gone` or `failing`) for the metric label.
    disable_reason: str = ""
    disable_kind: str = ""


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} days"
    if seconds >= 3600:
        return f"{seconds / 3600:g} hours"
    return f"{seconds:g} seconds"


class RetryPolicy:
    """The retry schedule with jitter, Retry-After, 410 and the failing-endpoint rule."""

    def __init__(
        self,
        schedule_s: Sequence[float],
        *,
        jitter: float,
        retry_after_max_s: float,
        disable_after_s: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not schedule_s:
            raise ValueError("a retry schedule has at least one delay")
        self._schedule = tuple(schedule_s)
        self._jitter = jitter
        self._retry_after_max_s = retry_after_max_s
        self._disable_after_s = disable_after_s
        self._rng = rng

    @property
    def max_attempts(self) -> int:
        return len(self._schedule)

    def _jittered(self, delay_s: float) -> float:
        # Spreads retries of many deliveries failing together (an endpoint back up after an
        # outage) instead of sending them in one burst.
        return delay_s * (1 + self._jitter * (2 * self._rng() - 1))

    def first_delay_s(self) -> float:
        """Delay before a new delivery's first attempt."""
        return self._jittered(self._schedule[0])

    def decide(
        self,
        attempt: int,
        result: AttemptResult,
        now: datetime,
        failing_since: datetime | None,
    ) -> Outcome:
        """The outcome of attempt number `attempt` (1 for the first) made at `now`, for an
        endpoint whose first failure since its last success was `failing_since`."""
        if result.succeeded:
            return Outcome(AttemptStatus.SUCCEEDED)
        failing_since = failing_since or now
        if result.status_code == GONE:
            return Outcome(
                AttemptStatus.DEAD,
                disable_reason="the endpoint answered 410 Gone",
                disable_kind=DISABLED_GONE,
            )
        failing_for_s = (now - failing_since).total_seconds()
        if failing_for_s >= self._disable_after_s:
            return Outcome(
                AttemptStatus.DEAD,
                disable_reason=(
                    f"every attempt failed for {_duration(failing_for_s)}"
                    f" (since {failing_since.isoformat()})"
                ),
                disable_kind=DISABLED_FAILING,
            )
        if attempt >= self.max_attempts:
            return Outcome(AttemptStatus.DEAD)
        delay_s = self._jittered(self._schedule[attempt])
        if result.status_code in RETRY_AFTER_STATUSES and result.retry_after_s is not None:
            # The receiver knows best when it can take more, up to a cap: never sooner than
            # it asked, never later than the cap unless the schedule itself says so.
            delay_s = max(delay_s, min(result.retry_after_s, self._retry_after_max_s))
        return Outcome(AttemptStatus.FAILED, retry_in_s=delay_s)
