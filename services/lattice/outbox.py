"""The outbox relay: a background task that hands queued events to the webhook service.

Events are written to `lattice_outbox` in the transaction of the change they announce (or, for
computations that change nothing, in their own), so a committed change always has its event.
Each pass the relay finds the tenants with events due (its one cross-tenant read), and for each
tenant, inside that tenant's own transaction, claims the due rows for a lease, publishes them in
order (PublishEvent is idempotent on the event id, which is the row id), marks the accepted ones
sent and pushes the rest back with exponential backoff. While the webhook service is down
nothing is lost: rows wait, and the relay retries them at most `max_backoff_s` apart until it
answers.

Each tenant's events are published in the order they were written: a row is not claimed while
an older row of its tenant waits for a retry or is held by a relay, and claims of one tenant
take turns. So the webhook service's ordered endpoints see lattice events in the order they
happened; the price is that an event the webhook service keeps refusing holds back its tenant's
later ones (visible in catalytic_lattice_outbox_publish_failures_total and the relay's warnings).

Several replicas relay at once without sending an event twice in the normal case: claimed rows
are pushed out by the lease. A relay that dies mid-batch leaves its rows to be claimed again
when the lease ends, and the event id makes that resend harmless.

Beside the passes, the relay measures the backlog (unpublished events, the oldest one's age)
every `stats_interval_s` with one indexed query, for the metrics; `backlog()` answers a scrape
from that measurement without touching the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.common.background import BackgroundTask
from services.lattice import metrics
from services.lattice.metrics import Backlog

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingEvent:
    """An outbox row claimed for publishing."""

    id: str
    tenant_id: str
    type: str
    data: dict[str, Any]
    occurred_at: datetime
    attempts: int  # failed attempts before this one


class PublishError(Exception):
    """PublishEvent failed (after the publisher's own quick retries); `code` is the gRPC code
    name, a metrics label. `transient`: the webhook service is down or overloaded, so other
    tenants' events would fail too."""

    def __init__(self, code: str, detail: str, *, transient: bool) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.transient = transient


class EventPublisher(Protocol):
    """Where events go: the webhook service's PublishEvent in production."""

    async def publish(self, event: PendingEvent) -> None:
        """Returns once the event is accepted; PublishError otherwise."""


class OutboxStore(Protocol):
    """The outbox table: found across tenants, worked on inside each tenant's transaction."""

    async def due_tenants(self, limit: int) -> list[str]:
        """Up to `limit` tenants with events due, the one waiting longest first."""

    async def claim(self, tenant_id: str, limit: int, lease_s: float) -> list[PendingEvent]:
        """Up to `limit` of the tenant's due events, oldest first, held for `lease_s`."""

    async def delivered(self, tenant_id: str, event_ids: Sequence[str]) -> None:
        """Marks events the webhook service accepted as sent (and prunes old sent ones)."""

    async def retry_later(
        self,
        tenant_id: str,
        event_ids: Sequence[str],
        delay_s: float,
        *,
        error: str,
        count_attempt: bool,
    ) -> None:
        """Makes events due again after `delay_s`; `count_attempt` when they were tried."""

    async def backlog(self) -> Backlog:
        """Unpublished events and the oldest one's age, across tenants (cheap: no scan of
        the events already sent)."""


@dataclass(frozen=True)
class RelaySettings:
    poll_interval_s: float = 1.0
    batch_size: int = 100
    tenants_per_pass: int = 100
    lease_s: float = 60.0
    base_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    stats_interval_s: float = 10.0


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Full-jitter exponential backoff after `attempts` failures (>= 1), at most `max_s`."""
    ceiling = min(max_s, base_s * 2 ** min(attempts - 1, 30))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


class OutboxRelay:
    """Publishes outbox rows until closed; `wake()` after a commit skips the poll wait."""

    def __init__(
        self, store: OutboxStore, publisher: EventPublisher, settings: RelaySettings
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings
        self._wake = asyncio.Event()
        self._task = BackgroundTask("lattice-outbox-relay", self._run)
        self._stats_task = BackgroundTask("lattice-outbox-stats", self._measure)
        # The last measurement and when it was taken (time.monotonic()); None before the first.
        self._measured: tuple[Backlog, float] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task.start()
        self._stats_task.start()

    async def close(self) -> None:
        await self._stats_task.stop()
        await self._task.stop()

    def backlog(self) -> Backlog | None:
        """The last measured backlog, its oldest event aged by the time since (so a stuck
        event's age keeps growing between measurements); None before the first. Reads only."""
        measured = self._measured
        if measured is None:
            return None
        backlog, at = measured
        if backlog.pending == 0:
            return backlog
        return Backlog(backlog.pending, backlog.oldest_age_s + (time.monotonic() - at))

    async def _measure(self) -> None:
        failing = False
        while True:
            try:
                backlog = await self._store.backlog()
            except Exception:
                # The database is down, most likely; the last measurement stands (and ages).
                if not failing:
                    logger.warning("measuring the outbox backlog failed", exc_info=True)
                failing = True
            else:
                self._measured = (backlog, time.monotonic())
                failing = False
            await asyncio.sleep(self._settings.stats_interval_s)

    async def _run(self) -> None:
        settings = self._settings
        idle_s = settings.poll_interval_s
        while True:
            self._wake.clear()
            try:
                published, failed = await self.relay_once()
                idle_s = settings.poll_interval_s
            except Exception:
                # The database is down, most likely: wait longer each time, up to the cap.
                logger.exception("outbox relay pass failed")
                published, failed = 0, True
                idle_s = min(settings.max_backoff_s, idle_s * 2)
            if published and not failed:
                continue  # more may be due already
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), idle_s)

    async def relay_once(self) -> tuple[int, bool]:
        """One pass over the tenants with events due. Returns (events published, whether a
        publish failed). A failure that means the webhook service is down ends the pass."""
        settings = self._settings
        published, failed = 0, False
        for tenant_id in await self._store.due_tenants(settings.tenants_per_pass):
            batch = await self._store.claim(tenant_id, settings.batch_size, settings.lease_s)
            done, failure = await self._publish(tenant_id, batch)
            published += done
            if failure is not None:
                failed = True
                if failure.transient:
                    break
        return published, failed

    async def _publish(
        self, tenant_id: str, batch: list[PendingEvent]
    ) -> tuple[int, PublishError | None]:
        """Publishes one tenant's batch in order; after a failure the rest of it is put back
        untried, to keep the tenant's order."""
        settings = self._settings
        done: list[str] = []
        try:
            for index, event in enumerate(batch):
                try:
                    await self._publisher.publish(event)
                except PublishError as exc:
                    metrics.OUTBOX_FAILURES.labels(exc.code).inc()
                    logger.warning(
                        "PublishEvent failed for event %s (%s), attempt %d: %s",
                        event.id,
                        event.type,
                        event.attempts + 1,
                        exc,
                    )
                    delay = backoff_s(
                        event.attempts + 1, settings.base_backoff_s, settings.max_backoff_s
                    )
                    await self._store.retry_later(
                        tenant_id, [event.id], delay, error=str(exc)[:500], count_attempt=True
                    )
                    rest = [later.id for later in batch[index + 1 :]]
                    if rest:
                        await self._store.retry_later(
                            tenant_id,
                            rest,
                            delay,
                            error="not tried: an earlier event of the tenant failed",
                            count_attempt=False,
                        )
                    return len(done), exc
                done.append(event.id)
                metrics.OUTBOX_PUBLISHED.inc()
            return len(done), None
        finally:
            # Even when cancelled (shutdown) mid-batch: accepted events must not be sent again.
            if done:
                await asyncio.shield(self._store.delivered(tenant_id, done))
