"""The Redis denylist: how long entries live, and failing closed when Redis is away."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.denylist import API_KEY_MARKER_TTL_S, Denylist, remaining_ttl
from services.common.errors import Unavailable

# Port 1 on loopback refuses connections at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("expires_at", "now", "expected"),
    [
        (1600.0, 1000.0, 600 + DEFAULT_LEEWAY_S),  # a fresh 10-minute token
        (1000.2, 1000.0, 1 + DEFAULT_LEEWAY_S),  # partial seconds round up
        (1000.0, 1000.0, DEFAULT_LEEWAY_S),  # at exp, still accepted within the leeway
        (995.0, 1000.0, 1),  # past exp and leeway: at least 1 s
        (0.0, 1000.0, 1),
    ],
)
def test_remaining_ttl_covers_lifetime_and_leeway(
    expires_at: float, now: float, expected: int
) -> None:
    assert remaining_ttl(expires_at, now=now) == expected


def test_remaining_ttl_without_leeway() -> None:
    assert remaining_ttl(1010.5, now=1000.0, leeway_s=0) == 11


@dataclass
class FakeRedis:
    values: dict[str, tuple[bytes, int]] = field(default_factory=dict)

    async def set(self, key: str, value: bytes, *, ex: int) -> bool:
        self.values[key] = (value, ex)
        return True

    async def exists(self, key: str) -> int:
        return int(key in self.values)


async def test_entries_are_namespaced_and_expire() -> None:
    fake = FakeRedis()
    listed = Denylist(fake)  # type: ignore[arg-type]
    await listed.add("abc", 605)
    await listed.add("zero", 0)
    await listed.add_api_key("k1")
    assert fake.values == {
        "denylist:jti:abc": (b"1", 605),
        "denylist:jti:zero": (b"1", 1),
        "denylist:api_key:k1": (b"1", API_KEY_MARKER_TTL_S),
    }
    assert await listed.contains("abc")
    assert not await listed.contains("k1")
    assert await listed.contains_api_key("k1")
    assert not await listed.contains_api_key("abc")


async def test_a_dead_redis_fails_closed() -> None:
    client = aioredis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    try:
        listed = Denylist(client)
        with pytest.raises(Unavailable):
            await listed.contains("abc")
        with pytest.raises(Unavailable):
            await listed.contains_api_key("k1")
        with pytest.raises(Unavailable):
            await listed.add("abc", 10)
    finally:
        await client.aclose()


async def test_a_hung_redis_fails_closed_within_the_timeout() -> None:
    class Hung:
        async def exists(self, key: str) -> int:
            await asyncio.sleep(10)
            return 0

    with pytest.raises(Unavailable):
        await Denylist(Hung(), timeout_s=0.05).contains("abc")  # type: ignore[arg-type]
