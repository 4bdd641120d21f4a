"""Redis access: a client known to answer before the service starts serving, and its calls
bounded, timed and their failures counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from services.common.config import redact_url
from services.common.errors import DependencyUnavailableError, Unavailable

# What a Redis call raises when Redis cannot answer: redis-py's errors (connection, timeout,
# error replies), the socket's, and our own timeout.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# The `service` label of a client opened without a name (tests, tools).
UNNAMED = "unnamed"

_T = TypeVar("_T")

COMMAND_SECONDS = Histogram(
    "catalytic_redis_command_duration_seconds",
    "Time of a Redis call as the service waits for it (a denylist check, a rate-limit or"
    " lockout script), failures included, by service.",
    ["service"],
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
    ),
)
ERRORS = Counter(
    "catalytic_redis_errors_total",
    "Redis calls that failed (no connection, no answer within the caller's timeout, an error"
    " reply), by service; the caller then fails open or closed as its module says.",
    ["service"],
)


class RedisUnavailableError(DependencyUnavailableError):
    """Redis could not be reached at start-up."""


async def open_redis(
    url: str, *, service: str | None = None, connect_timeout_s: float = 5.0
) -> aioredis.Redis:
    """A client for `url` that answered PING, or RedisUnavailableError; values are bytes.

    `service` names the client's connections (CLIENT LIST shows it) and labels its metrics.
    """
    client = aioredis.Redis.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=connect_timeout_s,
        # Idle connections are re-checked before use, so a Redis restart costs no request.
        health_check_interval=30,
        client_name=service,
    )
    try:
        await asyncio.wait_for(client.ping(), connect_timeout_s)
    except REDIS_FAILURES as exc:
        await client.aclose()
        raise RedisUnavailableError(
            f"cannot connect to Redis at {redact_url(url)} within {connect_timeout_s:g} s"
        ) from exc
    return client


def service_of(client: object) -> str:
    """The name open_redis gave the client, the label of its metrics; UNNAMED for others."""
    pool = getattr(client, "connection_pool", None)
    settings = getattr(pool, "connection_kwargs", None)
    name = settings.get("client_name") if isinstance(settings, dict) else None
    return name if isinstance(name, str) and name else UNNAMED


class RedisCalls:
    """Runs one component's Redis commands within its timeout; times every call and counts the
    failed ones (catalytic_redis_*), which it re-raises for the caller to map."""

    def __init__(self, client: object, timeout_s: float) -> None:
        service = service_of(client)
        self.timeout_s = timeout_s
        # Bound once: a call costs one observe, no label lookup.
        self._seconds = COMMAND_SECONDS.labels(service)
        self._errors = ERRORS.labels(service)

    async def __call__(self, command: Awaitable[_T]) -> _T:
        started = time.perf_counter()
        try:
            # asyncio.timeout, not wait_for: no extra task per call.
            async with asyncio.timeout(self.timeout_s):
                return await command
        except REDIS_FAILURES:
            self._errors.inc()
            raise
        finally:
            self._seconds.observe(time.perf_counter() - started)

    async def or_unavailable(
        self, command: Awaitable[_T], message: str, retry_after_s: float | None = None
    ) -> _T:
        """The call, failing closed: Unavailable(`message`) when Redis cannot answer."""
        try:
            return await self(command)
        except REDIS_FAILURES as exc:
            raise Unavailable(message, retry_after_s=retry_after_s) from exc
