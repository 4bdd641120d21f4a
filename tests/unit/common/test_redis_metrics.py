"""Redis calls as the services see them: each one timed, failures (refused, hung) counted under
the name the client was opened with."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from services.common.cache import UNNAMED, RedisCalls, service_of
from services.common.denylist import Denylist
from services.common.errors import Unavailable
from services.common.revocations import Revocations
from tests.unit.common.silent_server import silent_server

DEAD_REDIS = "redis://127.0.0.1:1/0"


class NoRevocations:
    async def unexpired(self, api_key_window_s: float) -> Revocations:
        return Revocations([], [])


def sample(name: str, service: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": service}) or 0.0


def test_the_label_is_the_client_name() -> None:
    named = aioredis.Redis.from_url(DEAD_REDIS, client_name="redistest")
    assert service_of(named) == "redistest"
    assert service_of(aioredis.Redis.from_url(DEAD_REDIS)) == UNNAMED
    assert service_of(object()) == UNNAMED


async def test_a_successful_call_is_timed_not_counted() -> None:
    calls = RedisCalls(aioredis.Redis.from_url(DEAD_REDIS, client_name="redis-ok"), timeout_s=1)
    errors = sample("catalytic_redis_errors_total", "redis-ok")

    async def answer() -> int:
        return 7

    assert await calls(answer()) == 7
    assert sample("catalytic_redis_command_duration_seconds_count", "redis-ok") == 1
    assert sample("catalytic_redis_errors_total", "redis-ok") == errors == 0


async def test_refused_and_hung_calls_are_counted_and_timed() -> None:
    client = aioredis.Redis.from_url(DEAD_REDIS, client_name="redis-down", socket_connect_timeout=1)
    try:
        with pytest.raises(Unavailable):
            await Denylist(client, NoRevocations()).contains("jti")
    finally:
        await client.aclose()
    assert sample("catalytic_redis_errors_total", "redis-down") == 1

    with silent_server() as url:
        hung = aioredis.Redis.from_url(url, client_name="redis-down")
        try:
            with pytest.raises(Unavailable):
                await Denylist(hung, NoRevocations(), timeout_s=0.05).contains("jti")
        finally:
            await hung.aclose()
    assert sample("catalytic_redis_errors_total", "redis-down") == 2
    assert sample("catalytic_redis_command_duration_seconds_count", "redis-down") == 2
    assert sample("catalytic_redis_command_duration_seconds_sum", "redis-down") >= 0.05
