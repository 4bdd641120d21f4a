"""A member's current role in a tenant: PostgreSQL's memberships, cached briefly in Redis.

Every service asks on every authenticated call (the permission interceptor), so a role change
or a removal holds from the caller's next call, whatever token it carries (ADR 63). A replica
keeps the roles it read in a local cache that Redis's invalidation feed empties of a member's
entry the moment auth writes that member's key (ADR 68). Redis
keeps each answer for `ttl_s`; auth, which changes memberships, forgets the entry inside the
changing transaction and writes the new answer once it committed (`MembershipCache`).

A reader that misses fills the entry only if it is still absent (SET NX): a writer's answer,
written after its commit, always wins over a reader's stale one. Redis failures fail closed
(Unavailable), like the denylist the same call already reads.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis

from services.common.cache import RedisCalls
from services.common.db import Database
from services.common.local_cache import LocalCache, through

KEY = "membership:{}:{}"
# What the cache holds for "not a member".
_NONE = b"-"
DEFAULT_TTL_S = 60
DEFAULT_TIMEOUT_S = 2.0
UNAVAILABLE = "membership roles are unavailable; retry shortly"
_ROLE_QUERY = "SELECT role FROM memberships WHERE user_id = %s"

_T = TypeVar("_T")


class MembershipRoles:
    """Reads roles through the cache; what the permission interceptor of every service uses."""

    def __init__(
        self,
        redis: aioredis.Redis,
        database: Database,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        local: LocalCache[str | None] | None = None,
    ) -> None:
        self._redis = redis
        self._db = database
        self._ttl_s = ttl_s
        self._calls = RedisCalls(redis, timeout_s)
        # Roles already read, while the invalidation feed keeps them current (ADR 68).
        self._local = local

    async def role(self, tenant_id: str, user_id: str) -> str | None:
        """The user's role in the tenant, or None when the user is no member of it."""
        key = KEY.format(tenant_id, user_id)
        return await through(self._local, key, lambda: self._read(key, tenant_id, user_id))

    async def _read(self, key: str, tenant_id: str, user_id: str) -> str | None:
        cached = await self._call(self._redis.get(key))
        if cached is not None:
            # The client is opened with bytes answers (cache.open_redis).
            text = cached.decode() if isinstance(cached, bytes) else str(cached)
            return None if text == _NONE.decode() else text
        rows = await self._db.tenant_statement(tenant_id, _ROLE_QUERY, (user_id,))
        found: str | None = rows[0]["role"] if rows else None
        value = _NONE if found is None else found.encode()
        await self._call(self._redis.set(key, value, ex=self._ttl_s, nx=True))
        return found

    async def _call(self, command: Awaitable[_T]) -> _T:
        return await self._calls.or_unavailable(command, UNAVAILABLE, retry_after_s=1.0)


class MembershipCache:
    """What auth does to the cache around a membership change."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        ttl_s: int = DEFAULT_TTL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._calls = RedisCalls(redis, timeout_s)

    async def forget(self, tenant_id: str, user_id: str) -> None:
        """Drops the cached role; called inside the changing transaction, so that a Redis that
        cannot take it (Unavailable) rolls the change back."""
        await self._call(self._redis.delete(KEY.format(tenant_id, user_id)))

    async def remember(self, tenant_id: str, user_id: str, role: str | None) -> None:
        """Caches the committed role (None: not a member), replacing what a reader may have
        cached from before the commit."""
        value = _NONE if role is None else role.encode()
        await self._call(self._redis.set(KEY.format(tenant_id, user_id), value, ex=self._ttl_s))

    async def _call(self, command: Awaitable[_T]) -> _T:
        return await self._calls.or_unavailable(command, UNAVAILABLE, retry_after_s=1.0)
