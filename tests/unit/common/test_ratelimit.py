"""Rate limiting without a Redis: keys, rates, configuration, the plan cache, failure modes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.auth.config import AuthConfig
from services.auth.lockout import LockoutPolicy, LoginLockout, lockout_keys
from services.common.config import ConfigError
from services.common.errors import Unavailable
from services.common.ratelimit import (
    RATE_LIMIT_ERRORS,
    Limit,
    Rate,
    RateLimitConfig,
    RateLimiter,
    RateLimiterUnavailable,
    TenantPlans,
    limit_key,
)

BASE_ENV = {
    "DATABASE_URL": "postgresql://app:pw@127.0.0.1:1/unused",
    "REDIS_URL": "redis://127.0.0.1:1/0",
}


# ------------------------------------------------------------------ keys and rates
def test_keys_are_namespaced_and_hide_the_subject() -> None:
    key = limit_key("login_ip", "198.51.100.7")
    prefix, name, digest = key.split(":")
    assert (prefix, name) == ("rl", "login_ip")
    assert len(digest) == 32
    assert "198.51.100.7" not in key
    assert limit_key("login_ip", "198.51.100.7") == key
    assert limit_key("login_ip", "198.51.100.8") != key
    assert limit_key("register_ip", "198.51.100.7") != key


def test_lockout_keys_share_one_hash_slot_and_normalise_the_address() -> None:
    attempts, lock = lockout_keys("Ada@Example.com ")
    assert (attempts, lock) == lockout_keys("ada@example.com")
    assert "ada" not in attempts.lower()
    tag = attempts[attempts.index("{") : attempts.index("}") + 1]
    assert tag in lock
    assert attempts.startswith("rl:login_lockout:")


def test_a_rate_bursts_its_limit_by_default() -> None:
    rate = Rate.per(30, 60)
    assert (rate.limit, rate.period_s, rate.burst) == (30, 60, 30)
    assert rate.interval_us == 2_000_000
    assert Rate.per(10, 1, burst=20).burst == 20


def test_scaling_multiplies_limit_and_burst_never_below_one() -> None:
    assert Rate(10, 1, 20).scaled(100) == Rate(1000, 1, 2000)
    assert Rate(10, 1, 20).scaled(0.001) == Rate(1, 1, 1)


@pytest.mark.parametrize(("limit", "period_s", "burst"), [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_impossible_rates_are_refused(limit: int, period_s: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate(limit, period_s, burst)


# ------------------------------------------------------------------ configuration
def test_tenant_rates_default_by_plan() -> None:
    config = RateLimitConfig.from_env({})
    assert config.multiplier == 1.0
    assert config.tenant_rate("free") == Rate(10, 1.0, 20)
    assert config.tenant_rate("starter") == Rate(50, 1.0, 100)
    assert config.tenant_rate("professional") == Rate(200, 1.0, 400)
    assert config.tenant_rate("enterprise") == Rate(1000, 1.0, 2000)
    assert config.plan_cache_s == 60


def test_unknown_plans_and_missing_tenants_get_the_smallest_plan() -> None:
    config = RateLimitConfig.from_env({})
    assert config.tenant_rate("platinum") == config.tenant_rate("free")
    assert config.tenant_rate(None) == config.tenant_rate("free")


def test_tenant_rates_and_the_multiplier_come_from_the_environment() -> None:
    config = RateLimitConfig.from_env(
        {
            "TENANT_RATE_LIMIT_FREE_PER_S": "2",
            "TENANT_RATE_LIMIT_FREE_BURST": "3",
            "TENANT_RATE_LIMIT_STARTER_PER_S": "500",
            "RATE_LIMIT_MULTIPLIER": "2",
            "TENANT_PLAN_CACHE_S": "0",
        }
    )
    assert config.tenant_rate("free") == Rate(4, 1.0, 6)
    # A rate above the default burst raises the burst with it.
    assert config.tenant_rate("starter") == Rate(1000, 1.0, 1000)
    assert config.plan_cache_s == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_MULTIPLIER", "0"),
        ("RATE_LIMIT_MULTIPLIER", "lots"),
        ("TENANT_RATE_LIMIT_FREE_PER_S", "0"),
        ("TENANT_RATE_LIMIT_ENTERPRISE_BURST", "-1"),
        ("TENANT_PLAN_CACHE_S", "-5"),
    ],
)
def test_bad_settings_fail_start_up_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name.rsplit("_", 1)[0]):
        RateLimitConfig.from_env({name: value})


def test_auth_limits_are_on_by_default() -> None:
    config = AuthConfig.from_env(BASE_ENV)
    assert config.register_rate == Rate(10, 3600, 10)
    assert config.login_rate == Rate(30, 60, 30)
    assert config.refresh_rate == Rate(60, 60, 60)
    assert config.lockout == LockoutPolicy(threshold=5, base_s=60, max_s=900, window_s=900)


def test_auth_limits_follow_the_environment_and_the_multiplier() -> None:
    config = AuthConfig.from_env(
        {
            **BASE_ENV,
            "RATE_LIMIT_REGISTER_PER_HOUR": "3",
            "RATE_LIMIT_LOGIN_PER_MINUTE": "5",
            "RATE_LIMIT_MULTIPLIER": "10",
            "LOGIN_LOCKOUT_THRESHOLD": "3",
            "LOGIN_LOCKOUT_BASE_S": "1",
            "LOGIN_LOCKOUT_MAX_S": "4",
            "LOGIN_LOCKOUT_WINDOW_S": "2",
        }
    )
    assert config.register_rate == Rate(30, 3600, 30)
    assert config.login_rate == Rate(50, 60, 50)
    assert config.refresh_rate == Rate(600, 60, 600)
    assert config.lockout == LockoutPolicy(threshold=3, base_s=1, max_s=4, window_s=2)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATE_LIMIT_LOGIN_PER_MINUTE", "0"),
        ("RATE_LIMIT_REGISTER_PER_HOUR", "many"),
        ("LOGIN_LOCKOUT_THRESHOLD", "0"),
        ("LOGIN_LOCKOUT_BASE_S", "0"),
        ("LOGIN_LOCKOUT_MAX_S", "10"),
    ],
)
def test_bad_auth_limits_fail_start_up(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        AuthConfig.from_env({**BASE_ENV, name: value})


# ------------------------------------------------------------------ the lockout schedule
def test_the_lock_doubles_from_the_threshold_up_to_the_cap() -> None:
    policy = LockoutPolicy(threshold=5, base_s=60, max_s=900, window_s=900)
    assert [policy.lock_s(n) for n in range(1, 11)] == [0, 0, 0, 0, 60, 120, 240, 480, 900, 900]
    assert policy.lock_s(10_000) == 900


# ------------------------------------------------------------------ the plan cache
class FakePlans:
    """A PlanSource that counts queries and can be made to fail or wait."""

    def __init__(self, plans: dict[str, str]) -> None:
        self.plans = plans
        self.queries = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    async def plan_of(self, tenant_id: str) -> str | None:
        self.queries += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("database down")
        return self.plans.get(tenant_id)


async def test_plans_are_cached_for_their_ttl() -> None:
    source = FakePlans({"t1": "starter"})
    plans = TenantPlans(source, ttl_s=60)
    assert await plans.plan_of("t1") == "starter"
    source.plans["t1"] = "enterprise"
    assert await plans.plan_of("t1") == "starter"
    assert source.queries == 1
    assert await plans.plan_of("gone") is None


async def test_an_expired_plan_is_read_again() -> None:
    source = FakePlans({"t1": "starter"})
    plans = TenantPlans(source, ttl_s=0)
    await plans.plan_of("t1")
    source.plans["t1"] = "enterprise"
    assert await plans.plan_of("t1") == "enterprise"


async def test_concurrent_misses_share_one_query() -> None:
    source = FakePlans({"t1": "free"})
    source.gate = asyncio.Event()
    plans = TenantPlans(source, ttl_s=60)
    waiting = [asyncio.create_task(plans.plan_of("t1")) for _ in range(20)]
    await asyncio.sleep(0.01)
    source.gate.set()
    assert await asyncio.gather(*waiting) == ["free"] * 20
    assert source.queries == 1


async def test_a_failed_refresh_falls_back_to_the_stale_plan() -> None:
    source = FakePlans({"t1": "professional"})
    plans = TenantPlans(source, ttl_s=0)
    await plans.plan_of("t1")
    source.fail = True
    assert await plans.plan_of("t1") == "professional"
    with pytest.raises(OSError, match="database down"):
        await plans.plan_of("never-seen")


async def test_the_cache_is_bounded() -> None:
    source = FakePlans({})
    plans = TenantPlans(source, ttl_s=60, max_entries=3)
    for tenant in ("a", "b", "c", "d"):
        await plans.plan_of(tenant)
    await plans.plan_of("d")
    await plans.plan_of("a")
    assert source.queries == 5  # "a" was evicted, "d" was not


# ------------------------------------------------------------------ Redis down
@pytest.fixture
async def dead_redis() -> AsyncIterator[aioredis.Redis]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    yield client
    await client.aclose()


async def test_a_limiter_without_redis_says_so(dead_redis: aioredis.Redis) -> None:
    with pytest.raises(RateLimiterUnavailable):
        await RateLimiter(dead_redis, timeout_s=0.1).hit("rl:test:x", Rate.per(1, 1))


async def test_request_limits_fail_open_and_count_it(dead_redis: aioredis.Redis) -> None:
    limit = Limit(
        RateLimiter(dead_redis, timeout_s=0.1),
        service="unit",
        name="fail_open",
        message="slow down",
    )
    errors = RATE_LIMIT_ERRORS.labels("unit", "fail_open")
    before = errors._value.get()
    for _ in range(3):
        await limit.enforce("198.51.100.7", Rate.per(1, 3600))
    assert errors._value.get() == before + 3


async def test_the_lockout_fails_closed(dead_redis: aioredis.Redis) -> None:
    lockout = LoginLockout(dead_redis, timeout_s=0.2)
    with pytest.raises(Unavailable):
        await lockout.check("ada@example.com")
    # A proven password still logs in: resetting is best effort.
    await lockout.record_success("ada@example.com")


async def test_costs_beyond_the_burst_are_refused_up_front(dead_redis: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="cost"):
        await RateLimiter(dead_redis, timeout_s=0.1).hit("rl:test:x", Rate.per(2, 1), cost=3)
