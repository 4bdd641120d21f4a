"""Group commit: items wait while a write runs, then go together, one write per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.webhook.batching import GroupCommit


class Writes:
    def __init__(self, failing: str = "") -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.failing = failing
        self.gate = asyncio.Event()

    async def write(self, tenant_id: str, items: Sequence[int]) -> list[int]:
        self.calls.append((tenant_id, list(items)))
        await self.gate.wait()
        if tenant_id == self.failing:
            raise OSError("database away")
        return [item * 10 for item in items]


async def test_items_arriving_during_a_write_go_together_in_the_next() -> None:
    writes = Writes()
    batches = GroupCommit(writes.write)
    first = asyncio.create_task(batches.submit("a", 1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(batches.submit(tenant, n)) for tenant, n in [("a", 2), ("b", 3)]]
    await asyncio.sleep(0)
    writes.gate.set()

    assert await first == 10
    assert [await task for task in later] == [20, 30]
    assert writes.calls == [("a", [1]), ("a", [2]), ("b", [3])]


async def test_a_failed_write_fails_its_tenants_items_only() -> None:
    writes = Writes(failing="a")
    writes.gate.set()
    batches = GroupCommit(writes.write)
    results = await asyncio.gather(
        batches.submit("a", 1), batches.submit("b", 2), return_exceptions=True
    )
    assert isinstance(results[0], OSError)
    assert results[1] == 20


async def test_a_cancelled_caller_does_not_withdraw_its_item() -> None:
    writes = Writes()
    batches = GroupCommit(writes.write)
    task = asyncio.create_task(batches.submit("a", 1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    writes.gate.set()
    await batches.drain()
    assert writes.calls == [("a", [1])]


async def test_batches_are_bounded() -> None:
    writes = Writes()
    writes.gate.set()
    batches = GroupCommit(writes.write, max_batch=3)
    await asyncio.gather(*(batches.submit("a", n) for n in range(7)))
    assert [len(items) for _, items in writes.calls] == [3, 3, 1]
