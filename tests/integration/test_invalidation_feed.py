"""A replica's local caches against a real Redis: entries dropped the moment their key is
written by anyone, fills that race a write not kept, and the feed failing closed (ADR 68).

Keys live in a Redis database of their own; tracking is server-wide, so writes elsewhere only
ever drop entries (never keep a stale one).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from devstack import Stack
from services.common.cache import open_redis
from services.common.denylist import JTI_KEY, LOADED_KEY, Denylist
from services.common.invalidation import InvalidationFeed
from services.common.local_cache import MISSING, LocalCache
from services.common.revocations import Revocations
from tests.unit.webhook.harness import eventually

pytestmark = pytest.mark.integration

REDIS_DB = 4
PREFIX = "feedtest:"


class NoRevocations:
    """The durable copy for a denylist whose Redis never loses it in these tests."""

    async def unexpired(self, api_key_window_s: float) -> Revocations:
        return Revocations(tokens=[], api_keys=[])


@pytest.fixture
def url(stack: Stack) -> str:
    return stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}"


@pytest.fixture
async def redis(url: str) -> AsyncIterator[aioredis.Redis]:
    client = await open_redis(url, service="invalidation-feed-test")
    yield client
    await client.aclose()


@pytest.fixture
async def feed(url: str) -> AsyncIterator[tuple[InvalidationFeed, LocalCache[str]]]:
    feed = InvalidationFeed(url, service="invalidation-feed-test", heartbeat_s=0.2)
    cache = feed.cache("test", PREFIX, max_entries=100, max_age_s=30)
    await feed.start()
    assert feed.live
    yield feed, cache
    await feed.aclose()


def key() -> str:
    return f"{PREFIX}{uuid.uuid4()}"


async def live(feed: InvalidationFeed) -> bool:
    return feed.live


async def test_a_write_by_another_client_drops_the_entry_before_the_next_lookup(
    redis: aioredis.Redis, feed: tuple[InvalidationFeed, LocalCache[str]]
) -> None:
    _, cache = feed
    for _ in range(200):
        name = key()
        await redis.set(name, b"old")
        assert await cache.fetch(name, lambda n=name: read(redis, n)) == "old"
        assert cache.get(name) == "old"
        await redis.set(name, b"new")
        # No wait: the push is queued before Redis answers the SET, and get() drains first.
        assert cache.get(name) is MISSING
        assert await cache.fetch(name, lambda n=name: read(redis, n)) == "new"


async def read(redis: aioredis.Redis, name: str) -> str:
    value = await redis.get(name)
    return value.decode() if value is not None else "-"


async def cached_entry(redis: aioredis.Redis, cache: LocalCache[str]) -> str:
    """A new key written with "v" and looked up through `cache`, which keeps it."""
    name = key()
    await redis.set(name, b"v")
    assert await cache.fetch(name, lambda: read(redis, name)) == "v"
    return name


async def test_a_fill_that_races_a_write_is_not_kept(
    redis: aioredis.Redis, feed: tuple[InvalidationFeed, LocalCache[str]]
) -> None:
    _, cache = feed
    name = key()
    await redis.set(name, b"old")

    async def stale_read() -> str:
        value = await read(redis, name)
        await redis.set(name, b"new")  # written after the lookup read, before it finished
        return value

    assert await cache.fetch(name, stale_read) == "old"
    assert cache.get(name) is MISSING
    assert await cache.fetch(name, lambda: read(redis, name)) == "new"
    assert cache.get(name) == "new"


async def test_a_flush_empties_the_cache(
    redis: aioredis.Redis, feed: tuple[InvalidationFeed, LocalCache[str]]
) -> None:
    _, cache = feed
    name = await cached_entry(redis, cache)
    assert len(cache) == 1
    await redis.flushdb()
    assert cache.get(name) is MISSING
    assert len(cache) == 0


async def test_a_lost_connection_turns_the_cache_off_until_the_feed_is_back(
    redis: aioredis.Redis, feed: tuple[InvalidationFeed, LocalCache[str]]
) -> None:
    live_feed, cache = feed
    name = await cached_entry(redis, cache)
    killed = await redis.execute_command(
        "CLIENT", "KILL", "USER", "default", "SKIPME", "yes", "LADDR", await laddr(redis)
    )
    assert killed >= 1
    # Not live from the next lookup on: nothing answered, nothing kept.
    assert cache.get(name) is MISSING
    assert not live_feed.live
    assert await cache.fetch(name, lambda: read(redis, name)) == "v"
    assert len(cache) == 0
    # Back within the reconnection back-off, empty.
    await eventually(lambda: live(live_feed), bool, within=5)
    assert cache.get(name) is MISSING
    await cache.fetch(name, lambda: read(redis, name))
    assert cache.get(name) == "v"


async def laddr(redis: aioredis.Redis) -> str:
    """The server's address as its clients see it (CLIENT KILL LADDR matches every client of
    the feed's; SKIPME keeps this test's own)."""
    for client in await redis.client_list():
        if client.get("name") == "invalidation-feed-test-invalidation":
            return str(client["laddr"])
    raise AssertionError("the feed's connection is not in CLIENT LIST")


async def test_an_unanswered_heartbeat_turns_the_cache_off(
    redis: aioredis.Redis, feed: tuple[InvalidationFeed, LocalCache[str]]
) -> None:
    """A Redis that stops answering (paused, partitioned) without closing the connection."""
    live_feed, cache = feed
    name = await cached_entry(redis, cache)
    await redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    try:
        await eventually(lambda: live(live_feed), lambda up: not up, within=3)
        assert cache.get(name) is MISSING
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
    await eventually(lambda: live(live_feed), bool, within=5)
    assert len(cache) == 0


async def test_a_revocation_holds_from_the_very_next_check(url: str, redis: aioredis.Redis) -> None:
    """Two denylists as two replicas: one caches 'not revoked', the other revokes; the first
    answers 'revoked' at once, every time."""
    feed = InvalidationFeed(url, service="invalidation-feed-test", heartbeat_s=0.2)
    local = feed.cache("denylist", "denylist:", max_entries=1000, max_age_s=30)
    await feed.start()
    checker = Denylist(redis, NoRevocations(), local=local)
    revoker = Denylist(redis, NoRevocations())
    try:
        await redis.set(LOADED_KEY, (await redis.info("server"))["run_id"].encode())
        for _ in range(200):
            jti = str(uuid.uuid4())
            assert not await checker.contains(jti)
            assert not await checker.contains(jti)  # from the local cache
            assert local.get(JTI_KEY.format(jti)) is False
            await revoker.add(jti, 60)
            assert await checker.contains(jti)
    finally:
        await redis.delete(LOADED_KEY)
        await checker.aclose()
        await revoker.aclose()
        await feed.aclose()


async def test_a_refused_handshake_leaves_the_feed_off_and_never_logs_the_password(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    scheme, _, rest = url.partition("://")
    # No such user: refused whether or not the server has a password.
    wrong = f"{scheme}://nobody-4f1c:not-the-password-4f1c@{rest}"
    feed = InvalidationFeed(wrong, service="invalidation-feed-test", heartbeat_s=0.2)
    cache = feed.cache("test", PREFIX, max_entries=10, max_age_s=30)
    with caplog.at_level("DEBUG", logger="catalytic.invalidation"):
        await feed.start(wait_s=0.5)
        try:
            assert not feed.live
            assert cache.get(key()) is MISSING
        finally:
            await feed.aclose()
    assert "refused HELLO" in caplog.text
    assert "not-the-password-4f1c" not in caplog.text
