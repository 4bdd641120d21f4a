"""Publishing events, test events, resends and the delivery log: no gRPC, no SQL."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from services.common import paging
from services.common.context import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.paging import Cursor
from services.webhook.endpoints import WEBHOOK_NOT_FOUND, parse_id
from services.webhook.events import (
    NewEvent,
    build_event,
    check_tenant_id,
    webhook_test_event,
)
from services.webhook.policy import AttemptStatus, RetryPolicy

DELIVERY_NOT_FOUND = "delivery not found"
ENDPOINT_DISABLED = "the endpoint is disabled; enable it first"


@dataclass(frozen=True)
class DeliveryRecord:
    """One row of an endpoint's delivery log (an attempt, or the next one while queued)."""

    id: str  # the delivery's id, shared by all its rows
    event_id: str
    event_type: str
    status: AttemptStatus
    # Attempts made so far: this row's number once made, one less while PENDING.
    attempt: int
    response_status: int
    error: str
    next_attempt_at: datetime | None
    created_at: datetime
    response_body: str = ""
    attempted_at: datetime | None = None
    # The row's own id: with created_at, the position a page token points at.
    log_id: str = ""


@dataclass(frozen=True)
class DeliveryPage:
    """One page of the log, newest first."""

    deliveries: list[DeliveryRecord]
    next_page_token: str


class QueueRefusal(StrEnum):
    """Why nothing was queued to one endpoint."""

    NO_WEBHOOK = "no_webhook"
    NO_DELIVERY = "no_delivery"
    DISABLED = "disabled"


@dataclass(frozen=True)
class Published:
    """What PublishEvent did."""

    queued: int
    # False when the tenant does not exist.
    tenant_found: bool = True
    # Of the queued deliveries, those already handed to the local worker (leased to it).
    dispatched: int = 0


class DeliveryStore(Protocol):
    """Persistence of events, deliveries and the log, for the API (PostgreSQL in production)."""

    async def publish(self, tenant_id: str, event: NewEvent, first_delay_s: float) -> Published:
        """Stores the event and queues it to the tenant's enabled endpoints that subscribe to its
        type; queues nothing when an event with that id exists already."""

    async def queue_to_endpoint(
        self,
        tenant_id: str,
        webhook_id: str,
        first_delay_s: float,
        *,
        event: NewEvent | None = None,
        delivery_id: str | None = None,
    ) -> DeliveryRecord | QueueRefusal:
        """Queues `event` (stored first) or, given `delivery_id`, that delivery's event again,
        to this one endpoint whatever its event types; the new log row, or why not."""

    async def list_log(
        self, tenant_id: str, webhook_id: str, *, limit: int, after: Cursor | None
    ) -> list[DeliveryRecord] | None:
        """Up to `limit` log rows, newest first, strictly after `after`; None when the
        endpoint does not exist."""


def _refusal_error(refusal: QueueRefusal) -> Exception:
    if refusal is QueueRefusal.NO_WEBHOOK:
        return NotFound(WEBHOOK_NOT_FOUND)
    if refusal is QueueRefusal.NO_DELIVERY:
        return NotFound(DELIVERY_NOT_FOUND)
    return FailedPrecondition(ENDPOINT_DISABLED)


def parse_delivery_id(value: str) -> str:
    """The canonical form of a delivery id, or InvalidArgument(delivery_id)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("delivery_id", "is not a valid delivery id") from None


class Deliveries:
    """Use cases that queue deliveries or read their log; the worker sends them."""

    def __init__(
        self,
        store: DeliveryStore,
        policy: RetryPolicy,
        *,
        wake: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        unwanted: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._policy = policy
        # Told of a tenant whose event no endpoint took, so that the event writers learn what
        # the tenant subscribes to (services.common.subscriptions).
        self._unwanted = unwanted
        # Tells the delivery worker that new deliveries are due.
        self._wake = wake
        self._clock = clock

    async def publish(
        self,
        *,
        event_id: str,
        tenant_id: str,
        event_type: str,
        data: Mapping[str, object],
        occurred_at: datetime | None,
    ) -> int:
        """Queues the event to every subscribed endpoint; 0 when it was published before.

        The caller is a trusted service (internal RPC), so `tenant_id` comes from the request.
        """
        tenant_id = check_tenant_id(tenant_id)
        event = build_event(event_id, event_type, occurred_at or self._clock(), data)
        published = await self._store.publish(tenant_id, event, self._policy.first_delay_s())
        if not published.tenant_found:
            raise NotFound("tenant not found")
        if published.queued == 0 and self._unwanted is not None:
            await self._unwanted(tenant_id)
        if published.queued > published.dispatched:
            self._wake()
        return published.queued

    async def test(self, principal: Principal, webhook_id: str) -> DeliveryRecord:
        """Queues a `webhook.test` event to this endpoint only; returns the queued delivery."""
        webhook_id = parse_id(webhook_id)
        event = webhook_test_event(webhook_id, self._clock())
        queued = await self._store.queue_to_endpoint(
            principal.tenant_id, webhook_id, self._policy.first_delay_s(), event=event
        )
        return self._queued(queued)

    async def resend(
        self, principal: Principal, webhook_id: str, delivery_id: str
    ) -> DeliveryRecord:
        """Queues a new delivery of that delivery's event (same event id, so the same
        `webhook-id`) to the same endpoint."""
        webhook_id = parse_id(webhook_id)
        delivery_id = parse_delivery_id(delivery_id)
        queued = await self._store.queue_to_endpoint(
            principal.tenant_id,
            webhook_id,
            self._policy.first_delay_s(),
            delivery_id=delivery_id,
        )
        return self._queued(queued)

    def _queued(self, queued: DeliveryRecord | QueueRefusal) -> DeliveryRecord:
        if isinstance(queued, QueueRefusal):
            raise _refusal_error(queued)
        self._wake()
        return queued

    async def list_page(
        self, principal: Principal, webhook_id: str, *, page_size: int, page_token: str
    ) -> DeliveryPage:
        """One page of the endpoint's log, newest first, and the next page's token."""
        webhook_id = parse_id(webhook_id)
        limit = paging.page_size(page_size)
        after = paging.decode_page_token(page_token)
        rows = await self._store.list_log(
            principal.tenant_id, webhook_id, limit=limit + 1, after=after
        )
        if rows is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        page, more = rows[:limit], len(rows) > limit
        token = (
            paging.encode_page_token(Cursor(page[-1].created_at, page[-1].log_id)) if more else ""
        )
        return DeliveryPage(deliveries=page, next_page_token=token)
