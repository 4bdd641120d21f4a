"""The time a request may spend: the caller's gRPC deadline, capped by the service's own limit.

REST callers come through Envoy, which sends no grpc-timeout, so without the cap a request
could hold a worker for as long as its search takes. A request past its deadline gets
DeadlineExceeded, never an answer that arrives after the caller gave up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from services.common.errors import DeadlineExceeded

DEADLINE_PASSED = "the deadline passed before the computation could finish"


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock, or none (inf)."""

    at: float

    @classmethod
    def start(cls, remaining_s: float | None, cap_s: float | None) -> Deadline:
        """From gRPC's `time_remaining()` (None: the caller set none) and the service's cap."""
        budget = min(
            math.inf if remaining_s is None else remaining_s,
            math.inf if cap_s is None else cap_s,
        )
        return cls(time.monotonic() + budget)

    def left(self) -> float | None:
        """Seconds left (None: unbounded); DeadlineExceeded once none are."""
        if math.isinf(self.at):
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(DEADLINE_PASSED)
        return left
