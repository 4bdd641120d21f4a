"""services.common.db.retry_conflicts: a transaction the database aborted runs again."""

from __future__ import annotations

import pytest

from services.common.db import SERIALIZATION_CONFLICT, retry_conflicts
from services.common.errors import Aborted


class Flaky:
    def __init__(self, failures: int, message: str = SERIALIZATION_CONFLICT) -> None:
        self.failures, self.message, self.calls = failures, message, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise Aborted(self.message)
        return "done"


async def test_a_deadlock_or_serialization_failure_runs_the_transaction_again() -> None:
    action = Flaky(failures=2)
    assert await retry_conflicts(action, backoff_s=0) == "done"
    assert action.calls == 3


async def test_the_last_conflict_reaches_the_caller() -> None:
    action = Flaky(failures=5)
    with pytest.raises(Aborted, match="conflicted"):
        await retry_conflicts(action, attempts=3, backoff_s=0)
    assert action.calls == 3


async def test_other_aborts_are_the_callers_to_handle() -> None:
    """A stale `if_version` is the client's race, not the database's: never retried here."""
    action = Flaky(failures=1, message="the lattice is at version 3, not 2")
    with pytest.raises(Aborted, match="version 3"):
        await retry_conflicts(action, backoff_s=0)
    assert action.calls == 1
