"""Registering, reading, listing, deleting, enabling and re-keying endpoints: no gRPC, no SQL."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.common import paging
from services.common.context import Principal
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import Cursor
from services.webhook.destinations import check_destination
from services.webhook.events import ALL_EVENTS, EVENT_TYPES
from services.webhook.signing import SECRET_PREFIX
from services.webhook.ssrf import IPNetwork, Resolver

# Far more than the distinct valid values: only stops a huge list from being echoed back.
MAX_EVENT_TYPES = 32
MAX_DESCRIPTION_LENGTH = 500
SECRET_BYTES = 32
WEBHOOK_NOT_FOUND = "webhook not found"


@dataclass(frozen=True)
class WebhookRecord:
    """An endpoint as stored, without its secret."""

    id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str
    created_at: datetime
    ordered: bool = False


@dataclass(frozen=True)
class NewWebhook:
    """A validated endpoint about to be inserted."""

    id: str
    url: str
    event_types: tuple[str, ...]
    description: str
    secret: str = field(repr=False)
    ordered: bool = False


@dataclass(frozen=True)
class RotatedSecret:
    """A new secret, and until when the one it replaces keeps signing too."""

    secret: str = field(repr=False)
    previous_expires_at: datetime | None = None


class WebhookStore(Protocol):
    """Persistence the webhook domain needs (PostgreSQL in production)."""

    async def insert(self, tenant_id: str, webhook: NewWebhook) -> WebhookRecord:
        """Inserts an enabled endpoint with its secret."""

    async def get(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        """The endpoint, if it exists in that tenant."""

    async def list_webhooks(
        self, tenant_id: str, *, limit: int, after: Cursor | None
    ) -> list[WebhookRecord]:
        """Up to `limit` endpoints newest first, starting strictly after `after`."""

    async def delete(self, tenant_id: str, webhook_id: str) -> bool:
        """Deletes the endpoint (its deliveries and log with it); False when there was none."""

    async def rotate_secret(
        self, tenant_id: str, webhook_id: str, secret: str, overlap_s: float
    ) -> datetime | None:
        """Makes `secret` current and the current one previous for `overlap_s`; returns the
        previous one's expiry, or None when there is no such endpoint."""

    async def enable(self, tenant_id: str, webhook_id: str) -> WebhookRecord | None:
        """Enables the endpoint and resumes its paused deliveries; None when there is none."""


@dataclass(frozen=True)
class WebhookPage:
    """One page of a listing."""

    webhooks: list[WebhookRecord]
    next_page_token: str


def normalise_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    """The event types, checked and de-duplicated in order; InvalidArgument names each bad one."""
    if not event_types:
        raise InvalidArgument("event_types", "at least one event type is required")
    if len(event_types) > MAX_EVENT_TYPES:
        raise InvalidArgument("event_types", f"must have at most {MAX_EVENT_TYPES} entries")
    expected = ", ".join(sorted(EVENT_TYPES))
    violations = [
        (f"event_types[{index}]", f"unknown event type {value!r}; use '*' or one of {expected}")
        for index, value in enumerate(event_types)
        if value != ALL_EVENTS and value not in EVENT_TYPES
    ]
    if violations:
        raise InvalidArgument.of(violations)
    return tuple(dict.fromkeys(event_types))


def check_description(description: str) -> str:
    """The description, or InvalidArgument(description) when it is too long."""
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument("description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
    return description


def new_secret() -> str:
    """A signing secret: `whsec_` and standard base64 of 32 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def parse_id(value: str) -> str:
    """The canonical form of a UUID, or InvalidArgument(id)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("id", "is not a valid webhook id") from None


class Endpoints:
    """Use cases of the webhook service's endpoint registry."""

    def __init__(
        self,
        store: WebhookStore,
        resolver: Resolver,
        *,
        allowed: Sequence[IPNetwork] = (),
        secret_overlap_s: float = 24 * 3600.0,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._resolver = resolver
        self._allowed = tuple(allowed)
        self._secret_overlap_s = secret_overlap_s
        # Tells the delivery worker that deliveries became due (they resume on enable).
        self._wake = wake

    async def create(
        self,
        principal: Principal,
        *,
        url: str,
        event_types: Sequence[str],
        description: str,
        ordered: bool = False,
    ) -> tuple[WebhookRecord, str]:
        """Registers an endpoint; returns it and its secret, which is never shown again."""
        event_types = normalise_event_types(event_types)
        description = check_description(description)
        # Resolution is the slow check, so it runs once everything else is known to be valid.
        await check_destination(url, self._resolver, self._allowed)
        webhook = NewWebhook(
            id=str(uuid.uuid4()),
            url=url,
            event_types=event_types,
            description=description,
            secret=new_secret(),
            ordered=ordered,
        )
        record = await self._store.insert(principal.tenant_id, webhook)
        return record, webhook.secret

    async def get(self, principal: Principal, webhook_id: str) -> WebhookRecord:
        """The endpoint; another tenant's endpoint is NotFound like a missing one."""
        record = await self._store.get(principal.tenant_id, parse_id(webhook_id))
        if record is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        return record

    async def list_page(
        self, principal: Principal, *, page_size: int, page_token: str
    ) -> WebhookPage:
        """One page, newest first, and the token of the next page ('' on the last page)."""
        limit = paging.page_size(page_size)
        after = paging.decode_page_token(page_token)
        # One extra row tells whether another page follows without a second query.
        rows = await self._store.list_webhooks(principal.tenant_id, limit=limit + 1, after=after)
        page, more = rows[:limit], len(rows) > limit
        token = paging.encode_page_token(Cursor(page[-1].created_at, page[-1].id)) if more else ""
        return WebhookPage(webhooks=page, next_page_token=token)

    async def delete(self, principal: Principal, webhook_id: str) -> None:
        """Deletes the endpoint."""
        if not await self._store.delete(principal.tenant_id, parse_id(webhook_id)):
            raise NotFound(WEBHOOK_NOT_FOUND)

    async def rotate_secret(self, principal: Principal, webhook_id: str) -> RotatedSecret:
        """A new secret, shown once; the old one signs alongside it for the overlap.

        Rotating again within the overlap retires the older secret at once: two secrets at most.
        """
        secret = new_secret()
        expires_at = await self._store.rotate_secret(
            principal.tenant_id, parse_id(webhook_id), secret, self._secret_overlap_s
        )
        if expires_at is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        return RotatedSecret(secret=secret, previous_expires_at=expires_at)

    async def enable(self, principal: Principal, webhook_id: str) -> WebhookRecord:
        """Enables the endpoint (a no-op when it is enabled); its waiting deliveries resume."""
        record = await self._store.enable(principal.tenant_id, parse_id(webhook_id))
        if record is None:
            raise NotFound(WEBHOOK_NOT_FOUND)
        self._wake()
        return record
