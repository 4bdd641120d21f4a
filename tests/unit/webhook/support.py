"""Test doubles for the webhook service: in-memory stores, fixed DNS, principals, tokens."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.common.context import Principal
from services.common.paging import Cursor
from services.webhook.deliveries import DeliveryRecord, Published, QueueRefusal
from services.webhook.endpoints import NewWebhook, WebhookRecord
from services.webhook.events import ALL_EVENTS, NewEvent
from services.webhook.policy import AttemptStatus
from services.webhook.ssrf import HostNotResolved
from tests.support.identity import owner as owner_principal

TENANT = str(uuid.uuid4())
OTHER_TENANT = str(uuid.uuid4())
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def principal(tenant_id: str = TENANT) -> Principal:
    return owner_principal(tenant_id)


class FixedResolver:
    """Answers from a table, recording the questions; an unknown name does not resolve."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise HostNotResolved("host does not resolve")
        return self.answers[host]


PUBLIC_RESOLVER = FixedResolver({"hooks.example.com": ["93.184.215.14"]})


@dataclass
class FakeStore:
    rows: dict[str, tuple[str, WebhookRecord, str]] = field(default_factory=dict)

    async def insert(self, tenant_id: str, webhook: NewWebhook) -> WebhookRecord:
        record = WebhookRecord(
            id=webhook.id,
            url=webhook.url,
            event_types=webhook.event_types,
            description=webhook.description,
            enabled=True,
            disabled_reason="",
            created_at=T0 + timedelta(seconds=len(self.rows)),
            ordered=webhook.ordered,
        )
        self.rows[webhook.id] = (tenant_id, record, webhook.secret)
        return record

    async def get(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        owner, record, _ = self.rows.get(webhook_id, (None, None, None))
        return record if owner == tenant_id else None

    async def list_webhooks(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[WebhookRecord]:
        mine = sorted(
            (record for owner, record, _ in self.rows.values() if owner == tenant_id),
            key=lambda r: (r.created_at, r.id),
            reverse=True,
        )
        if after is not None:
            mine = [r for r in mine if (r.created_at, r.id) < (after.created_at, after.id)]
        return mine[:limit]

    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        if await self.get(tenant_id, webhook_id) is None:
            return False
        del self.rows[webhook_id]
        return True

    async def rotate_secret(
        self, tenant_id: str, webhook_id: str, secret: str, overlap_s: float
    ) -> datetime | None:
        record = await self.get(tenant_id, webhook_id)
        if record is None:
            return None
        self.rows[webhook_id] = (tenant_id, record, secret)
        return T0 + timedelta(seconds=overlap_s)

    async def enable(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        record = await self.get(tenant_id, webhook_id)
        if record is None:
            return None
        record = dataclasses.replace(record, enabled=True, disabled_reason="")
        self.rows[webhook_id] = (tenant_id, record, self.rows[webhook_id][2])
        return record

    def disable(self, webhook_id: str, reason: str) -> None:
        tenant_id, record, secret = self.rows[webhook_id]
        record = dataclasses.replace(record, enabled=False, disabled_reason=reason)
        self.rows[webhook_id] = (tenant_id, record, secret)


@dataclass
class FakeDeliveryStore:
    """DeliveryStore over the endpoints of a FakeStore; every delivery stays queued."""

    webhooks: FakeStore
    tenants: set[str] = field(default_factory=lambda: {TENANT, OTHER_TENANT})
    events: dict[str, tuple[str, NewEvent]] = field(default_factory=dict)
    # (tenant, webhook id, record), oldest first.
    log: list[tuple[str, str, DeliveryRecord]] = field(default_factory=list)

    def _queue(self, tenant_id: str, webhook_id: str, event: NewEvent) -> DeliveryRecord:
        record = DeliveryRecord(
            id=str(uuid.uuid4()),
            event_id=event.id,
            event_type=event.type,
            status=AttemptStatus.PENDING,
            attempt=0,
            response_status=0,
            error="",
            next_attempt_at=T0,
            created_at=T0 + timedelta(seconds=len(self.log)),
            log_id=str(uuid.uuid4()),
        )
        self.log.append((tenant_id, webhook_id, record))
        return record

    async def publish(self, tenant_id: str, event: NewEvent, first_delay_s: float) -> Published:
        if tenant_id not in self.tenants:
            return Published(queued=0, tenant_found=False)
        if event.id in self.events:
            return Published(queued=0)
        self.events[event.id] = (tenant_id, event)
        queued = 0
        for owner, record, _ in list(self.webhooks.rows.values()):
            subscribed = {event.type, ALL_EVENTS} & set(record.event_types)
            if owner == tenant_id and record.enabled and subscribed:
                self._queue(tenant_id, record.id, event)
                queued += 1
        return Published(queued=queued)

    async def queue_to_endpoint(
        self,
        tenant_id: str,
        webhook_id: str,
        first_delay_s: float,
        *,
        event: NewEvent | None = None,
        delivery_id: str | None = None,
    ) -> DeliveryRecord | QueueRefusal:
        webhook = await self.webhooks.get(tenant_id, webhook_id)
        if webhook is None:
            return QueueRefusal.NO_WEBHOOK
        if event is None:
            found = [
                r for t, w, r in self.log if (t, w, r.id) == (tenant_id, webhook_id, delivery_id)
            ]
            if not found:
                return QueueRefusal.NO_DELIVERY
            event = self.events[found[0].event_id][1]
        if not webhook.enabled:
            return QueueRefusal.DISABLED
        self.events.setdefault(event.id, (tenant_id, event))
        return self._queue(tenant_id, webhook_id, event)

    async def list_log(
        self, tenant_id: str, webhook_id: str, *, limit: int, after: Cursor | None
    ) -> list[DeliveryRecord] | None:
        if await self.webhooks.get(tenant_id, webhook_id) is None:
            return None
        rows = [r for t, w, r in reversed(self.log) if (t, w) == (tenant_id, webhook_id)]
        if after is not None:
            rows = [r for r in rows if (r.created_at, r.log_id) < (after.created_at, after.id)]
        return rows[:limit]
