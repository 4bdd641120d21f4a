"""The GCRA limiter and the log-in lockout against the stack's real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from devstack import Stack
from services.auth.lockout import LOCKED, LockoutPolicy, LoginLockout, lockout_keys
from services.common.cache import open_redis
from services.common.errors import ResourceExhausted
from services.common.ratelimit import (
    LEASE_MAX_AGE_S,
    RATE_LIMITED,
    LeasedLimit,
    Limit,
    Rate,
    RateLimiter,
    lease_size,
    limit_key,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = await open_redis(stack.env["REDIS_URL"])
    yield client
    await client.aclose()


def unique() -> str:
    return uuid.uuid4().hex


async def wait_until_allowed(limiter: RateLimiter, key: str, rate: Rate, within_s: float) -> float:
    """Seconds until `key` admits a request again (bounded); the request is spent."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if (await limiter.hit(key, rate)).allowed:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} still refused after {within_s} s")


# ------------------------------------------------------------------ the limiter
async def test_n_allowed_then_refused_with_when_to_retry(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    key = limit_key("test", unique())
    rate = Rate.per(3, 1.5)
    decisions = [await limiter.hit(key, rate) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert 0 < refused.retry_after_s <= 0.5
    waited = await wait_until_allowed(limiter, key, rate, within_s=2)
    # The refusal said exactly when the next request would pass.
    assert waited <= refused.retry_after_s + 0.2


async def test_a_full_bucket_comes_back_after_the_period(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    key = limit_key("test", unique())
    rate = Rate.per(2, 1)
    assert all([(await limiter.hit(key, rate)).allowed for _ in range(2)])
    assert not (await limiter.hit(key, rate)).allowed
    await asyncio.sleep(1.05)
    assert [(await limiter.hit(key, rate)).allowed for _ in range(3)] == [True, True, False]


async def test_burst_and_cost(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    key = limit_key("test", unique())
    rate = Rate.per(1, 10, burst=5)
    assert (await limiter.hit(key, rate, cost=4)).remaining == 1
    refused = await limiter.hit(key, rate, cost=2)
    assert not refused.allowed
    assert 9 < refused.retry_after_s <= 10
    assert (await limiter.hit(key, rate, cost=1)).allowed


async def test_keys_expire_when_the_bucket_is_full_again(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    key = limit_key("test", unique())
    await limiter.hit(key, Rate.per(10, 3600))
    ttl_ms = await redis.pttl(key)
    assert 0 < ttl_ms <= 360_000


async def test_replicas_share_one_budget_atomically(stack: Stack) -> None:
    clients = [await open_redis(stack.env["REDIS_URL"]) for _ in range(3)]
    try:
        limiters = [RateLimiter(client) for client in clients]
        key = limit_key("test", unique())
        rate = Rate.per(10, 60)
        hits = [limiters[i % 3].hit(key, rate) for i in range(60)]
        decisions = await asyncio.gather(*hits)
        assert sum(d.allowed for d in decisions) == 10
    finally:
        for client in clients:
            await client.aclose()


async def test_a_refusal_is_resource_exhausted_and_counted(redis: aioredis.Redis) -> None:
    limit = Limit(RateLimiter(redis), service="itest", name="demo", message="slow down")
    subject = unique()
    counter = RATE_LIMITED.labels("itest", "demo")
    before = counter._value.get()
    await limit.enforce(subject, Rate.per(1, 60))
    with pytest.raises(ResourceExhausted) as caught:
        await limit.enforce(subject, Rate.per(1, 60))
    assert caught.value.retry_after_s is not None
    assert 59 < caught.value.retry_after_s <= 60
    assert counter._value.get() == before + 1


# ------------------------------------------------------------------ the lockout
FAST = LockoutPolicy(threshold=3, base_s=1, max_s=2, window_s=2)


def email() -> str:
    return f"lockout-{unique()[:12]}@example.com"


async def fail(lockout: LoginLockout, address: str, times: int) -> None:
    for _ in range(times):
        await lockout.check(address)
        await lockout.record_failure(address)


async def locked_for(lockout: LoginLockout, address: str) -> float:
    with pytest.raises(ResourceExhausted) as caught:
        await lockout.check(address)
    assert caught.value.message == LOCKED
    assert caught.value.retry_after_s is not None
    return caught.value.retry_after_s


async def test_locks_after_the_threshold(redis: aioredis.Redis) -> None:
    lockout = LoginLockout(redis, FAST)
    address = email()
    await fail(lockout, address, 3)
    assert 0.5 < await locked_for(lockout, address) <= 1.0


async def test_below_the_threshold_nothing_is_locked(redis: aioredis.Redis) -> None:
    lockout = LoginLockout(redis, FAST)
    address = email()
    await fail(lockout, address, 2)
    await lockout.check(address)


async def test_unknown_and_known_addresses_get_the_same_answer(redis: aioredis.Redis) -> None:
    # The lockout never looks an address up: a registered e-mail and one nobody ever
    # registered are counted, locked and answered alike, so the answer reveals nothing.
    lockout = LoginLockout(redis, FAST)
    known, unknown = email(), email()
    await fail(lockout, known, 3)
    await fail(lockout, unknown, 3)
    answers = []
    for address in (known, unknown):
        with pytest.raises(ResourceExhausted) as caught:
            await lockout.check(address)
        answers.append(
            (type(caught.value), caught.value.message, round(caught.value.retry_after_s or 0))
        )
    assert answers[0] == answers[1]


async def test_unlocks_after_the_lock_and_backs_off_on_the_next_failure(
    redis: aioredis.Redis,
) -> None:
    lockout = LoginLockout(redis, FAST)
    address = email()
    await fail(lockout, address, 3)
    await asyncio.sleep(await locked_for(lockout, address) + 0.05)
    await fail(lockout, address, 1)
    # The fourth failure doubles the lock (capped at max_s).
    assert 1.5 < await locked_for(lockout, address) <= 2.0


async def test_the_count_is_forgotten_after_the_window(redis: aioredis.Redis) -> None:
    lockout = LoginLockout(redis, LockoutPolicy(threshold=3, base_s=1, max_s=2, window_s=1))
    address = email()
    await fail(lockout, address, 2)
    await asyncio.sleep(1.1)
    await fail(lockout, address, 2)
    await lockout.check(address)


async def test_success_resets_the_count_and_lifts_the_lock(redis: aioredis.Redis) -> None:
    lockout = LoginLockout(redis, FAST)
    address = email()
    await fail(lockout, address, 2)
    await lockout.check(address)
    await lockout.record_success(address)
    await fail(lockout, address, 2)
    await lockout.check(address)  # would be the fourth counted attempt without the reset
    await lockout.record_success(address)
    assert await redis.exists(*lockout_keys(address)) == 0


async def test_parallel_guesses_cannot_pass_the_threshold(redis: aioredis.Redis) -> None:
    lockout = LoginLockout(redis, FAST)
    address = email()
    results = await asyncio.gather(
        *(lockout.check(address) for _ in range(30)), return_exceptions=True
    )
    counted = sorted(r for r in results if isinstance(r, int))
    assert counted == list(range(1, FAST.threshold + 1)), "each admitted attempt has its number"
    assert all(isinstance(r, ResourceExhausted) for r in results if not isinstance(r, int))


async def test_lockout_keys_expire(redis: aioredis.Redis) -> None:
    lockout = LoginLockout(redis, FAST)
    address = email()
    await fail(lockout, address, 3)
    attempts, lock = lockout_keys(address)
    assert 0 < await redis.pttl(lock) <= 1000
    assert 0 < await redis.pttl(attempts) <= 3000


# ------------------------------------------------------------------ leases
class CountingLimiter(RateLimiter):
    """The real limiter, counting its round trips to Redis."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis)
        self.hits = 0

    async def hit(self, key: str, rate: Rate, *, cost: int = 1):  # type: ignore[no-untyped-def]
        self.hits += 1
        return await super().hit(key, rate, cost=cost)


async def admitted(limit: LeasedLimit, subject: str, rate: Rate) -> bool:
    try:
        await limit.enforce(subject, rate)
    except ResourceExhausted:
        return False
    return True


async def test_a_lease_pays_for_many_requests_in_one_round_trip(redis: aioredis.Redis) -> None:
    limiter = CountingLimiter(redis)
    leased = LeasedLimit(Limit(limiter, service="test", name="lease", message="over"))
    rate = Rate.per(1000, 1)
    assert lease_size(rate) == 50
    subject = unique()
    assert all([await admitted(leased, subject, rate) for _ in range(500)])
    assert limiter.hits == 10


async def test_a_rate_beyond_the_buckets_resolution_still_leases(redis: aioredis.Redis) -> None:
    """A billion a second (the load tests' lifted limits) is a microsecond a request in the
    bucket, a million a second: leases sized on that keep being granted, instead of outrunning
    the bucket after a few seconds and leaving every request to ask Redis alone."""
    now = [1000.0]
    limiter = CountingLimiter(redis)
    leased = LeasedLimit(
        Limit(limiter, service="test", name="lease", message="over"), clock=lambda: now[0]
    )
    rate = Rate.per(1_000_000_000, 1)
    assert lease_size(rate) == 50_000
    subject = unique()
    for _ in range(40):  # forty leases, each claimed as the last one lapses unspent
        assert await admitted(leased, subject, rate)
        now[0] += 1.5
    assert limiter.hits == 40


async def test_leases_never_admit_beyond_the_limit_across_replicas(
    redis: aioredis.Redis,
) -> None:
    """Two processes' worth of leases on one budget: together they admit the budget (plus
    what the bucket refills meanwhile), never more, and then refuse with a retry time."""
    replicas = [
        LeasedLimit(Limit(RateLimiter(redis), service="test", name="lease", message="over"))
        for _ in range(2)
    ]
    rate = Rate.per(100, 100)  # 1 per second refills: the test takes well under a second
    assert lease_size(rate) == 5
    subject = unique()
    allowed = 0
    started = time.monotonic()
    for turn in range(300):
        allowed += await admitted(replicas[turn % 2], subject, rate)
    refills = int(time.monotonic() - started) + 1
    assert 100 <= allowed <= 100 + refills
    with pytest.raises(ResourceExhausted) as refused:
        await replicas[0].enforce(subject, rate)
    assert refused.value.retry_after_s is not None
    assert refused.value.retry_after_s > 0


async def test_small_rates_ask_redis_every_time_and_stay_exact(redis: aioredis.Redis) -> None:
    limiter = CountingLimiter(redis)
    leased = LeasedLimit(Limit(limiter, service="test", name="lease", message="over"))
    rate = Rate.per(10, 60)
    assert lease_size(rate) == 1
    subject = unique()
    results = [await admitted(leased, subject, rate) for _ in range(11)]
    assert results == [True] * 10 + [False]
    assert limiter.hits == 11


async def test_an_unspent_lease_lapses(redis: aioredis.Redis) -> None:
    now = [1000.0]
    limiter = CountingLimiter(redis)
    leased = LeasedLimit(
        Limit(limiter, service="test", name="lease", message="over"), clock=lambda: now[0]
    )
    rate = Rate.per(1000, 1)
    subject = unique()
    await leased.enforce(subject, rate)
    await leased.enforce(subject, rate)
    assert limiter.hits == 1
    now[0] += LEASE_MAX_AGE_S
    await leased.enforce(subject, rate)
    assert limiter.hits == 2


# ------------------------------------------------------------------ Redis loses everything
# Not the stack's database 0: flushing that would also make its services rebuild the denylist.
LOST_REDIS_DB = 3


@pytest.fixture
async def flushable(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    client = await open_redis(stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{LOST_REDIS_DB}")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def test_after_a_flush_the_limits_start_counting_again(flushable: aioredis.Redis) -> None:
    """ADR 57: losing the rate-limit keys forgets what was spent, nothing else; the next
    requests count from a full bucket and are refused again once it is empty."""
    limiter = RateLimiter(flushable)
    key = limit_key("test", unique())
    rate = Rate.per(3, 60)
    assert [(await limiter.hit(key, rate)).allowed for _ in range(4)] == [True] * 3 + [False]
    await flushable.flushdb()
    assert [(await limiter.hit(key, rate)).allowed for _ in range(4)] == [True] * 3 + [False]


async def test_after_a_flush_the_lockout_counts_again(flushable: aioredis.Redis) -> None:
    """A flush lifts a lock and forgets the failures (a guesser gains one threshold's worth of
    attempts); the next failures lock the address again."""
    lockout = LoginLockout(flushable, FAST)
    address = email()
    await fail(lockout, address, 3)
    await locked_for(lockout, address)
    await flushable.flushdb()
    await fail(lockout, address, 3)
    assert 0.5 < await locked_for(lockout, address) <= 1.0


async def test_a_forgiven_attempt_does_not_count(redis: aioredis.Redis) -> None:
    # Attempts the service could not judge (the database was down) are taken back: however
    # many, they never lock; and one taken back at the threshold lifts the lock it set.
    lockout = LoginLockout(redis, FAST)
    address = email()
    await fail(lockout, address, 2)
    for _ in range(5):
        await lockout.check(address)
        await lockout.forgive(address)
    await lockout.check(address)  # counted third: it sets the lock
    await lockout.forgive(address)
    await fail(lockout, address, 1)  # allowed: the lock went with the attempt; this one locks
    assert 0.5 < await locked_for(lockout, address) <= 1.0
