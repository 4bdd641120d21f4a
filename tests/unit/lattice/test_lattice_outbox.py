"""The outbox relay and its PublishEvent client, against an in-memory outbox and a recording
WebhookService on a real gRPC server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import grpc
import pytest

from services.common.grpc_client import insecure_channel
from services.common.internal_auth import InternalToken
from services.lattice.metrics import Backlog
from services.lattice.outbox import (
    OutboxRelay,
    PendingEvent,
    PublishError,
    RelaySettings,
    backoff_s,
)
from services.lattice.publisher import WebhookPublisher

from .fake_webhook import TOKEN, FakeWebhook

T0 = datetime(2026, 1, 1, tzinfo=UTC)


TENANT = str(uuid.uuid4())


def event(number: int = 0, tenant_id: str = TENANT) -> PendingEvent:
    return PendingEvent(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        type="lattice.created",
        data={"lattice_id": "x", "number": number, "nested": {"list": [1, 2.5, "a"]}},
        occurred_at=T0,
        attempts=0,
    )


@dataclass
class MemoryOutbox:
    """OutboxStore in memory. Time does not pass by itself: rows pushed back wait in `delays`
    until a test calls `make_all_due`."""

    rows: dict[str, PendingEvent] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    delays: dict[str, float] = field(default_factory=dict)
    claimed: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)
    emptied: asyncio.Event = field(default_factory=asyncio.Event)
    oldest_age_s: float = 0.0  # what backlog() reports while rows wait
    measured: int = 0
    was_measured: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, *events: PendingEvent) -> None:
        for item in events:
            self.rows[item.id] = item

    def make_all_due(self) -> None:
        self.claimed.clear()
        self.delays.clear()

    def _due(self, row_id: str) -> bool:
        return row_id not in self.claimed and row_id not in self.delays

    async def due_tenants(self, limit: int) -> list[str]:
        tenants = [row.tenant_id for row_id, row in self.rows.items() if self._due(row_id)]
        return list(dict.fromkeys(tenants))[:limit]

    async def claim(self, tenant_id: str, limit: int, lease_s: float) -> list[PendingEvent]:
        due = [
            row
            for row_id, row in self.rows.items()
            if row.tenant_id == tenant_id and self._due(row_id)
        ][:limit]
        self.claimed |= {row.id for row in due}
        return due

    async def delivered(self, tenant_id: str, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            assert self.rows.pop(event_id).tenant_id == tenant_id
            self.claimed.discard(event_id)
            self.sent.append(event_id)
        if not self.rows:
            self.emptied.set()

    async def backlog(self) -> Backlog:
        self.measured += 1
        self.was_measured.set()
        if not self.rows:
            return Backlog(0, 0.0)
        return Backlog(len(self.rows), self.oldest_age_s)

    async def retry_later(
        self,
        tenant_id: str,
        event_ids: Sequence[str],
        delay_s: float,
        *,
        error: str,
        count_attempt: bool,
    ) -> None:
        for event_id in event_ids:
            row = self.rows[event_id]
            assert row.tenant_id == tenant_id
            self.rows[event_id] = replace(row, attempts=row.attempts + int(count_attempt))
            self.delays[event_id] = delay_s
            self.errors[event_id] = error
            self.claimed.discard(event_id)


@pytest.fixture
async def webhook() -> AsyncIterator[FakeWebhook]:
    fake = FakeWebhook()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def publisher(webhook: FakeWebhook) -> AsyncIterator[WebhookPublisher]:
    channel = insecure_channel(f"127.0.0.1:{webhook.port}")
    yield WebhookPublisher(
        channel, InternalToken(TOKEN), timeout_s=2, initial_wait_s=0.01, max_wait_s=0.02
    )
    await channel.close()


async def test_publish_sends_the_event_with_the_internal_token(
    webhook: FakeWebhook, publisher: WebhookPublisher
) -> None:
    sent = event(7)
    await publisher.publish(sent)
    (got,) = webhook.published
    assert (got.event_id, got.tenant_id, got.event_type) == (sent.id, sent.tenant_id, sent.type)
    assert got.data == {"lattice_id": "x", "number": 7, "nested": {"list": [1, 2.5, "a"]}}


async def test_transient_failures_are_retried_with_tenacity(
    webhook: FakeWebhook, publisher: WebhookPublisher
) -> None:
    webhook.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    await publisher.publish(event())
    assert webhook.calls == 3
    assert len(webhook.published) == 1
    webhook.failures = [grpc.StatusCode.UNAVAILABLE] * 3
    with pytest.raises(PublishError) as caught:
        await publisher.publish(event())
    assert caught.value.code == "UNAVAILABLE"


async def test_permanent_failures_are_not_retried_at_once(webhook: FakeWebhook) -> None:
    channel = insecure_channel(f"127.0.0.1:{webhook.port}")
    try:
        wrong = WebhookPublisher(channel, InternalToken("x" * 40), timeout_s=2)
        with pytest.raises(PublishError) as caught:
            await wrong.publish(event())
        assert caught.value.code == "UNAUTHENTICATED"
        assert webhook.calls == 1
        missing = WebhookPublisher(channel, None, timeout_s=2)
        with pytest.raises(PublishError):
            await missing.publish(event())
    finally:
        await channel.close()


async def test_a_pass_publishes_each_tenants_events_in_order(
    webhook: FakeWebhook, publisher: WebhookPublisher
) -> None:
    outbox = MemoryOutbox()
    other = str(uuid.uuid4())
    events = [event(n, TENANT if n % 2 else other) for n in range(10)]
    outbox.add(*events)
    relay = OutboxRelay(outbox, publisher, RelaySettings(batch_size=3))
    assert await relay.relay_once() == (6, False)  # three of each tenant
    assert await relay.relay_once() == (4, False)
    assert await relay.relay_once() == (0, False)
    for tenant in (TENANT, other):
        mine = [item.id for item in events if item.tenant_id == tenant]
        assert [got.event_id for got in webhook.published if got.tenant_id == tenant] == mine
    assert outbox.rows == {}
    assert sorted(outbox.sent) == sorted(item.id for item in events)


async def test_a_failure_puts_the_rest_of_the_tenants_batch_back(
    webhook: FakeWebhook, publisher: WebhookPublisher
) -> None:
    outbox = MemoryOutbox()
    events = [event(n) for n in range(4)]
    outbox.add(*events)
    relay = OutboxRelay(outbox, publisher, RelaySettings(base_backoff_s=1, max_backoff_s=8))
    webhook.failures = [grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED]
    assert await relay.relay_once() == (1, True)
    assert outbox.sent == [events[0].id]  # accepted: marked sent, never sent again
    assert outbox.rows[events[1].id].attempts == 1  # tried and failed
    assert "UNIMPLEMENTED" in outbox.errors[events[1].id]
    assert outbox.rows[events[2].id].attempts == 0  # not tried
    assert set(outbox.delays) == {events[1].id, events[2].id, events[3].id}
    assert 0.5 <= outbox.delays[events[1].id] <= 1
    outbox.make_all_due()
    assert await relay.relay_once() == (3, False)
    assert outbox.rows == {}
    assert webhook.counts() == {item.id: 1 for item in events}


async def test_one_tenants_refused_event_does_not_hold_up_the_others(
    webhook: FakeWebhook, publisher: WebhookPublisher
) -> None:
    outbox = MemoryOutbox()
    stuck, free = event(0), event(1, str(uuid.uuid4()))
    outbox.add(stuck, free)
    webhook.failures = [grpc.StatusCode.INVALID_ARGUMENT]
    relay = OutboxRelay(outbox, publisher, RelaySettings())
    assert await relay.relay_once() == (1, True)
    assert outbox.sent == [free.id]
    # ... but when the webhook service is down, the pass stops at the first failure.
    outbox.make_all_due()
    outbox.add(event(2, str(uuid.uuid4())))
    webhook.failures = [grpc.StatusCode.UNAVAILABLE] * 3
    assert await relay.relay_once() == (0, True)
    assert webhook.calls == 2 + 3


def test_backoff_doubles_up_to_the_cap() -> None:
    for attempts, ceiling in ((1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (100, 60)):
        for _ in range(20):
            assert ceiling / 2 <= backoff_s(attempts, 1.0, 60.0) <= ceiling


async def test_the_relay_runs_until_closed_and_wakes_on_demand(
    webhook: FakeWebhook, publisher: WebhookPublisher
) -> None:
    outbox = MemoryOutbox()
    relay = OutboxRelay(outbox, publisher, RelaySettings(poll_interval_s=30))
    relay.start()
    try:
        await asyncio.sleep(0.05)
        outbox.add(event(1))
        relay.wake()
        await asyncio.wait_for(outbox.emptied.wait(), 5)
        assert len(webhook.published) == 1
    finally:
        await relay.close()
    await relay.close()
