"""Retention: delivery history older than WEBHOOK_RETENTION_DAYS is deleted, in batches.

What goes: deliveries that ended (SUCCEEDED or DEAD) longer ago than the period, with their
attempts (the log), and events older than the period that no delivery refers to any more
(those published to nobody, or whose deliveries have gone). What stays: every PENDING delivery,
in flight, waiting for a retry or paused behind a disabled endpoint, and its event and log,
whatever their age.

A pass walks the old events oldest first, a batch at a time, and prunes each batch tenant by
tenant (services/webhook/retention_store.py). Every replica runs the task; deletions skip rows
another transaction holds and are idempotent, so replicas running at once only share the work.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.background import BackgroundTask
from services.webhook import metrics

logger = logging.getLogger("catalytic.webhook.retention")

# Between batches of one pass: other work gets the database in between.
BATCH_PAUSE_S = 0.05
# Replicas started together drift apart: each wait is the interval times [1 - j, 1 + j].
INTERVAL_JITTER = 0.1


@dataclass(frozen=True)
class OldEvent:
    """An event older than the retention period (it may still have to stay)."""

    id: str
    tenant_id: str
    created_at: datetime


@dataclass(frozen=True)
class Pruned:
    """What was deleted."""

    deliveries: int = 0
    events: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.deliveries + other.deliveries, self.events + other.events)


class RetentionStore(Protocol):
    """The history as retention sees it (PostgreSQL in production)."""

    async def old_events(
        self, older_than_s: float, *, after: OldEvent | None, limit: int
    ) -> list[OldEvent]:
        """Up to `limit` events created more than `older_than_s` ago, oldest first, strictly
        after `after` in (created_at, id) order; any tenant's."""

    async def prune(self, tenant_id: str, event_ids: Sequence[str], older_than_s: float) -> Pruned:
        """In `tenant_id`'s transaction: deletes the deliveries of those events that ended
        more than `older_than_s` ago (their attempts with them), then those events that are
        that old and have no delivery left."""


class Retention:
    """The periodic task; see the module docstring."""

    def __init__(
        self, store: RetentionStore, *, retention_s: float, interval_s: float, batch: int
    ) -> None:
        if retention_s <= 0:
            raise ValueError("retention needs a period (0 keeps everything: run no task)")
        self._store = store
        self._retention_s = retention_s
        self._interval_s = interval_s
        self._batch = batch
        self._task = BackgroundTask("webhook-retention", self._run)

    async def prune_once(self) -> Pruned:
        """One pass over every event older than the period; what it deleted."""
        total = Pruned()
        after: OldEvent | None = None
        while True:
            events = await self._store.old_events(self._retention_s, after=after, limit=self._batch)
            by_tenant: dict[str, list[str]] = defaultdict(list)
            for event in events:
                by_tenant[event.tenant_id].append(event.id)
            for tenant_id, event_ids in by_tenant.items():
                pruned = await self._store.prune(tenant_id, event_ids, self._retention_s)
                metrics.RETENTION_DELETED.labels("deliveries").inc(pruned.deliveries)
                metrics.RETENTION_DELETED.labels("events").inc(pruned.events)
                total += pruned
            if len(events) < self._batch:
                return total
            after = events[-1]
            await asyncio.sleep(BATCH_PAUSE_S)

    def start(self) -> None:
        """Runs a pass now and then every interval, until stop()."""
        self._task.start()

    async def stop(self) -> None:
        """Cancels the task (a statement cut off rolls back; the next pass redoes it)."""
        await self._task.stop()

    async def _run(self) -> None:
        while True:
            try:
                pruned = await self.prune_once()
            except Exception:
                logger.exception("webhook retention pass failed; the next one retries")
            else:
                if pruned.deliveries or pruned.events:
                    logger.info(
                        "retention deleted %d deliveries and %d events older than %g days",
                        pruned.deliveries,
                        pruned.events,
                        self._retention_s / 86400,
                    )
            jitter = 1 + INTERVAL_JITTER * (2 * random.random() - 1)  # noqa: S311 (not crypto)
            await asyncio.sleep(self._interval_s * jitter)
