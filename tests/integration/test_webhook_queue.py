"""The delivery queue in PostgreSQL: leases, concurrent claimers, order, and the worker's
narrow cross-tenant policy. Runs on a scratch copy of the schema (no worker of the stack's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import psycopg
import pytest

from services.common.db import Database
from services.webhook.delivery_store import PostgresDeliveryStore
from services.webhook.endpoints import NewWebhook, new_secret
from services.webhook.events import NewEvent, disabled_event
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome
from services.webhook.queue_store import PostgresDeliveryQueue
from services.webhook.store import PostgresWebhookStore
from services.webhook.worker import Attempted, Claim, Job, Recorded
from tests.unit.webhook.harness import Scratch, shared_box

pytestmark = pytest.mark.integration


def event(number: int, event_type: str = "lattice.created") -> NewEvent:
    return NewEvent(id=f"evt_{number}_{uuid.uuid4().hex[:8]}", type=event_type, body=b"{}")


async def endpoint(
    db: Database,
    scratch: Scratch,
    tenant_id: str,
    *,
    ordered: bool = False,
    types: tuple[str, ...] = ("*",),
) -> str:
    scratch.add_tenant(tenant_id)
    webhook_id = str(uuid.uuid4())
    await PostgresWebhookStore(db, shared_box()).insert(
        tenant_id,
        NewWebhook(
            id=webhook_id,
            url="https://hooks.example.com/",
            event_types=types,
            description="",
            secret=new_secret(),
            ordered=ordered,
        ),
    )
    return webhook_id


async def record(
    queue: PostgresDeliveryQueue,
    job: Job,
    result: AttemptResult,
    outcome: Outcome,
    disabled: NewEvent | None = None,
) -> Recorded:
    [recorded] = await queue.record(
        job.claim.tenant_id, [Attempted(job, result, outcome, datetime.now(UTC), disabled)], 0
    )
    return recorded


async def publish(db: Database, tenant_id: str, count: int) -> list[str]:
    store = PostgresDeliveryStore(db, shared_box())
    events = [event(number) for number in range(count)]
    for item in events:
        assert (await store.publish(tenant_id, item, 0.0)).queued >= 1
    return [item.id for item in events]


async def test_concurrent_claimers_never_share_a_delivery(db: Database, scratch: Scratch) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(3)]
    for tenant_id in tenants:
        await endpoint(db, scratch, tenant_id)
        await publish(db, tenant_id, 20)
    queue = PostgresDeliveryQueue(db, shared_box())

    claims: list[Claim] = []
    while True:
        batches = await asyncio.gather(*(queue.claim(7, 30) for _ in range(12)))
        if not any(batches):
            break
        claims += [job.claim for batch in batches for job in batch]

    claimed = [claim.delivery_id for claim in claims]
    assert len(claimed) == len(set(claimed)) == 60
    assert {claim.tenant_id for claim in claims} == set(tenants)


async def test_a_dead_workers_lease_runs_out_and_its_late_result_is_ignored(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    queue = PostgresDeliveryQueue(db, shared_box())
    [job] = await queue.claim(5, 0.5)
    first = job.claim
    assert await queue.claim(5, 0.5) == []

    await asyncio.sleep(0.6)
    [again] = await queue.claim(5, 30)
    second = again.claim

    assert second.delivery_id == first.delivery_id
    assert second.lease_token != first.lease_token
    late = await record(queue, job, AttemptResult(200, ""), Outcome(AttemptStatus.SUCCEEDED))
    assert not late.held
    [(status, attempt)] = scratch.query("SELECT status, attempt FROM webhook_deliveries")
    assert (status, attempt) == ("PENDING", 0)


async def test_renew_and_release(db: Database, scratch: Scratch) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 2)
    queue = PostgresDeliveryQueue(db, shared_box())
    claims = [job.claim for job in await queue.claim(5, 0.5)]
    assert len(claims) == 2

    await queue.renew(claims[:1], 30)
    await asyncio.sleep(0.6)
    [expired] = await queue.claim(5, 30)
    assert expired.claim.delivery_id == claims[1].delivery_id
    await queue.release([claims[0]])
    [released] = await queue.claim(5, 30)
    assert released.claim.delivery_id == claims[0].delivery_id


async def test_an_ordered_endpoint_offers_only_its_oldest_pending_delivery(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id, ordered=True)
    published = await publish(db, tenant_id, 3)
    queue = PostgresDeliveryQueue(db, shared_box())

    for event_id in published:
        [job] = await queue.claim(10, 30)
        assert job.event_id == event_id
        assert await queue.claim(10, 30) == [], "the next one waits for this one"
        await record(queue, job, AttemptResult(200, ""), Outcome(AttemptStatus.SUCCEEDED))


async def test_a_disabling_attempt_pauses_the_endpoint_and_tells_the_others(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    gone = await endpoint(db, scratch, tenant_id, ordered=True, types=("lattice.created",))
    watcher = await endpoint(db, scratch, tenant_id, types=("webhook.disabled",))
    await publish(db, tenant_id, 2)
    queue = PostgresDeliveryQueue(db, shared_box())
    [job] = await queue.claim(10, 30)
    notice = disabled_event(gone, job.url, "the endpoint answered 410 Gone", datetime.now(UTC))

    recorded = await record(
        queue,
        job,
        AttemptResult(410, "HTTP 410"),
        Outcome(
            AttemptStatus.DEAD, disable_reason="the endpoint answered 410 Gone", disable_kind="gone"
        ),
        notice,
    )

    assert recorded.held
    assert recorded.disabled
    rows = scratch.query(
        "SELECT d.webhook_id::text, e.type, d.status, d.paused FROM webhook_deliveries d"
        " JOIN webhook_events e ON e.id = d.event_id ORDER BY d.seq"
    )
    assert rows == [
        (gone, "lattice.created", "DEAD", False),
        (gone, "lattice.created", "PENDING", True),
        (watcher, "webhook.disabled", "PENDING", False),
    ]
    [(enabled, reason)] = scratch.query(
        "SELECT enabled, disabled_reason FROM webhooks WHERE id = %s", (gone,)
    )
    assert (enabled, reason) == (False, "the endpoint answered 410 Gone")
    # Only the notice is due; the paused delivery resumes once the endpoint is enabled.
    [due] = await queue.claim(10, 30)
    assert due.event_type == "webhook.disabled"
    await PostgresWebhookStore(db, shared_box()).enable(tenant_id, gone)
    [resumed] = await queue.claim(10, 30)
    assert resumed.webhook_id == gone


async def test_the_worker_lookup_reads_only_the_queue_and_writes_nothing(
    db: Database, scratch: Scratch
) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(2)]
    for tenant_id in tenants:
        await endpoint(db, scratch, tenant_id)
        await publish(db, tenant_id, 1)

    async with db.transaction() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM webhook_deliveries")
        assert await cur.fetchone() == {"n": 0}, "no context, no rows"
    async with db.lookup_transaction(delivery_worker="on") as conn:
        cur = await conn.execute("SELECT count(DISTINCT tenant_id) AS n FROM webhook_deliveries")
        assert await cur.fetchone() == {"n": 2}
        for table in ("webhooks", "webhook_events", "webhook_attempts", "tenants"):
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            assert await cur.fetchone() == {"n": 0}, table
        cur = await conn.execute("UPDATE webhook_deliveries SET locked_until = now()")
        assert cur.rowcount == 0
        cur = await conn.execute("DELETE FROM webhook_deliveries")
        assert cur.rowcount == 0
    async with db.lookup_transaction(delivery_worker="yes") as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM webhook_deliveries")
        assert await cur.fetchone() == {"n": 0}


async def test_a_delivery_keeps_its_identity(db: Database, scratch: Scratch) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    other = await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    for change in ("webhook_id = %s::uuid", "event_id = %s"):
        with pytest.raises(psycopg.errors.CheckViolation):
            async with db.tenant_transaction(tenant_id) as conn:
                await conn.execute(
                    f"UPDATE webhook_deliveries SET {change}",
                    (other if "webhook" in change else "evt_other",),
                )


async def test_stats_count_waiting_deliveries(db: Database, scratch: Scratch) -> None:
    queue = PostgresDeliveryQueue(db, shared_box())
    assert (await queue.stats()).depth == 0
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 3)
    await asyncio.sleep(0.05)

    stats = await queue.stats()

    assert stats.depth == 3
    assert 0 < stats.oldest_age_s < 30


async def test_claims_are_typed(db: Database, scratch: Scratch) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    [job] = await PostgresDeliveryQueue(db, shared_box()).claim(1, 30)
    claim = job.claim
    assert isinstance(claim, Claim)
    assert claim.tenant_id == tenant_id
    uuid.UUID(claim.delivery_id)
    uuid.UUID(claim.lease_token)


async def test_a_delivery_claimed_for_a_disabled_endpoint_waits_for_it(
    db: Database, scratch: Scratch
) -> None:
    """A delivery queued while its endpoint was being disabled is parked by the worker."""
    tenant_id = str(uuid.uuid4())
    webhook_id = await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    scratch.query("UPDATE webhooks SET enabled = false RETURNING id")
    queue = PostgresDeliveryQueue(db, shared_box())
    [job] = await queue.claim(5, 30)
    assert not job.enabled

    await queue.pause(job.claim)

    assert scratch.query("SELECT paused, lease_token FROM webhook_deliveries") == [(True, None)]
    assert await queue.claim(5, 30) == []
    await PostgresWebhookStore(db, shared_box()).enable(tenant_id, webhook_id)
    assert len(await queue.claim(5, 30)) == 1


async def test_defer_postpones_without_counting_an_attempt(db: Database, scratch: Scratch) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    queue = PostgresDeliveryQueue(db, shared_box())
    [job] = await queue.claim(5, 30)

    await queue.defer(job.claim, 0.3)

    assert await queue.claim(5, 30) == []
    await asyncio.sleep(0.35)
    [again] = await queue.claim(5, 30)
    assert again.claim.delivery_id == job.claim.delivery_id
    assert scratch.query("SELECT attempt FROM webhook_deliveries") == [(0,)]


class HandOver:
    """A stand-in for the local worker: promises `slots` and keeps what it is handed."""

    lease_s = 30.0

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.jobs: list[Job] = []
        self.returned = 0

    def reserve(self, wanted: int) -> int:
        granted = min(wanted, self.slots)
        self.slots -= granted
        return granted

    def hand_over(self, jobs: Sequence[Job], reserved: int) -> None:
        self.jobs += jobs
        self.returned += reserved


async def test_concurrent_publications_are_written_together_and_once(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    store = PostgresDeliveryStore(db, shared_box())
    events = [event(number) for number in range(20)]

    results = await asyncio.gather(
        *(store.publish(tenant_id, item, 0.0) for item in [*events, events[3], events[7]])
    )

    assert [result.queued for result in results] == [1] * 20 + [0, 0]
    assert all(result.tenant_found for result in results)
    [(deliveries, events_stored)] = scratch.query(
        "SELECT (SELECT count(*) FROM webhook_deliveries), (SELECT count(*) FROM webhook_events)"
    )
    assert (deliveries, events_stored) == (20, 20)
    # Publication order is the queue's order (what ordered endpoints rely on).
    order = [
        row[0] for row in scratch.query("SELECT event_id FROM webhook_deliveries ORDER BY seq")
    ]
    assert order == [item.id for item in events]
    missing = await store.publish(str(uuid.uuid4()), event(99), 0.0)
    assert (missing.queued, missing.tenant_found) == (0, False)


async def test_publication_leases_what_the_local_worker_has_room_for(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    plain = await endpoint(db, scratch, tenant_id)
    ordered = await endpoint(db, scratch, tenant_id, ordered=True)
    worker = HandOver(slots=3)
    store = PostgresDeliveryStore(db, shared_box(), worker=worker)
    published = [event(number) for number in range(4)]

    results = await asyncio.gather(*(store.publish(tenant_id, item, 0.0) for item in published))

    assert [result.queued for result in results] == [2, 2, 2, 2]
    assert sum(result.dispatched for result in results) == 3
    assert worker.returned == 3
    # The oldest deliveries to the unordered endpoint, never those of the ordered one.
    assert [job.event_id for job in worker.jobs] == [item.id for item in published[:3]]
    assert {job.webhook_id for job in worker.jobs} == {plain}
    job = worker.jobs[0]
    assert (job.body, job.event_type, job.attempts_made) == (
        published[0].body,
        "lattice.created",
        0,
    )
    assert job.url == "https://hooks.example.com/"
    assert job.secrets[0].startswith("whsec_")
    # Leased: not claimable; the rest is.
    queue = PostgresDeliveryQueue(db, shared_box())
    claimed = await queue.claim(10, 30)
    assert len(claimed) == 2
    assert {c.webhook_id for c in claimed} == {plain, ordered}
    # The handed-over deliveries are recorded like claimed ones.
    recorded = await record(queue, job, AttemptResult(200, ""), Outcome(AttemptStatus.SUCCEEDED))
    assert recorded.held
    # A delay before the first attempt means no lease at publication.
    later = await PostgresDeliveryStore(db, shared_box(), worker=HandOver(slots=10)).publish(
        tenant_id, event(50), 5.0
    )
    assert (later.queued, later.dispatched) == (2, 0)


async def test_a_batch_of_results_is_written_as_if_one_by_one(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    flaky = await endpoint(db, scratch, tenant_id)
    healthy = await endpoint(db, scratch, tenant_id, types=("path.computed",))
    await publish(db, tenant_id, 3)
    await PostgresDeliveryStore(db, shared_box()).publish(tenant_id, event(9, "path.computed"), 0.0)
    queue = PostgresDeliveryQueue(db, shared_box())
    jobs = await queue.claim(10, 30)
    to_flaky = [job for job in jobs if job.webhook_id == flaky]
    [to_healthy] = [job for job in jobs if job.webhook_id == healthy]
    lost = to_flaky[2]
    async with db.tenant_transaction(tenant_id) as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET lease_token = gen_random_uuid() WHERE id = %s",
            (lost.claim.delivery_id,),
        )
    now = datetime.now(UTC)
    ok, failed = AttemptResult(200, ""), AttemptResult(500, "HTTP 500")
    retry = Outcome(AttemptStatus.FAILED, retry_in_s=60)

    results = await queue.record(
        tenant_id,
        [
            Attempted(to_flaky[0], ok, Outcome(AttemptStatus.SUCCEEDED), now),
            Attempted(to_flaky[1], failed, retry, now),
            Attempted(lost, ok, Outcome(AttemptStatus.SUCCEEDED), now),
            Attempted(to_healthy, ok, Outcome(AttemptStatus.SUCCEEDED), now),
        ],
        0,
    )

    assert [result.held for result in results] == [True, True, False, True]
    states = dict(
        scratch.query("SELECT id::text, status || ':' || attempt FROM webhook_deliveries")
    )
    assert states[to_flaky[0].claim.delivery_id] == "SUCCEEDED:1"
    assert states[to_flaky[1].claim.delivery_id] == "PENDING:1"
    assert states[lost.claim.delivery_id] == "PENDING:0"
    log = scratch.query(
        "SELECT number, status FROM webhook_attempts WHERE delivery_id = %s ORDER BY number",
        (to_flaky[1].claim.delivery_id,),
    )
    assert log == [(1, "FAILED"), (2, "PENDING")]
    # The last written attempt to `flaky` failed after a success: its clock starts now.
    clocks = dict(scratch.query("SELECT id::text, failing_since IS NOT NULL FROM webhooks"))
    assert clocks == {flaky: True, healthy: False}
