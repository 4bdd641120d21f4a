"""The compute pool's fair queue alone: turns, running caps, queue shares, lanes, cancellation."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.lattice.engine.fair_queue import (
    UNATTRIBUTED,
    FairQueue,
    Lane,
    QueueFull,
    Share,
)

A, B, C = Share("a"), Share("b"), Share("c")


@dataclass
class Workers:
    """Free workers by kind, as the pool would offer them: `shared` ones take any job,
    `reserved` ones light jobs (and heavy ones only when spilling)."""

    shared: int = 0
    reserved: int = 0
    given: list[str] = field(default_factory=list)

    def place(self, lane: Lane, spill: bool) -> str | None:
        if lane is Lane.LIGHT and self.reserved:
            self.reserved -= 1
            kind = "reserved"
        elif self.shared:
            self.shared -= 1
            kind = "shared"
        elif spill and self.reserved:
            self.reserved -= 1
            kind = "reserved"
        else:
            return None
        self.given.append(kind)
        return kind


def served(queue: FairQueue[str], workers: Workers) -> list[str]:
    """The items the free workers take, in order."""
    order = []
    while (found := queue.pop_next(workers.place)) is not None:
        order.append(found[0].item)
    return order


def test_tenants_take_turns_whatever_they_queued() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=100, tenant_cap=100)
    for n in range(4):
        queue.push(A, Lane.HEAVY, f"a{n}")
    queue.push(B, Lane.HEAVY, "b0")
    queue.push(C, Lane.HEAVY, "c0")
    queue.push(B, Lane.HEAVY, "b1")
    assert served(queue, Workers(shared=7)) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_a_tenant_at_its_running_cap_waits_while_others_start() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=100, tenant_cap=100)
    capped = Share("a", max_running=1)
    queue.started(capped)
    queue.push(capped, Lane.HEAVY, "a1")
    queue.push(B, Lane.HEAVY, "b0")
    assert served(queue, Workers(shared=2)) == ["b0"]
    queue.finished(capped)
    assert served(queue, Workers(shared=1)) == ["a1"]
    assert queue.running("a") == 1


def test_no_tenant_gets_every_worker_but_unattributed_work_may() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=100, tenant_cap=2)
    assert queue.cap_of(Share("a")) == 2  # no plan cap: all workers but one
    assert queue.cap_of(Share("a", max_running=8)) == 2
    assert queue.cap_of(Share("a", max_running=1)) == 1
    assert queue.cap_of(Share(UNATTRIBUTED)) is None
    for n in range(3):
        queue.push(A, Lane.HEAVY, f"a{n}")
        queue.push(Share(UNATTRIBUTED), Lane.HEAVY, f"u{n}")
    assert sorted(served(queue, Workers(shared=6))) == ["a0", "a1", "u0", "u1", "u2"]


def test_a_flooding_tenant_is_refused_once_over_its_share_never_the_others() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=4, tenant_cap=1)
    assert queue.fair_share("a") == 4  # alone, it may fill the queue
    for n in range(4):
        queue.check_room(A)
        queue.push(A, Lane.HEAVY, f"a{n}")
    with pytest.raises(QueueFull) as refused:
        queue.check_room(A)
    assert refused.value.reason == "share"
    # Another tenant arrives: the queue is split, and it is within its share however full.
    assert queue.fair_share("b") == 2
    queue.check_room(B)
    queue.push(B, Lane.HEAVY, "b0")
    queue.check_room(B)
    queue.push(B, Lane.HEAVY, "b1")
    with pytest.raises(QueueFull):
        queue.check_room(B)
    with pytest.raises(QueueFull):
        queue.check_room(A)
    # Many tenants: each still has room for one.
    for name in "cdefgh":
        queue.check_room(Share(name))
        queue.push(Share(name), Lane.HEAVY, name)
    assert queue.fair_share("z") == 1


def test_a_running_job_makes_its_tenant_active() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=6, tenant_cap=1)
    queue.started(A)
    assert queue.active_tenants() == 1
    assert queue.fair_share("b") == 3
    queue.finished(A)
    assert queue.active_tenants() == 0
    assert queue.fair_share("b") == 6


def test_the_plans_queue_cap_refuses_below_the_fair_share() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=16, tenant_cap=1)
    small = Share("a", max_running=1, max_waiting=2)
    for n in range(2):
        queue.check_room(small)
        queue.push(small, Lane.HEAVY, f"a{n}")
    with pytest.raises(QueueFull) as refused:
        queue.check_room(small)
    assert (refused.value.reason, refused.value.allowed) == ("plan", 2)


def test_a_queue_of_zero_lets_nothing_wait() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=0, tenant_cap=1)
    with pytest.raises(QueueFull):
        queue.check_room(A)


def test_light_jobs_take_reserved_workers_and_heavy_ones_spill_last() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=100, tenant_cap=1)
    queue.push(A, Lane.HEAVY, "a-heavy")
    queue.push(B, Lane.LIGHT, "b-light")
    # One reserved worker free, nothing shared: the light job has it although A came first.
    workers = Workers(reserved=1)
    assert served(queue, workers) == ["b-light"]
    # A's heavy job spills onto a reserved worker only when no light job wants one, and only
    # because A has nothing running.
    workers = Workers(reserved=1)
    assert served(queue, workers) == ["a-heavy"]
    assert workers.given == ["reserved"]
    queue.push(A, Lane.HEAVY, "a-again")
    assert served(queue, Workers(reserved=1)) == []  # A is running one already (and capped)


def test_a_heavy_job_does_not_spill_while_its_tenant_runs_another() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=100, tenant_cap=5)
    queue.started(A)
    queue.push(A, Lane.HEAVY, "a1")
    assert served(queue, Workers(reserved=1)) == []
    assert served(queue, Workers(shared=1)) == ["a1"]


def test_within_a_tenant_the_oldest_job_that_fits_goes_first() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=100, tenant_cap=5)
    queue.started(A)  # so its heavy jobs may not spill
    queue.push(A, Lane.HEAVY, "a-heavy")
    queue.push(A, Lane.LIGHT, "a-light")
    assert served(queue, Workers(reserved=1)) == ["a-light"]


def test_a_waiter_that_gave_up_leaves_no_trace() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=2, tenant_cap=1)
    ticket = queue.push(A, Lane.HEAVY, "a0")
    queue.push(B, Lane.HEAVY, "b0")
    assert queue.remove(ticket)
    assert not queue.remove(ticket)
    assert queue.waiting("a") == 0
    assert queue.active_tenants() == 1
    assert queue.fair_share("a") == 1
    # Items no longer live (their caller was cancelled) are dropped when met.
    gone = {"b0"}
    assert queue.pop_next(Workers(shared=1).place, lambda item: item not in gone) is None
    assert queue.waiting() == 0
    assert queue.active_tenants() == 0


def test_drain_empties_the_queue() -> None:
    queue: FairQueue[str] = FairQueue(max_queue=10, tenant_cap=1)
    queue.push(A, Lane.HEAVY, "a0")
    queue.push(B, Lane.LIGHT, "b0")
    queue.push(A, Lane.HEAVY, "a1")
    assert [ticket.item for ticket in queue.drain()] == ["a0", "a1", "b0"]
    assert queue.waiting() == 0


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        FairQueue(max_queue=-1, tenant_cap=1)
    with pytest.raises(ValueError, match="tenant_cap"):
        FairQueue(max_queue=1, tenant_cap=0)
