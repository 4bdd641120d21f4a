"""Deadlines: the work stops before the caller's deadline, and a cancellation after it is one."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.errors import DeadlineExceeded
from services.lattice.deadlines import MARGIN_S, Deadline


def test_the_work_stops_a_margin_before_the_callers_deadline() -> None:
    before = time.monotonic()
    deadline = Deadline.start(1.5, None)
    assert deadline.at <= time.monotonic() + 1.5 - MARGIN_S
    assert deadline.at >= before + 1.5 - MARGIN_S
    # A short deadline keeps most of itself: the margin is at most a tenth of it.
    assert Deadline.start(0.02, None).at >= before + 0.018
    # The service's own cap has no margin: nobody cancels the call when it passes.
    assert Deadline.start(None, 5).at >= before + 5


def test_a_cancellation_after_the_deadline_is_a_deadline_failure() -> None:
    passed = Deadline(time.monotonic() - 0.01)
    assert isinstance(passed.explain(asyncio.CancelledError()), DeadlineExceeded)
    with pytest.raises(DeadlineExceeded):
        passed.left()


def test_a_cancellation_before_the_deadline_is_a_caller_that_went_away() -> None:
    cancelled = asyncio.CancelledError()
    assert Deadline.start(60, None).explain(cancelled) is cancelled
    assert Deadline.start(None, None).explain(cancelled) is cancelled
    other = RuntimeError("fault")
    assert Deadline(time.monotonic() - 1).explain(other) is other
