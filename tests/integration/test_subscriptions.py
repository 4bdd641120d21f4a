"""The subscription record between the webhook service and the event writers, on a real Redis
(ADR 69): a widening wins over any older record, and an absent record means "write"."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from devstack import Stack
from services.common.cache import open_redis
from services.common.subscriptions import (
    ALL,
    SubscriptionNotices,
    Subscriptions,
    subscribed_key,
    wanted,
)

pytestmark = pytest.mark.integration

REDIS_DB = 4


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    url = stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = await open_redis(url, service="subscriptions-test")
    yield client
    await client.aclose()


def test_what_is_written() -> None:
    assert wanted(None, "path.computed")  # unknown: written
    assert wanted(ALL, "path.computed")
    assert wanted(b"lattice.created,path.computed", "path.computed")
    assert not wanted(b"lattice.created", "path.computed")
    assert not wanted(b"", "path.computed")


async def test_a_record_never_replaces_a_widening(redis: aioredis.Redis) -> None:
    notices, writer = SubscriptionNotices(redis), Subscriptions(redis)
    tenant = str(uuid.uuid4())
    assert await writer.wants(tenant, "path.computed")
    await notices.record(tenant, [])
    assert not await writer.wants(tenant, "path.computed")
    # An endpoint is being created: the widening overwrites, an older record cannot.
    await notices.widen(tenant)
    await notices.record(tenant, [])
    assert await redis.get(subscribed_key(tenant)) == ALL
    assert await writer.wants(tenant, "path.computed")


async def test_records_of_one_tenant_are_spaced(redis: aioredis.Redis) -> None:
    notices = SubscriptionNotices(redis)
    tenant = str(uuid.uuid4())
    reads: list[str] = []

    async def subscribed_types(tenant_id: str) -> list[str]:
        reads.append(tenant_id)
        return ["lattice.created"]

    for _ in range(50):
        await notices.record_unwanted(tenant, subscribed_types)
    assert reads == [tenant]
    assert await redis.get(subscribed_key(tenant)) == b"lattice.created"


async def test_redis_down_means_written() -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        assert await Subscriptions(dead).wants(str(uuid.uuid4()), "path.computed")
    finally:
        await dead.aclose()
