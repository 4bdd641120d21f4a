"""The delivery queue in PostgreSQL: leases, concurrent claimers, order, and the worker's
narrow cross-tenant policy. Runs on a scratch copy of the schema (no worker of the stack's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from devstack import Stack
from services.common.db import Database, open_pool
from services.webhook.delivery_store import PostgresDeliveryStore
from services.webhook.endpoints import NewWebhook, new_secret
from services.webhook.events import NewEvent, disabled_event
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome
from services.webhook.queue_store import PostgresDeliveryQueue
from services.webhook.store import PostgresWebhookStore
from services.webhook.worker import Claim
from tests.unit.webhook.harness import Scratch, migrated_template, scratch_copy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def template(stack: Stack) -> Iterator[str]:
    with migrated_template(stack) as name:
        yield name


@pytest.fixture
def scratch(stack: Stack, template: str) -> Iterator[Scratch]:
    with scratch_copy(stack, template) as database:
        yield database


@pytest.fixture
async def db(scratch: Scratch) -> AsyncIterator[Database]:
    pool = await open_pool(scratch.app_url, min_size=1, max_size=8, name="queue-test")
    try:
        yield Database(pool)
    finally:
        await pool.close()


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
    await PostgresWebhookStore(db).insert(
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


async def publish(db: Database, tenant_id: str, count: int) -> list[str]:
    store = PostgresDeliveryStore(db)
    events = [event(number) for number in range(count)]
    for item in events:
        assert (await store.publish(tenant_id, item, 0.0)).queued >= 1
    return [item.id for item in events]


async def test_concurrent_claimers_never_share_a_delivery(db: Database, scratch: Scratch) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(3)]
    for tenant_id in tenants:
        await endpoint(db, scratch, tenant_id)
        await publish(db, tenant_id, 20)
    queue = PostgresDeliveryQueue(db)

    claims: list[Claim] = []
    while True:
        batches = await asyncio.gather(*(queue.claim(7, 30) for _ in range(12)))
        if not any(batches):
            break
        claims += [claim for batch in batches for claim in batch]

    claimed = [claim.delivery_id for claim in claims]
    assert len(claimed) == len(set(claimed)) == 60
    assert {claim.tenant_id for claim in claims} == set(tenants)


async def test_a_dead_workers_lease_runs_out_and_its_late_result_is_ignored(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    queue = PostgresDeliveryQueue(db)
    [first] = await queue.claim(5, 0.5)
    assert await queue.claim(5, 0.5) == []
    job = await queue.load(first)
    assert job is not None

    await asyncio.sleep(0.6)
    [second] = await queue.claim(5, 30)

    assert second.delivery_id == first.delivery_id
    assert second.lease_token != first.lease_token
    assert await queue.load(first) is None
    late = await queue.record(
        job, AttemptResult(200, ""), Outcome(AttemptStatus.SUCCEEDED), datetime.now(UTC), None, 0
    )
    assert not late.held
    [(status, attempt)] = scratch.query("SELECT status, attempt FROM webhook_deliveries")
    assert (status, attempt) == ("PENDING", 0)


async def test_renew_and_release(db: Database, scratch: Scratch) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 2)
    queue = PostgresDeliveryQueue(db)
    claims = await queue.claim(5, 0.5)
    assert len(claims) == 2

    await queue.renew(claims[:1], 30)
    await asyncio.sleep(0.6)
    [expired] = await queue.claim(5, 30)
    assert expired.delivery_id == claims[1].delivery_id
    await queue.release([claims[0]])
    [released] = await queue.claim(5, 30)
    assert released.delivery_id == claims[0].delivery_id


async def test_an_ordered_endpoint_offers_only_its_oldest_pending_delivery(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id, ordered=True)
    published = await publish(db, tenant_id, 3)
    queue = PostgresDeliveryQueue(db)

    for event_id in published:
        [claim] = await queue.claim(10, 30)
        job = await queue.load(claim)
        assert job is not None
        assert job.event_id == event_id
        assert await queue.claim(10, 30) == [], "the next one waits for this one"
        await queue.record(
            job,
            AttemptResult(200, ""),
            Outcome(AttemptStatus.SUCCEEDED),
            datetime.now(UTC),
            None,
            0,
        )


async def test_a_disabling_attempt_pauses_the_endpoint_and_tells_the_others(
    db: Database, scratch: Scratch
) -> None:
    tenant_id = str(uuid.uuid4())
    gone = await endpoint(db, scratch, tenant_id, ordered=True, types=("lattice.created",))
    watcher = await endpoint(db, scratch, tenant_id, types=("webhook.disabled",))
    await publish(db, tenant_id, 2)
    queue = PostgresDeliveryQueue(db)
    [claim] = await queue.claim(10, 30)
    job = await queue.load(claim)
    assert job is not None
    notice = disabled_event(gone, job.url, "the endpoint answered 410 Gone", datetime.now(UTC))

    recorded = await queue.record(
        job,
        AttemptResult(410, "HTTP 410"),
        Outcome(
            AttemptStatus.DEAD, disable_reason="the endpoint answered 410 Gone", disable_kind="gone"
        ),
        datetime.now(UTC),
        notice,
        0,
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
    assert (await queue.load(due)).event_type == "webhook.disabled"  # type: ignore[union-attr]
    await PostgresWebhookStore(db).enable(tenant_id, gone)
    [resumed] = await queue.claim(10, 30)
    assert (await queue.load(resumed)).webhook_id == gone  # type: ignore[union-attr]


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
    queue = PostgresDeliveryQueue(db)
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
    [claim] = await PostgresDeliveryQueue(db).claim(1, 30)
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
    queue = PostgresDeliveryQueue(db)
    [claim] = await queue.claim(5, 30)
    job = await queue.load(claim)
    assert job is not None
    assert not job.enabled

    await queue.pause(claim)

    assert scratch.query("SELECT paused, lease_token FROM webhook_deliveries") == [(True, None)]
    assert await queue.claim(5, 30) == []
    await PostgresWebhookStore(db).enable(tenant_id, webhook_id)
    assert len(await queue.claim(5, 30)) == 1


async def test_defer_postpones_without_counting_an_attempt(db: Database, scratch: Scratch) -> None:
    tenant_id = str(uuid.uuid4())
    await endpoint(db, scratch, tenant_id)
    await publish(db, tenant_id, 1)
    queue = PostgresDeliveryQueue(db)
    [claim] = await queue.claim(5, 30)

    await queue.defer(claim, 0.3)

    assert await queue.claim(5, 30) == []
    await asyncio.sleep(0.35)
    [again] = await queue.claim(5, 30)
    assert again.delivery_id == claim.delivery_id
    assert scratch.query("SELECT attempt FROM webhook_deliveries") == [(0,)]
