"""Retention against the real PostgreSQL: what goes, what stays, across tenants, in batches,
and the service's own periodic task with a shortened WEBHOOK_RETENTION_DAYS.

Rows are aged by moving their timestamps back as the schema owner; everything else runs as the
service does (the app role, row-level security, the retention policy of migration 0008).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as pb

from devstack import Stack
from services.common.db import Database
from services.webhook.delivery_store import PostgresDeliveryStore
from services.webhook.endpoints import NewWebhook, new_secret
from services.webhook.events import NewEvent
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome
from services.webhook.queue_store import PostgresDeliveryQueue
from services.webhook.retention import Pruned, Retention
from services.webhook.retention_store import PostgresRetention
from services.webhook.store import PostgresWebhookStore
from services.webhook.worker import Attempted, Job
from tests.e2e.helpers import Tenant, register_and_login
from tests.unit.webhook.harness import Scratch, shared_box, webhook_server
from tests.unit.webhook.receiver import Receiver, Reply, running_receiver

pytestmark = pytest.mark.integration

DAY_S = 86400.0
KEEP_S = 30 * DAY_S


async def endpoint(db: Database, scratch: Scratch, tenant_id: str, *types: str) -> str:
    scratch.add_tenant(tenant_id)
    webhook_id = str(uuid.uuid4())
    await PostgresWebhookStore(db, shared_box()).insert(
        tenant_id,
        NewWebhook(
            id=webhook_id,
            url="https://hooks.example.com/",
            event_types=types or ("lattice.created",),
            description="",
            secret=new_secret(),
        ),
    )
    return webhook_id


async def publish(
    db: Database, tenant_id: str, name: str, event_type: str = "lattice.created"
) -> str:
    event_id = f"evt_{name}_{uuid.uuid4().hex[:8]}"
    await PostgresDeliveryStore(db, shared_box()).publish(
        tenant_id, NewEvent(event_id, event_type, b"{}"), 0.0
    )
    return event_id


async def finish(db: Database, tenant_id: str, outcomes: dict[str, Outcome]) -> None:
    """Claims every due delivery and records the outcome given for its event (others wait)."""
    queue = PostgresDeliveryQueue(db, shared_box())
    jobs: list[Job] = await queue.claim(100, 30)
    attempts = [
        Attempted(
            job,
            AttemptResult(
                200 if outcomes[job.event_id].status is AttemptStatus.SUCCEEDED else 500, ""
            ),
            outcomes[job.event_id],
            datetime.now(UTC),
        )
        for job in jobs
        if job.event_id in outcomes
    ]
    await queue.record(tenant_id, attempts, 0)
    await queue.release([job.claim for job in jobs if job.event_id not in outcomes])


def age(scratch: Scratch, event_id: str, days: float, *, deliveries: bool = True) -> None:
    """Moves the event (and, unless told otherwise, its deliveries' last change) back."""
    scratch.query(
        "UPDATE webhook_events SET created_at = now() - make_interval(days => %s)"
        " WHERE id = %s RETURNING id",
        (days, event_id),
    )
    if deliveries:
        scratch.query(
            "UPDATE webhook_deliveries SET updated_at = now() - make_interval(days => %s),"
            " created_at = now() - make_interval(days => %s) WHERE event_id = %s RETURNING id",
            (days, days, event_id),
        )


def counts(scratch: Scratch, event_id: str) -> tuple[int, int, int]:
    """(events, deliveries, attempts) left of one event."""
    [row] = scratch.query(
        "SELECT (SELECT count(*) FROM webhook_events WHERE id = %s),"
        " (SELECT count(*) FROM webhook_deliveries WHERE event_id = %s),"
        " (SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d"
        "   ON d.id = a.delivery_id WHERE d.event_id = %s)",
        (event_id, event_id, event_id),
    )
    return (int(row[0]), int(row[1]), int(row[2]))


async def test_finished_history_goes_and_pending_work_stays(db: Database, scratch: Scratch) -> None:
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    await endpoint(db, scratch, tenant)
    await endpoint(db, scratch, other)
    await endpoint(db, scratch, tenant, "path.computed")
    succeeded = Outcome(AttemptStatus.SUCCEEDED)
    dead = Outcome(AttemptStatus.DEAD)
    retry = Outcome(AttemptStatus.FAILED, retry_in_s=3600)

    delivered = await publish(db, tenant, "delivered")
    dead_letter = await publish(db, tenant, "dead")
    waiting = await publish(db, tenant, "waiting")
    to_nobody = await publish(db, tenant, "nobody", "lattice.deleted")
    resent = await publish(db, tenant, "resent")
    recent = await publish(db, tenant, "recent")
    never_tried = await publish(db, tenant, "never")
    elsewhere = await publish(db, other, "elsewhere")
    await finish(
        db,
        tenant,
        {
            delivered: succeeded,
            dead_letter: dead,
            waiting: retry,
            resent: succeeded,
            recent: succeeded,
        },
    )
    await finish(db, other, {elsewhere: succeeded})
    for event_id in (delivered, dead_letter, waiting, to_nobody, never_tried, elsewhere):
        age(scratch, event_id, 40)
    # An old event whose delivery ended recently (a resend): the log keeps it, and its event.
    age(scratch, resent, 40, deliveries=False)
    before = {
        event_id: counts(scratch, event_id) for event_id in (waiting, never_tried, resent, recent)
    }

    pruned = await Retention(
        PostgresRetention(db), retention_s=KEEP_S, interval_s=60, batch=2
    ).prune_once()

    assert pruned == Pruned(deliveries=3, events=4)
    for gone in (delivered, dead_letter, to_nobody, elsewhere):
        assert counts(scratch, gone) == (0, 0, 0), gone
    # PENDING deliveries (failed and waiting for a retry, or never tried yet), recent history.
    for kept, rows in before.items():
        assert counts(scratch, kept) == rows, kept
    assert counts(scratch, waiting) == (1, 1, 2)
    # A second pass has nothing left to do.
    again = Retention(PostgresRetention(db), retention_s=KEEP_S, interval_s=60, batch=2)
    assert await again.prune_once() == Pruned()


async def test_replicas_pruning_at_once_share_the_work(db: Database, scratch: Scratch) -> None:
    tenant = str(uuid.uuid4())
    await endpoint(db, scratch, tenant)
    events = [await publish(db, tenant, str(n)) for n in range(30)]
    await finish(db, tenant, dict.fromkeys(events, Outcome(AttemptStatus.SUCCEEDED)))
    for event_id in events:
        age(scratch, event_id, 31)

    def replica() -> Retention:
        return Retention(PostgresRetention(db), retention_s=KEEP_S, interval_s=60, batch=7)

    results = await asyncio.gather(*(replica().prune_once() for _ in range(3)))
    # Rows one replica held were skipped by the others, not waited for: a later pass (the
    # next interval) finishes what all of them skipped.
    results.append(await replica().prune_once())

    assert sum(results, Pruned()) == Pruned(deliveries=30, events=30)
    assert sum(result.deliveries for result in results[:3]) > 0
    assert scratch.query("SELECT count(*) FROM webhook_attempts") == [(0,)]
    assert scratch.query("SELECT count(*) FROM webhook_events") == [(0,)]


async def test_the_retention_lookup_reads_only_events_and_writes_nothing(
    db: Database, scratch: Scratch
) -> None:
    tenant = str(uuid.uuid4())
    await endpoint(db, scratch, tenant)
    await publish(db, tenant, "x")
    async with db.lookup_transaction(webhook_retention="on") as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM webhook_events")
        assert await cur.fetchone() == {"n": 1}
        for table in ("webhooks", "webhook_deliveries", "webhook_attempts", "tenants"):
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            assert await cur.fetchone() == {"n": 0}, table
        cur = await conn.execute("DELETE FROM webhook_events")
        assert cur.rowcount == 0


# ---------------------------------------------------------------------------- the service's task
@pytest.fixture
def tenant(gateway: httpx.Client) -> Tenant:
    return register_and_login(gateway)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


async def test_the_service_prunes_by_itself_with_a_short_period(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/failing", Reply(500))
    async with webhook_server(
        stack,
        scratch,
        tenant,
        # About 2.6 seconds, looked at every 0.2 s; a failed attempt waits an hour.
        WEBHOOK_RETENTION_DAYS="0.00003",
        WEBHOOK_RETENTION_INTERVAL_S="0.2",
        WEBHOOK_RETRY_SCHEDULE_S="0,3600",
    ) as hub:
        good = await hub.create(receiver.url("/good"))
        failing = await hub.create(receiver.url("/failing"))
        await hub.publish(event_id="evt_retention_1")
        await hub.wait_for_log(
            good.webhook.id, lambda rows: any(row.status == pb.Delivery.SUCCEEDED for row in rows)
        )
        await hub.wait_for_log(
            failing.webhook.id, lambda rows: any(row.status == pb.Delivery.FAILED for row in rows)
        )

        # The delivered one disappears from the log; the one waiting for its retry does not.
        await hub.wait_for_log(good.webhook.id, lambda rows: rows == [], within=20)
        rows = await hub.log(failing.webhook.id)

    assert [row.status for row in rows] == [pb.Delivery.PENDING, pb.Delivery.FAILED]
    assert scratch.query("SELECT id FROM webhook_events") == [("evt_retention_1",)]
