"""Revoked credentials in Redis: access-token `jti`s until they expire, revoked API keys briefly.

Every service checks it on every authenticated RPC, so a revocation takes effect everywhere at
once. When Redis cannot answer, the check fails closed: `Unavailable`, never "not revoked".
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis

from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.cache import REDIS_FAILURES, RedisCalls
from services.common.errors import Unavailable

JTI_KEY = "denylist:jti:{}"
API_KEY_KEY = "denylist:api_key:{}"
# Longer than any verifier's API-key cache (api_keys.CACHE_TTL_S): once the marker is gone, no
# cache anywhere still holds the key, and the database's revoked_at decides alone.
API_KEY_MARKER_TTL_S = 120
# A hung Redis must not hang every RPC; the client's own connect timeout is longer.
DEFAULT_TIMEOUT_S = 2.0

_T = TypeVar("_T")


def remaining_ttl(
    expires_at: float, *, now: float | None = None, leeway_s: int = DEFAULT_LEEWAY_S
) -> int:
    """Seconds a revoked token must stay listed: until no verifier accepts it any more.

    Verifiers accept a token up to `leeway_s` after `exp` (clock skew), so the entry outlives
    `exp` by as much; rounded up, and at least 1 s (Redis refuses a zero expiry).
    """
    current = time.time() if now is None else now
    return max(1, math.ceil(expires_at - current) + leeway_s)


class Denylist:
    """Revocation entries in Redis, each expiring by itself when it can no longer matter."""

    def __init__(self, redis: aioredis.Redis, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._redis = redis
        self._calls = RedisCalls(redis, timeout_s)

    async def add(self, jti: str, ttl_s: int) -> None:
        """Lists an access token's `jti` for `ttl_s` seconds (see remaining_ttl)."""
        await self._call(self._redis.set(JTI_KEY.format(jti), b"1", ex=max(1, ttl_s)))

    async def contains(self, jti: str) -> bool:
        """True when the access token was revoked; Unavailable when Redis cannot say."""
        return bool(await self._call(self._redis.exists(JTI_KEY.format(jti))))

    async def add_api_key(self, key_id: str, ttl_s: int = API_KEY_MARKER_TTL_S) -> None:
        """Marks an API key revoked, so verifiers' short-lived caches stop honouring it now."""
        await self._call(self._redis.set(API_KEY_KEY.format(key_id), b"1", ex=max(1, ttl_s)))

    async def contains_api_key(self, key_id: str) -> bool:
        """True when the API key was revoked recently; Unavailable when Redis cannot say."""
        return bool(await self._call(self._redis.exists(API_KEY_KEY.format(key_id))))

    async def _call(self, command: Awaitable[_T]) -> _T:
        try:
            return await self._calls(command)
        except REDIS_FAILURES as exc:
            # Fail closed: a revoked credential must never pass because Redis is down.
            raise Unavailable("credential revocation list is unavailable; retry shortly") from exc
