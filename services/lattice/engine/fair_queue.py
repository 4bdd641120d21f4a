"""Who runs next in the CPU pool: per-tenant queues taken in turn, running caps, queue shares.

Pure bookkeeping (no processes, no event loop), so that the scheduling rules are tested alone;
cpu_pool.py owns the workers and asks this module which waiting job a free worker should take.

- Each tenant has its own FIFO queue; tenants are served round robin, so a tenant that sends a
  hundred jobs gets one turn in each round like a tenant that sends one.
- A tenant runs at most `cap_of(share)` jobs at once: its plan's `max_running`, and never every
  worker of the pool (`tenant_cap`, all workers but one), so a worker is always left for the
  others. A job that names no tenant (`UNATTRIBUTED`: tests, benchmarks) has no cap.
- A tenant may keep at most its fair share of the queue waiting: `max_queue` split evenly among
  the tenants that have jobs running or waiting (itself included), at least one, and no more
  than its plan's `max_waiting`. A tenant within its share is never refused, however many jobs
  another tenant sends; one over it is refused at once (`QueueFull`).
- Lanes: LIGHT jobs may take the reserved workers; a HEAVY job takes one only when its tenant
  has nothing running and no light job wants it (`place(lane, spill=True)`), so a tenant's
  first job never waits behind another tenant's long searches even in a two-worker pool.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
W = TypeVar("W")

# The tenant of jobs that name none: one queue, no running cap (it is not someone's share).
UNATTRIBUTED = ""


class Lane(enum.Enum):
    """LIGHT jobs may use the reserved workers; HEAVY jobs the shared ones (see the docstring)."""

    LIGHT = "light"
    HEAVY = "heavy"


@dataclass(frozen=True)
class Share:
    """Whose a job is, and what their plan lets them hold of the pool at once."""

    tenant: str = UNATTRIBUTED
    max_running: int | None = None  # jobs on workers; None: the pool's own per-tenant cap
    max_waiting: int | None = None  # jobs waiting; None: only the fair share bounds it


class QueueFull(Exception):
    """The tenant has as many jobs waiting as it may; `reason` is a metrics label:
    `share` (its fair share of the queue) or `plan` (its plan's own queue cap)."""

    def __init__(self, reason: str, allowed: int) -> None:
        super().__init__(f"{reason}: {allowed} waiting allowed")
        self.reason = reason
        self.allowed = allowed


@dataclass(eq=False)
class Ticket(Generic[T]):
    """A waiting job: its share, its lane and what the pool hands a worker through (a future)."""

    share: Share
    lane: Lane
    item: T


class FairQueue(Generic[T]):
    """The waiting jobs of every tenant and the running count of each (see the module doc)."""

    def __init__(self, *, max_queue: int, tenant_cap: int) -> None:
        if max_queue < 0 or tenant_cap < 1:
            raise ValueError("max_queue must be >= 0 and tenant_cap >= 1")
        self.max_queue = max_queue
        self.tenant_cap = tenant_cap
        self._queues: dict[str, deque[Ticket[T]]] = {}
        # Tenants with waiting jobs in the order of their next turn (the head goes first).
        self._turns: deque[str] = deque()
        self._running: dict[str, int] = {}

    # What the pool reads

    def waiting(self, tenant: str | None = None) -> int:
        if tenant is not None:
            return len(self._queues.get(tenant, ()))
        return sum(len(queue) for queue in self._queues.values())

    def running(self, tenant: str) -> int:
        return self._running.get(tenant, 0)

    def active_tenants(self) -> int:
        """Tenants with jobs running or waiting."""
        return len(self._running.keys() | self._queues.keys())

    def cap_of(self, share: Share) -> int | None:
        """The most jobs `share`'s tenant may run at once; None: no cap."""
        if share.tenant == UNATTRIBUTED:
            return share.max_running
        if share.max_running is None:
            return self.tenant_cap
        return max(1, min(share.max_running, self.tenant_cap))

    def may_start(self, share: Share) -> bool:
        cap = self.cap_of(share)
        return cap is None or self.running(share.tenant) < cap

    def fair_share(self, tenant: str) -> int:
        """Jobs `tenant` may have waiting now: the queue split among the active tenants."""
        if self.max_queue == 0:
            return 0
        active = self.active_tenants()
        if tenant not in self._running and tenant not in self._queues:
            active += 1
        return max(1, self.max_queue // active)

    # What the pool does

    def check_room(self, share: Share) -> None:
        """QueueFull when `share`'s tenant may not queue one more job."""
        waiting = self.waiting(share.tenant)
        fair = self.fair_share(share.tenant)
        if share.max_waiting is not None and share.max_waiting < fair:
            if waiting >= share.max_waiting:
                raise QueueFull("plan", share.max_waiting)
        elif waiting >= fair:
            raise QueueFull("share", fair)

    def push(self, share: Share, lane: Lane, item: T) -> Ticket[T]:
        """Queues a job (check_room first); returns its ticket."""
        ticket = Ticket(share, lane, item)
        queue = self._queues.get(share.tenant)
        if queue is None:
            queue = self._queues[share.tenant] = deque()
            self._turns.append(share.tenant)
        queue.append(ticket)
        return ticket

    def remove(self, ticket: Ticket[T]) -> bool:
        """Takes a job out of the queue (its caller gave up); False if it was not there."""
        queue = self._queues.get(ticket.share.tenant)
        if queue is None or ticket not in queue:
            return False
        queue.remove(ticket)
        if not queue:
            self._forget_queue(ticket.share.tenant)
        return True

    def started(self, share: Share) -> None:
        """A job of `share` took a worker (straight away or from the queue)."""
        self._running[share.tenant] = self.running(share.tenant) + 1

    def finished(self, share: Share) -> None:
        """A job of `share` gave its worker back."""
        left = self.running(share.tenant) - 1
        if left > 0:
            self._running[share.tenant] = left
        else:
            self._running.pop(share.tenant, None)

    def pop_next(
        self, place: Callable[[Lane, bool], W | None], live: Callable[[T], bool] = lambda _: True
    ) -> tuple[Ticket[T], W] | None:
        """The next waiting job a free worker takes, and that worker; None when none can start.

        Tenants are tried in turn; within one, its oldest job that some free worker accepts.
        `place(lane, spill)` returns a free worker for the lane, or None; with `spill` a HEAVY
        job may have a reserved one. Spilling is tried only after no job fits otherwise, and
        only for tenants with nothing running. Jobs whose `item` is no longer `live` (their
        caller gave up) are dropped on the way. The job is marked started.
        """
        for spill in (False, True):
            for tenant in list(self._turns):
                if spill and self.running(tenant):
                    continue
                found = self._first_fit(tenant, place, live, spill)
                if found is not None:
                    ticket = found[0]
                    self.remove(ticket)
                    if tenant in self._queues:
                        # Served: its next job waits for everyone else's turn.
                        self._turns.remove(tenant)
                        self._turns.append(tenant)
                    self.started(ticket.share)
                    return found
        return None

    def drain(self) -> Iterator[Ticket[T]]:
        """Every waiting job, oldest tenant first; the queue is empty afterwards (shutdown)."""
        while self._turns:
            tenant = self._turns.popleft()
            yield from self._queues.pop(tenant, ())

    def _first_fit(
        self,
        tenant: str,
        place: Callable[[Lane, bool], W | None],
        live: Callable[[T], bool],
        spill: bool,
    ) -> tuple[Ticket[T], W] | None:
        for ticket in list(self._queues.get(tenant, ())):
            if not live(ticket.item):
                self.remove(ticket)
                continue
            if not self.may_start(ticket.share):
                return None
            worker = place(ticket.lane, spill)
            if worker is not None:
                return ticket, worker
        return None

    def _forget_queue(self, tenant: str) -> None:
        del self._queues[tenant]
        self._turns.remove(tenant)
