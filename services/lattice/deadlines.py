"""The time a request may spend: the caller's gRPC deadline, capped by the service's own limit.

REST callers come through Envoy, which sends no grpc-timeout, so without the cap a request
could hold a worker for as long as its search takes. A request past its deadline gets
DeadlineExceeded, never an answer that arrives after the caller gave up.

The work stops a little before the caller's deadline (`MARGIN_S`, at most a tenth of the time
left), so that the service itself ends it and announces `computation.failed`, rather than gRPC
cancelling the handler at that same instant; a handler cancelled anyway once its deadline has
passed is still a deadline failure (`explain`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from services.common.errors import DeadlineExceeded

DEADLINE_PASSED = "the deadline passed before the computation could finish"
MARGIN_S = 0.1


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock, or none (inf)."""

    at: float

    @classmethod
    def start(cls, remaining_s: float | None, cap_s: float | None) -> Deadline:
        """From gRPC's `time_remaining()` (None: the caller set none) and the service's cap."""
        callers = math.inf
        if remaining_s is not None:
            callers = remaining_s - min(MARGIN_S, remaining_s / 10)
        budget = min(callers, math.inf if cap_s is None else cap_s)
        return cls(time.monotonic() + budget)

    def left(self) -> float | None:
        """Seconds left (None: unbounded); DeadlineExceeded once none are."""
        if math.isinf(self.at):
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(DEADLINE_PASSED)
        return left

    def explain(self, error: BaseException) -> BaseException:
        """What ended the work: a cancellation that came once the deadline had passed (gRPC
        ending the call at the caller's deadline) is DeadlineExceeded; anything else is itself
        (a cancellation before it is a caller that went away)."""
        if isinstance(error, asyncio.CancelledError) and time.monotonic() >= self.at:
            return DeadlineExceeded(DEADLINE_PASSED)
        return error
