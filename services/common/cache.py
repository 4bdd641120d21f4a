"""Redis access: a client that is known to answer before the service starts serving."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.config import redact_url
from services.common.errors import DependencyUnavailableError


class RedisUnavailableError(DependencyUnavailableError):
    """Redis could not be reached at start-up."""


async def open_redis(url: str, *, connect_timeout_s: float = 5.0) -> aioredis.Redis:
    """A client for `url` that answered PING, or RedisUnavailableError; values are bytes."""
    client = aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=connect_timeout_s,
        # Idle connections are re-checked before use, so a Redis restart costs no request.
        health_check_interval=30,
    )
    try:
        await asyncio.wait_for(client.ping(), connect_timeout_s)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        raise RedisUnavailableError(
            f"cannot connect to Redis at {redact_url(url)} within {connect_timeout_s:g} s"
        ) from exc
    return client
