"""The Redis denylist: how long entries live, and failing closed when Redis is away or hung.

What it does against a real Redis and PostgreSQL (the marker, the rebuild, losing Redis) is in
tests/integration/test_denylist_rebuild.py.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.denylist import (
    API_KEY_MARKER_TTL_S,
    Denylist,
    api_key_marker_ttl,
    remaining_ttl,
)
from services.common.errors import Unavailable
from services.common.revocations import Revocations
from tests.unit.common.silent_server import silent_server

# Port 1 on loopback refuses connections at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"


class NoRevocations:
    async def unexpired(self, api_key_window_s: float) -> Revocations:
        return Revocations([], [])


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


@pytest.mark.parametrize(
    ("revoked_at", "now", "expected"),
    [
        (1000.0, 1000.0, API_KEY_MARKER_TTL_S),  # deleted just now: the whole marker life
        (1000.0, 1030.5, API_KEY_MARKER_TTL_S - 30),  # partial seconds round up
        (1000.0, 1000.0 + API_KEY_MARKER_TTL_S, 1),  # at the end: at least 1 s
    ],
)
def test_a_rebuilt_api_key_marker_lives_out_its_original_life(
    revoked_at: float, now: float, expected: int
) -> None:
    assert api_key_marker_ttl(revoked_at, now=now) == expected


async def test_a_dead_redis_fails_closed() -> None:
    client = aioredis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    try:
        listed = Denylist(client, NoRevocations())
        with pytest.raises(Unavailable):
            await listed.contains("abc")
        with pytest.raises(Unavailable):
            await listed.contains_api_key("k1")
        with pytest.raises(Unavailable):
            await listed.add("abc", 10)
        await listed.aclose()
    finally:
        await client.aclose()


async def test_a_hung_redis_fails_closed_within_the_timeout() -> None:
    with silent_server() as url:
        client = aioredis.Redis.from_url(url)
        try:
            listed = Denylist(client, NoRevocations(), timeout_s=0.05)
            with pytest.raises(Unavailable):
                await listed.contains("abc")
        finally:
            await client.aclose()
