"""The retention task over a fake store: batches, the cursor, tenants, the periodic loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from services.webhook.retention import OldEvent, Pruned, Retention

from .support import OTHER_TENANT, T0, TENANT


@dataclass
class FakeHistory:
    """Old events; `kept` ones have pending work and survive every prune."""

    events: list[OldEvent]
    kept: set[str] = field(default_factory=set)
    pages: list[tuple[str | None, int]] = field(default_factory=list)
    prunes: list[tuple[str, list[str]]] = field(default_factory=list)
    failures: int = 0

    async def old_events(
        self, older_than_s: float, *, after: OldEvent | None, limit: int
    ) -> list[OldEvent]:
        if self.failures:
            self.failures -= 1
            raise OSError("database away")
        self.pages.append((after.id if after else None, limit))
        ordered = sorted(self.events, key=lambda e: (e.created_at, e.id))
        if after is not None:
            ordered = [e for e in ordered if (e.created_at, e.id) > (after.created_at, after.id)]
        return ordered[:limit]

    async def prune(self, tenant_id: str, event_ids: Sequence[str], older_than_s: float) -> Pruned:
        self.prunes.append((tenant_id, list(event_ids)))
        gone = [e for e in self.events if e.id in event_ids and e.id not in self.kept]
        self.events = [e for e in self.events if e not in gone]
        return Pruned(deliveries=len(gone), events=len(gone))


def history(count: int, kept: set[str] | None = None) -> FakeHistory:
    events = [
        OldEvent(f"evt_{n:03d}", TENANT if n % 2 else OTHER_TENANT, T0 + timedelta(seconds=n))
        for n in range(count)
    ]
    return FakeHistory(events, kept or set())


def retention(store: FakeHistory, batch: int = 4, interval_s: float = 3600) -> Retention:
    return Retention(store, retention_s=30 * 86400, interval_s=interval_s, batch=batch)


async def test_a_pass_walks_every_old_event_in_batches_past_those_that_stay() -> None:
    store = history(10, kept={"evt_000", "evt_001", "evt_002", "evt_003", "evt_005"})

    pruned = await retention(store).prune_once()

    assert pruned == Pruned(deliveries=5, events=5)
    assert sorted(e.id for e in store.events) == [
        "evt_000",
        "evt_001",
        "evt_002",
        "evt_003",
        "evt_005",
    ]
    # The kept ones fill the first batch; the cursor moves past them, not round them forever.
    assert [after for after, _ in store.pages] == [None, "evt_003", "evt_007"]
    # Each batch is pruned tenant by tenant.
    assert store.prunes[0] == (OTHER_TENANT, ["evt_000", "evt_002"])
    assert store.prunes[1] == (TENANT, ["evt_001", "evt_003"])


async def test_a_pass_with_nothing_old_reads_once() -> None:
    store = history(0)
    assert await retention(store).prune_once() == Pruned()
    assert store.pages == [(None, 4)]
    assert store.prunes == []


async def test_the_task_survives_errors_and_stops() -> None:
    store = history(3)
    store.failures = 1
    task = retention(store, interval_s=0.01)
    task.start()
    deadline = asyncio.get_running_loop().time() + 5
    while store.events:
        assert asyncio.get_running_loop().time() < deadline, "nothing pruned in time"
        await asyncio.sleep(0.01)
    await task.stop()
    assert store.events == []
    pages = len(store.pages)
    await asyncio.sleep(0.05)
    assert len(store.pages) == pages, "no pass after stop()"


def test_a_task_needs_a_period() -> None:
    with pytest.raises(ValueError, match="period"):
        Retention(history(0), retention_s=0, interval_s=1, batch=1)
