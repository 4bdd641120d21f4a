"""Rate limits shared by every replica: GCRA in one Lua script, one Redis key per subject.

GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp) stores a subject's
"theoretical arrival time" and nothing else, so a limit costs one small key per active subject
and one round trip per request, and a refusal knows exactly when the next request would pass.
The script reads Redis's own clock, so replicas need not agree on the time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter

from services.common.cache import REDIS_FAILURES, RedisCalls
from services.common.client_address import TrustedProxies, trusted_proxies_from_env
from services.common.config import ConfigError, env_float, env_int
from services.common.db import Database
from services.common.errors import ResourceExhausted
from services.common.plans import CATALOGUE, FALLBACK_PLAN

logger = logging.getLogger("catalytic.ratelimit")

KEY_PREFIX = "rl"
# A hung Redis must cost a request little: a fail-open limit gives up after this long.
DEFAULT_TIMEOUT_S = 0.5
# While Redis is down every request would log; one line per limit per this many seconds.
ERROR_LOG_INTERVAL_S = 10.0

RATE_LIMITED = Counter(
    "catalytic_rate_limited_total",
    "Requests refused by a rate limit or the log-in lockout, by service and limit name.",
    ["service", "limit"],
)
RATE_LIMIT_ERRORS = Counter(
    "catalytic_rate_limit_errors_total",
    "Limit checks that could not be made (Redis or PostgreSQL unavailable), by service and "
    "limit name; fail-open limits let such requests through.",
    ["service", "limit"],
)

# KEYS[1]: the subject's key. ARGV: emission interval (µs per unit of cost), burst (units),
# cost (units). The key holds the theoretical arrival time (TAT) in µs of Redis's clock and
# expires when the bucket is full again. Returns {allowed, remaining, retry_after_us}.
_GCRA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local capacity = interval * burst
local new_tat = tat + interval * cost
local allow_at = new_tat - capacity
if allow_at > now then
  return {0, math.max(0, math.floor((capacity - (tat - now)) / interval)), allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat),
           'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
return {1, math.floor((capacity - (new_tat - now)) / interval), 0}
"""


class RateLimiterUnavailable(Exception):
    """Redis did not answer in time; the caller decides whether to fail open or closed."""


def limit_key(name: str, subject: str) -> str:
    """`rl:<name>:<sha256 prefix>`: e-mails and addresses never appear in Redis in clear."""
    digest = hashlib.sha256(subject.encode("utf-8")).hexdigest()[:32]
    return f"{KEY_PREFIX}:{name}:{digest}"


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` requests per `period_s` sustained, up to `burst` at once (a full bucket)."""

    limit: int
    period_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.burst < 1 or not self.period_s > 0:
            raise ValueError(f"a rate needs limit >= 1, burst >= 1 and period > 0: {self}")

    @classmethod
    def per(cls, limit: int, period_s: float, *, burst: int | None = None) -> Rate:
        """`limit` per `period_s`; the burst defaults to the limit."""
        return cls(limit, period_s, limit if burst is None else burst)

    @property
    def interval_us(self) -> int:
        """Microseconds one request's worth of budget takes to come back."""
        return max(1, round(self.period_s * 1_000_000 / self.limit))

    def scaled(self, multiplier: float) -> Rate:
        """The same period with limit and burst multiplied (never below 1)."""
        return Rate(
            max(1, round(self.limit * multiplier)),
            self.period_s,
            max(1, round(self.burst * multiplier)),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one hit: allowed or not, what is left, and when to retry if refused."""

    allowed: bool
    remaining: int
    retry_after_s: float


class RateLimiter:
    """GCRA over Redis; atomic across replicas because the whole decision is one script."""

    def __init__(self, redis: aioredis.Redis, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._script = redis.register_script(_GCRA)
        self._calls = RedisCalls(redis, timeout_s)

    async def hit(self, key: str, rate: Rate, *, cost: int = 1) -> Decision:
        """Spends `cost` from the bucket at `key` if it holds that much; RateLimiterUnavailable
        when Redis cannot say."""
        if not 1 <= cost <= rate.burst:
            raise ValueError(f"cost {cost} must be 1..burst ({rate.burst})")
        try:
            reply = await self._calls(
                self._script(keys=[key], args=[rate.interval_us, rate.burst, cost])
            )
        except REDIS_FAILURES as exc:
            raise RateLimiterUnavailable(f"rate limiter unavailable: {exc!r}") from exc
        allowed, remaining, retry_after_us = (int(value) for value in reply)
        return Decision(bool(allowed), remaining, retry_after_us / 1_000_000)


class Limit:
    """One named limit of one service (e.g. auth's `login_ip`), enforced on subjects.

    It fails open: when Redis cannot answer the request goes through, and the miss is logged
    and counted in catalytic_rate_limit_errors_total (see the ADR "Abuse limits").
    """

    def __init__(self, limiter: RateLimiter, *, service: str, name: str, message: str) -> None:
        self._limiter = limiter
        self.service = service
        self.name = name
        self._message = message
        self._last_error_log = -math.inf

    async def enforce(self, subject: str, rate: Rate, *, cost: int = 1) -> None:
        """ResourceExhausted (with retry_after_s) when `subject` is over `rate`."""
        try:
            decision = await self._limiter.hit(limit_key(self.name, subject), rate, cost=cost)
        except RateLimiterUnavailable as exc:
            self.unavailable(exc)
            return
        if not decision.allowed:
            RATE_LIMITED.labels(self.service, self.name).inc()
            raise ResourceExhausted(self._message, retry_after_s=decision.retry_after_s)

    async def claim(self, subject: str, rate: Rate, cost: int) -> bool:
        """Spends `cost` at once if the bucket holds that much: True when spent (or when Redis
        cannot say: fail open, counted), False when refused (nothing is spent then)."""
        try:
            decision = await self._limiter.hit(limit_key(self.name, subject), rate, cost=cost)
        except RateLimiterUnavailable as exc:
            self.unavailable(exc)
            return True
        return decision.allowed

    def unavailable(self, exc: BaseException) -> None:
        """Counts a check that could not be made; logs it at most every few seconds."""
        RATE_LIMIT_ERRORS.labels(self.service, self.name).inc()
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            logger.warning("%s limit not enforced (failing open): %s", self.name, exc)


# ----------------------------------------------------------------------------- leases
# A lease is this fraction of a rate's per-period limit...
LEASE_FRACTION = 0.05
# ...and is given up, spent or not, after at most this long.
LEASE_MAX_AGE_S = 1.0
LEASE_MAX_ENTRIES = 10_000


def lease_size(rate: Rate) -> int:
    """How many requests one Redis round trip claims: 5% of the limit, within the burst.

    1 (every request asks Redis, as exact as a limit can be) for rates under 40 per period.
    The limit counted is what the bucket can hold at its microsecond resolution
    (`interval_us` is at least 1): a rate over a million a second leases as if it were one,
    or its leases would outrun the bucket and every request would ask Redis alone.
    """
    enforceable = min(rate.limit, round(rate.period_s * 1_000_000 / rate.interval_us))
    return max(1, min(rate.burst, int(enforceable * LEASE_FRACTION)))


@dataclass(slots=True)
class _Lease:
    tokens: int
    expires_at: float


class LeasedLimit:
    """A Limit spent in leases: one Redis round trip claims `lease_size(rate)` requests' worth
    of the subject's budget, and this process spends it locally, one request at a time.

    At a tenant's full rate that divides the Redis round trips of a busy tenant by the lease
    size (50 for 1,000 requests/s). Nothing is ever admitted beyond the limit: every leased
    request was paid for in Redis. The price is the other way: a lease not spent within
    LEASE_MAX_AGE_S is lost, so a tenant spread thinly over many replicas may be refused
    slightly early: by at most one lease (5% of the limit) per replica per second. When a full
    lease no longer fits, single requests are still admitted one by one, so the last requests
    of a budget are never refused for want of a lease.
    """

    def __init__(
        self,
        limit: Limit,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = LEASE_MAX_ENTRIES,
    ) -> None:
        self._limit = limit
        self._clock = clock
        self._max_entries = max_entries
        self._leases: dict[str, _Lease] = {}

    @property
    def service(self) -> str:
        return self._limit.service

    async def enforce(self, subject: str, rate: Rate) -> None:
        """ResourceExhausted (with retry_after_s) when `subject` is over `rate`."""
        now = self._clock()
        lease = self._leases.get(subject)
        if lease is not None and lease.tokens > 0 and now < lease.expires_at:
            lease.tokens -= 1
            return
        size = lease_size(rate)
        if size > 1 and await self._limit.claim(subject, rate, size):
            self._store(subject, _Lease(size - 1, now + LEASE_MAX_AGE_S))
            return
        await self._limit.enforce(subject, rate)

    def _store(self, subject: str, lease: _Lease) -> None:
        self._leases.pop(subject, None)
        while len(self._leases) >= self._max_entries:
            # Insertion order: the oldest lease goes first.
            del self._leases[next(iter(self._leases))]
        self._leases[subject] = lease


# ----------------------------------------------------------------------------- plans
# Requests per second sustained and burst, per tenant and service (services/common/plans.py).
DEFAULT_TENANT_RATES: dict[str, tuple[int, int]] = {
    plan.name: (plan.requests_per_s, plan.request_burst) for plan in CATALOGUE
}
DEFAULT_PLAN_CACHE_S = 60.0
PLAN_CACHE_MAX_ENTRIES = 10_000


class PlanSource(Protocol):
    """Where a tenant's plan is recorded (PostgreSQL in production)."""

    async def plan_of(self, tenant_id: str) -> str | None:
        """The tenant's plan; None when the tenant does not exist."""


class PostgresPlanSource:
    """Reads `tenants.plan` inside the tenant's own row-level-security context."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def plan_of(self, tenant_id: str) -> str | None:
        async with self._db.tenant_transaction(tenant_id) as conn:
            cur = await conn.execute("SELECT plan FROM tenants WHERE id = %s", (tenant_id,))
            row = await cur.fetchone()
        return str(row["plan"]) if row else None


@dataclass(frozen=True, slots=True)
class _Cached:
    plan: str | None
    expires_at: float


class TenantPlans:
    """Plans cached in the process for `ttl_s`, so a plan change applies within that time.

    Concurrent misses for one tenant share one query; a failed query falls back to the
    expired entry when there is one.
    """

    def __init__(
        self,
        source: PlanSource,
        *,
        ttl_s: float = DEFAULT_PLAN_CACHE_S,
        max_entries: int = PLAN_CACHE_MAX_ENTRIES,
    ) -> None:
        self._source = source
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._cache: dict[str, _Cached] = {}
        self._pending: dict[str, asyncio.Task[str | None]] = {}

    async def plan_of(self, tenant_id: str) -> str | None:
        """The tenant's plan (None: no such tenant); raises what the source raises, unless a
        stale entry can answer instead."""
        cached = self._cache.get(tenant_id)
        if cached is not None and cached.expires_at > time.monotonic():
            return cached.plan
        task = self._pending.get(tenant_id)
        if task is None:
            task = asyncio.create_task(self._fetch(tenant_id))
            self._pending[tenant_id] = task
            task.add_done_callback(lambda _: self._pending.pop(tenant_id, None))
        try:
            # Shielded: one caller giving up must not cancel the query the others wait on.
            return await asyncio.shield(task)
        except Exception:
            if cached is not None:
                return cached.plan
            raise

    async def _fetch(self, tenant_id: str) -> str | None:
        plan = await self._source.plan_of(tenant_id)
        self._cache.pop(tenant_id, None)
        self._cache[tenant_id] = _Cached(plan, time.monotonic() + self._ttl_s)
        while len(self._cache) > self._max_entries:
            # Dicts keep insertion order and entries are re-inserted on refresh: oldest first.
            del self._cache[next(iter(self._cache))]
        return plan


# ----------------------------------------------------------------------------- configuration
MULTIPLIER_VARIABLE = "RATE_LIMIT_MULTIPLIER"


def env_rate(
    name: str,
    default: int,
    period_s: float,
    *,
    multiplier: float = 1.0,
    environ: Mapping[str, str] | None = None,
) -> Rate:
    """`<name>` requests per `period_s` (burst the same), scaled by the multiplier."""
    limit = env_int(name, default, environ=environ)
    if limit < 1:
        raise ConfigError(f"environment variable {name}={limit} must be at least 1")
    return Rate.per(limit, period_s).scaled(multiplier)


@dataclass(frozen=True)
class RateLimitConfig:
    """What every service's rate limiting needs; read once at start-up."""

    # Scales every request-rate limit (not the log-in lockout); tests raise or lower it.
    multiplier: float
    tenant_rates: Mapping[str, Rate]
    plan_cache_s: float
    trusted_proxies: TrustedProxies

    def tenant_rate(self, plan: str | None) -> Rate:
        """The rate for a plan; unknown plans and missing tenants get the smallest plan's."""
        return self.tenant_rates.get(plan or FALLBACK_PLAN, self.tenant_rates[FALLBACK_PLAN])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RateLimitConfig:
        """RATE_LIMIT_MULTIPLIER, TENANT_RATE_LIMIT_<PLAN>_PER_S / _BURST, TENANT_PLAN_CACHE_S,
        TRUSTED_PROXY_CIDRS."""
        multiplier = env_float(MULTIPLIER_VARIABLE, 1.0, environ=environ)
        if not multiplier > 0:
            raise ConfigError(
                f"environment variable {MULTIPLIER_VARIABLE}={multiplier} must be > 0"
            )
        rates: dict[str, Rate] = {}
        for plan, (per_s, burst) in DEFAULT_TENANT_RATES.items():
            prefix = f"TENANT_RATE_LIMIT_{plan.upper()}"
            per_s = env_int(f"{prefix}_PER_S", per_s, environ=environ)
            burst = env_int(f"{prefix}_BURST", max(burst, per_s), environ=environ)
            if per_s < 1 or burst < 1:
                raise ConfigError(f"{prefix}_PER_S and {prefix}_BURST must be at least 1")
            rates[plan] = Rate(per_s, 1.0, burst).scaled(multiplier)
        cache_s = env_float("TENANT_PLAN_CACHE_S", DEFAULT_PLAN_CACHE_S, environ=environ)
        if cache_s < 0:
            raise ConfigError(f"environment variable TENANT_PLAN_CACHE_S={cache_s} is negative")
        return cls(
            multiplier=multiplier,
            tenant_rates=rates,
            plan_cache_s=cache_s,
            trusted_proxies=trusted_proxies_from_env(environ),
        )
