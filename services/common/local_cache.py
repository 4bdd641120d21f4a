"""A replica's own copy of Redis-backed answers, dropped the moment Redis says they changed.

A `LocalCache` holds answers a service looked up through Redis (or behind a Redis key): a
token's denylist state, a member's role, a lattice's metadata. Each entry is named by the Redis
key whose change makes it stale; the invalidation feed (invalidation.py) drops it when Redis
reports that key written, and empties the cache when the feed is lost. While the feed is not
live the cache answers nothing and keeps nothing: callers go to Redis as if it were not there.

Fills are guarded against a change that races the lookup they cache: `begin(key)` before
asking Redis or PostgreSQL, `finish(ticket, value)` after; the value is kept only if no
invalidation of the key (and no reset) arrived in between.

>>> class AlwaysLive:
...     live = True
...     def drain(self): pass
>>> cache = LocalCache(AlwaysLive(), "roles", max_entries=2, max_age_s=5)
>>> ticket = cache.begin("membership:t:u")
>>> cache.finish(ticket, "admin")
>>> cache.get("membership:t:u")
'admin'
>>> cache.invalidate("membership:t:u")
>>> cache.get("membership:t:u") is MISSING
True
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

from prometheus_client import Counter

V = TypeVar("V")

MISSING: object = object()
"""What get() answers when it has nothing trustworthy for the key."""

LOOKUPS = Counter(
    "catalytic_local_cache_lookups_total",
    "Lookups in a replica's local cache of Redis-backed answers (tokens' denylist state,"
    " members' roles, lattices' metadata), by cache and outcome: hit, miss, or bypass (the"
    " invalidation feed is not live, so the cache is not trusted).",
    ["cache", "outcome"],
)


class Feed(Protocol):
    """What a cache needs of the invalidation feed."""

    @property
    def live(self) -> bool:
        """True while every change to the watched keys is being reported."""

    def drain(self) -> None:
        """Applies every invalidation already received, before the caller reads."""


async def through(cache: LocalCache[V] | None, key: str, lookup: Callable[[], Awaitable[V]]) -> V:
    """`cache.fetch(key, lookup)`, or `lookup()` itself when the service runs without the
    cache (LOCAL_CACHES=false, or no Redis feed in a unit test)."""
    return await lookup() if cache is None else await cache.fetch(key, lookup)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A fill in progress: the key and the reset epoch it began in."""

    key: str
    epoch: int


class LocalCache(Generic[V]):
    """Entries by Redis key, each kept at most `max_age_s` and at most `max_entries` in all
    (the oldest goes first)."""

    def __init__(self, feed: Feed, name: str, *, max_entries: int, max_age_s: float) -> None:
        self._feed = feed
        self.name = name
        self._max_entries = max_entries
        self._max_age_s = max_age_s
        self._entries: dict[str, tuple[V, float]] = {}
        self._epoch = 0
        # Fills in flight per key, and the keys invalidated while one was.
        self._filling: dict[str, int] = {}
        self._raced: set[str] = set()
        # One lookup per key at a time: a burst of misses (an entry aged out under load) waits
        # for the first one's answer instead of each asking Redis or PostgreSQL. Dropped at an
        # invalidation, so that a lookup starting after a change never gets an older answer.
        self._lookups: dict[str, asyncio.Future[V]] = {}
        self._hit = LOOKUPS.labels(name, "hit")
        self._miss = LOOKUPS.labels(name, "miss")
        self._bypass = LOOKUPS.labels(name, "bypass")

    def get(self, key: str) -> V | object:
        """The cached answer, or MISSING (absent, too old, or the feed not live)."""
        self._feed.drain()
        if not self._feed.live:
            self._bypass.inc()
            return MISSING
        entry = self._entries.get(key)
        if entry is None:
            self._miss.inc()
            return MISSING
        value, stored_at = entry
        if time.monotonic() - stored_at > self._max_age_s:
            del self._entries[key]
            self._miss.inc()
            return MISSING
        self._hit.inc()
        return value

    async def fetch(self, key: str, lookup: Callable[[], Awaitable[V]]) -> V:
        """The cached answer, else `lookup()`'s, kept for next time (see finish())."""
        found = self.get(key)
        if found is not MISSING:
            return cast(V, found)
        pending = self._lookups.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not pending.cancelled() or (current is not None and current.cancelling()):
                    raise
                # The first caller went away: this one looks up itself.
        shared: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        # Retrieved here, so that a failure nobody else waited for is not reported as lost.
        shared.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._lookups[key] = shared
        ticket = self.begin(key)
        fetched: object = MISSING
        try:
            value = await lookup()
            fetched = value
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                shared.cancel()
            else:
                shared.set_exception(exc)
            raise
        finally:
            if self._lookups.get(key) is shared:
                del self._lookups[key]
            self.finish(ticket, fetched)
        shared.set_result(value)
        return value

    def begin(self, key: str) -> Ticket:
        """Call before looking the answer up elsewhere; hand the ticket to finish()."""
        self._filling[key] = self._filling.get(key, 0) + 1
        return Ticket(key, self._epoch)

    def finish(self, ticket: Ticket, value: V | object) -> None:
        """Keeps `value` unless the key changed (or the cache was reset) since begin(); a
        MISSING value (the lookup failed) is not kept, but ends the fill all the same."""
        key = ticket.key
        self._feed.drain()
        keep = (
            value is not MISSING
            and ticket.epoch == self._epoch
            and key not in self._raced
            and self._feed.live
        )
        left = self._filling.get(key, 1) - 1
        if left <= 0:
            self._filling.pop(key, None)
            self._raced.discard(key)
        else:
            self._filling[key] = left
        if keep:
            self._store(key, value)  # type: ignore[arg-type]

    def invalidate(self, key: str) -> None:
        """Redis reported `key` changed."""
        self._entries.pop(key, None)
        self._lookups.pop(key, None)
        if key in self._filling:
            self._raced.add(key)

    def reset(self) -> None:
        """Forgets everything, fills in flight included (the feed was lost or came back)."""
        self._entries.clear()
        self._raced.clear()
        self._lookups.clear()
        self._epoch += 1

    def __len__(self) -> int:
        return len(self._entries)

    def _store(self, key: str, value: V) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (value, time.monotonic())
