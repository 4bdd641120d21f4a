"""Which event types a tenant's webhooks want, so the lattice service writes no event nobody
subscribes to (ADR 69).

The webhook service owns the Redis key `webhook:subscribed:<tenant>`; the lattice service reads
it (through its local cache, kept current by the invalidation feed) before it writes an event:

- absent: unknown, so the event is written (and the webhook service, finding no endpoint for
  it, records the tenant's subscribed types with SET NX);
- `*`: anything may be wanted: written. A change that can add a subscription (a new endpoint,
  an endpoint enabled again) sets `*` inside its transaction, before it commits: once the
  caller hears "created", every replica's next event for the tenant is written;
- otherwise the comma-separated event types of the tenant's enabled endpoints ("" for none).

Removals never touch the key: a stale value then only names more types than are wanted (an
event written and dropped by the webhook service, as before); every value expires after
`TTL_S` and is worked out afresh. Any Redis failure means "written": losing a webhook is worse
than an event too many.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import redis.asyncio as aioredis

from services.common.cache import REDIS_FAILURES, RedisCalls
from services.common.local_cache import LocalCache, through

logger = logging.getLogger("catalytic.subscriptions")

PREFIX = "webhook:subscribed:"
ALL = b"*"
TTL_S = 300
DEFAULT_TIMEOUT_S = 1.0
UNAVAILABLE = "webhook subscriptions cannot be recorded now; retry shortly"
# A tenant's types are recorded at most this often by one replica: events that still arrive
# meanwhile were sent before every writer saw the record (or by a writer without the feed).
RECORD_INTERVAL_S = 10.0
RECORDED_MAX_ENTRIES = 10_000


def subscribed_key(tenant_id: str) -> str:
    return PREFIX + tenant_id


def encode(event_types: Iterable[str]) -> bytes:
    """The tenant's subscribed types as stored: sorted, comma-separated ("" for none)."""
    return ",".join(sorted(set(event_types))).encode()


def wanted(value: bytes | None, event_type: str) -> bool:
    """Whether an event of `event_type` must be written, given the key's value."""
    if value is None or value == ALL:
        return True
    return event_type.encode() in value.split(b",")


class SubscriptionNotices:
    """The webhook service's side: widens the key before a change commits, and records what a
    tenant subscribes to when the key was absent."""

    def __init__(self, redis: aioredis.Redis, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._redis = redis
        self._calls = RedisCalls(redis, timeout_s)
        # When each tenant's types were last recorded here (insertion order: oldest first).
        self._recorded: dict[str, float] = {}

    async def widen(self, tenant_id: str) -> None:
        """Inside a transaction that may add a subscription: Unavailable (a rollback) when
        Redis cannot take it, so that no replica goes on skipping the tenant's events."""
        await self._calls.or_unavailable(
            self._redis.set(subscribed_key(tenant_id), ALL, ex=TTL_S), UNAVAILABLE, 1.0
        )

    async def record_unwanted(
        self, tenant_id: str, subscribed_types: Callable[[str], Awaitable[Iterable[str]]]
    ) -> None:
        """An event of the tenant's found no endpoint: records `subscribed_types(tenant_id)`
        (see record()), unless this replica did so in the last RECORD_INTERVAL_S."""
        now = time.monotonic()
        last = self._recorded.get(tenant_id)
        if last is not None and now - last < RECORD_INTERVAL_S:
            return
        self._recorded.pop(tenant_id, None)
        while len(self._recorded) >= RECORDED_MAX_ENTRIES:
            del self._recorded[next(iter(self._recorded))]
        self._recorded[tenant_id] = now
        await self.record(tenant_id, await subscribed_types(tenant_id))

    async def record(self, tenant_id: str, event_types: Iterable[str]) -> None:
        """Sets the tenant's types only if the key is absent: a change that widened it since
        they were read wins. Best effort: without it events are written as before."""
        try:
            await self._calls(
                self._redis.set(subscribed_key(tenant_id), encode(event_types), ex=TTL_S, nx=True)
            )
        except REDIS_FAILURES as exc:
            logger.debug("could not record the subscriptions of %s: %s", tenant_id, exc)


class Subscriptions:
    """The event writers' side: whether a tenant's event is wanted."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        local: LocalCache[bytes | None] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._redis = redis
        self._local = local
        self._calls = RedisCalls(redis, timeout_s)

    async def wants(self, tenant_id: str, event_type: str) -> bool:
        key = subscribed_key(tenant_id)
        try:
            value = await through(self._local, key, lambda: self._read(key))
        except REDIS_FAILURES:
            return True
        return wanted(value, event_type)

    async def _read(self, key: str) -> bytes | None:
        value = await self._calls(self._redis.get(key))
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()
