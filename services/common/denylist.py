"""Revoked credentials in Redis: access-token `jti`s until they expire, revoked API keys briefly.

Every service checks it on every authenticated RPC, so a revocation takes effect everywhere at
once. When Redis cannot answer, the check fails closed: `Unavailable`, never "not revoked".
A replica keeps the answers it had in a local cache that Redis's invalidation feed empties of
each entry the moment its key is written (services.common.invalidation, ADR 68): a token
checked a moment ago costs no round trip, and a revocation still holds from the next call.

Redis may lose the list (FLUSHALL, a restart without its files, a failover): the durable copy
is PostgreSQL (services.common.revocations). A marker key names the Redis process that holds
the whole list; a check that finds it missing, or naming another process, has the list
rebuilt from PostgreSQL first (one replica at a time, under a lock) and answers `Unavailable`
if that takes longer than `rebuild_wait_s` (ADR 57).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import secrets
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter

from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.cache import REDIS_FAILURES, RedisCalls, service_of
from services.common.errors import DomainError, Unavailable
from services.common.local_cache import LocalCache, through
from services.common.revocations import Revocations

logger = logging.getLogger("catalytic.denylist")

JTI_KEY = "denylist:jti:{}"
API_KEY_KEY = "denylist:api_key:{}"
# The run_id of the Redis process that holds every revocation; absent until a rebuild.
LOADED_KEY = "denylist:loaded"
# Held (token:run_id) by the replica rebuilding the list.
REBUILD_LOCK_KEY = "denylist:rebuild"
# Longer than any verifier's API-key cache (api_keys.CACHE_TTL_S): once the marker is gone, no
# cache anywhere still holds the key, and the database's revoked_at decides alone.
API_KEY_MARKER_TTL_S = 120
# A hung Redis must not hang every RPC; the client's own connect timeout is longer.
DEFAULT_TIMEOUT_S = 2.0
# How long a call waits for a rebuild before answering Unavailable (the rebuild goes on).
DEFAULT_REBUILD_WAIT_S = 2.0
# A rebuild claim lapses after this long, so a replica that died while rebuilding holds no
# one up for longer; and a replica gives up waiting for another's rebuild after as long.
REBUILD_CLAIM_S = 30.0
# How often a replica looks whether another one's rebuild has finished.
REBUILD_POLL_S = 0.05
# Denylist entries written per Redis round trip during a rebuild.
REBUILD_CHUNK = 1000
REBUILDING = "credential revocation list is being rebuilt; retry shortly"
UNAVAILABLE = "credential revocation list is unavailable; retry shortly"

_LUA = Path(__file__).with_name("lua")
_NOT_LOADED = -1
_LOADED, _CLAIMED = 1, 2
REBUILD_OUTCOMES = ("loaded", "failed")

REBUILDS = Counter(
    "catalytic_denylist_rebuilds_total",
    "Rebuilds of the Redis denylist from PostgreSQL this service ran after finding Redis"
    " without it (flushed, restarted, failed over), by outcome: loaded or failed.",
    ["service", "outcome"],
)

_T = TypeVar("_T")


class RevocationSource(Protocol):
    """The durable copy of every revocation (PostgreSQL in production)."""

    async def unexpired(self, api_key_window_s: float) -> Revocations:
        """Tokens a verifier may still accept, and keys deleted in the last window."""


def remaining_ttl(
    expires_at: float, *, now: float | None = None, leeway_s: int = DEFAULT_LEEWAY_S
) -> int:
    """Seconds a revoked token must stay listed: until no verifier accepts it any more.

    Verifiers accept a token up to `leeway_s` after `exp` (clock skew), so the entry outlives
    `exp` by as much; rounded up, and at least 1 s (Redis refuses a zero expiry).
    """
    current = time.time() if now is None else now
    return max(1, math.ceil(expires_at - current) + leeway_s)


def api_key_marker_ttl(revoked_at: float, *, now: float | None = None) -> int:
    """Seconds left of a deleted key's marker, counted from its deletion; at least 1 s."""
    current = time.time() if now is None else now
    return max(1, math.ceil(revoked_at + API_KEY_MARKER_TTL_S - current))


def _script(name: str) -> str:
    return (_LUA / f"{name}.lua").read_text(encoding="utf-8")


class Denylist:
    """Revocation entries in Redis, each expiring by itself when it can no longer matter, and
    rebuilt from `source` whenever Redis no longer holds them all."""

    def __init__(
        self,
        redis: aioredis.Redis,
        source: RevocationSource,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        rebuild_wait_s: float = DEFAULT_REBUILD_WAIT_S,
        local: LocalCache[bool] | None = None,
    ) -> None:
        self._redis = redis
        # Answers already had from Redis, while the invalidation feed keeps them current.
        self._local = local
        self._source = source
        self._calls = RedisCalls(redis, timeout_s)
        self._rebuild_wait_s = rebuild_wait_s
        self._check = redis.register_script(_script("denylist_check"))
        self._claim = redis.register_script(_script("denylist_claim"))
        self._finish = redis.register_script(_script("denylist_finish"))
        self._release = redis.register_script(_script("denylist_release"))
        self._rebuild_task: asyncio.Task[None] | None = None
        service = service_of(redis)
        # Every outcome exported from the start (0), bound once.
        self._rebuilds = {
            outcome: REBUILDS.labels(service, outcome) for outcome in REBUILD_OUTCOMES
        }

    async def add(self, jti: str, ttl_s: int) -> None:
        """Lists an access token's `jti` for `ttl_s` seconds (see remaining_ttl)."""
        await self._call(self._redis.set(JTI_KEY.format(jti), b"1", ex=max(1, ttl_s)))

    async def contains(self, jti: str) -> bool:
        """True when the access token was revoked; Unavailable when Redis cannot say."""
        return await self._listed(JTI_KEY.format(jti))

    async def add_api_key(self, key_id: str, ttl_s: int = API_KEY_MARKER_TTL_S) -> None:
        """Marks an API key revoked, so verifiers' short-lived caches stop honouring it now."""
        await self._call(self._redis.set(API_KEY_KEY.format(key_id), b"1", ex=max(1, ttl_s)))

    async def contains_api_key(self, key_id: str) -> bool:
        """True when the API key was revoked recently; Unavailable when Redis cannot say."""
        return await self._listed(API_KEY_KEY.format(key_id))

    async def aclose(self) -> None:
        """Stops a rebuild in progress (at shutdown)."""
        task, self._rebuild_task = self._rebuild_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _listed(self, key: str) -> bool:
        return await through(self._local, key, lambda: self._listed_in_redis(key))

    async def _listed_in_redis(self, key: str) -> bool:
        state = await self._call(self._check(keys=[LOADED_KEY, key]))
        if state == _NOT_LOADED:
            await self._wait_for_rebuild()
            # Asked again: Redis may have lost the list once more meanwhile.
            state = await self._call(self._check(keys=[LOADED_KEY, key]))
            if state == _NOT_LOADED:
                raise Unavailable(REBUILDING, retry_after_s=1.0)
        return bool(state)

    async def _wait_for_rebuild(self) -> None:
        """Until this process's rebuild (started now if none runs) ends, for rebuild_wait_s at
        most; calls arriving meanwhile wait for the same one."""
        task = self._rebuild_task
        if task is None or task.done():
            # A context of its own: not the request's that happened to notice (its request id).
            task = asyncio.create_task(
                self._rebuild(), name="denylist-rebuild", context=contextvars.Context()
            )
            task.add_done_callback(self._rebuild_done)
            self._rebuild_task = task
        try:
            async with asyncio.timeout(self._rebuild_wait_s):
                # Shielded: a caller that gives up (or is cancelled) leaves it running.
                await asyncio.shield(task)
        except (TimeoutError, DomainError):
            # The database or Redis failed the rebuild (logged once, by _rebuild_done), or it
            # takes longer: fail closed, and the next call waits for it or starts another.
            raise Unavailable(REBUILDING, retry_after_s=1.0) from None

    def _rebuild_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        if (exc := task.exception()) is not None:
            self._rebuilds["failed"].inc()
            logger.warning("denylist rebuild failed; the next authenticated call retries: %s", exc)

    async def _rebuild(self) -> None:
        """Loads every revocation from the source into Redis, unless another replica does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REBUILD_CLAIM_S
        token = secrets.token_hex(16)
        claim_ms = round(REBUILD_CLAIM_S * 1000)
        while loop.time() < deadline:
            state = await self._call(
                self._claim(keys=[LOADED_KEY, REBUILD_LOCK_KEY], args=[token, claim_ms])
            )
            if state == _LOADED:
                return
            if state == _CLAIMED and await self._load_or_release(token):
                return
            if state != _CLAIMED:
                await asyncio.sleep(REBUILD_POLL_S)  # another replica is rebuilding
        raise Unavailable(f"denylist not rebuilt within {REBUILD_CLAIM_S:g} s")

    async def _load_or_release(self, token: str) -> bool:
        try:
            return await self._load(token)
        except BaseException:
            # Best effort: unreleased, the claim lapses after REBUILD_CLAIM_S.
            with contextlib.suppress(*REDIS_FAILURES):
                await self._calls(self._release(keys=[REBUILD_LOCK_KEY], args=[token]))
            raise

    async def _load(self, token: str) -> bool:
        """Writes every revocation, then the marker if Redis kept them all meanwhile."""
        started = time.monotonic()
        revocations = await self._source.unexpired(API_KEY_MARKER_TTL_S)
        now = time.time()
        entries = [
            (JTI_KEY.format(revoked.jti), remaining_ttl(revoked.expires_at, now=now))
            for revoked in revocations.tokens
        ] + [
            (API_KEY_KEY.format(key.key_id), api_key_marker_ttl(key.revoked_at, now=now))
            for key in revocations.api_keys
        ]
        for first in range(0, len(entries), REBUILD_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, ttl_s in entries[first : first + REBUILD_CHUNK]:
                    pipe.set(key, b"1", ex=ttl_s)
                await self._call(pipe.execute())
        if not await self._call(self._finish(keys=[LOADED_KEY, REBUILD_LOCK_KEY], args=[token])):
            logger.warning("Redis lost the denylist again while it was rebuilt; starting over")
            return False
        self._rebuilds["loaded"].inc()
        logger.warning(
            "denylist rebuilt from PostgreSQL: %d access tokens, %d API keys in %.3f s",
            len(revocations.tokens),
            len(revocations.api_keys),
            time.monotonic() - started,
        )
        return True

    async def _call(self, command: Awaitable[_T]) -> _T:
        # Fail closed: a revoked credential must never pass because Redis is down.
        return await self._calls.or_unavailable(command, UNAVAILABLE)
