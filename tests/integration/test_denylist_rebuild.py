"""The denylist when Redis loses it: rebuilt from PostgreSQL, failing closed until then (ADR 57).

Real Redis (a database number of its own, flushed at will) and a scratch PostgreSQL database
with every migration, as the services' application role.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from devstack import Stack
from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.cache import open_redis
from services.common.db import Database
from services.common.denylist import (
    API_KEY_KEY,
    API_KEY_MARKER_TTL_S,
    JTI_KEY,
    LOADED_KEY,
    REBUILD_LOCK_KEY,
    Denylist,
)
from services.common.errors import Unavailable
from services.common.revocations import PURGE_AFTER_S, PostgresRevocations, Revocations
from tests.unit.webhook.harness import Scratch

pytestmark = pytest.mark.integration

# Not the stack's database 0 (its services' denylist) nor 1 (tests/e2e/test_rate_limits.py).
REDIS_DB = 2
TOKEN_LIFE_S = 600
# The client name labels the metrics; one per test module, so counts are this module's own.
CLIENT = "denylist-rebuild-test"


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    url = stack.env["REDIS_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}"
    client = await open_redis(url, service=CLIENT)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@dataclass
class Source:
    """PostgresRevocations, counted, with something to do before each read (`before`)."""

    inner: PostgresRevocations
    before: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    reads: int = 0

    async def unexpired(self, api_key_window_s: float) -> Revocations:
        self.reads += 1
        if self.before:
            await self.before.pop(0)()
        return await self.inner.unexpired(api_key_window_s)


@pytest.fixture
def source(db: Database) -> Source:
    return Source(PostgresRevocations(db))


@pytest.fixture
async def denylist(redis: aioredis.Redis, source: Source) -> AsyncIterator[Denylist]:
    listed = Denylist(redis, source)
    yield listed
    await listed.aclose()


async def revoke(db: Database, denylist: Denylist, *, expires_in: float = TOKEN_LIFE_S) -> str:
    """What logout does: the durable record first, then the denylist entry."""
    jti = str(uuid.uuid4())
    expires_at = time.time() + expires_in
    await PostgresRevocations(db).record(str(uuid.uuid4()), jti, expires_at)
    await denylist.add(jti, max(1, round(expires_in) + DEFAULT_LEEWAY_S))
    return jti


def rebuilds(outcome: str) -> float:
    labels = {"service": CLIENT, "outcome": outcome}
    return REGISTRY.get_sample_value("catalytic_denylist_rebuilds_total", labels) or 0.0


async def run_id(redis: aioredis.Redis) -> bytes:
    info = await redis.info("server")
    return str(info["run_id"]).encode()


# ---------------------------------------------------------------------------- losing Redis
async def test_a_revocation_survives_a_flush_and_nothing_else_is_listed(
    redis: aioredis.Redis, db: Database, denylist: Denylist, source: Source
) -> None:
    jti = await revoke(db, denylist)
    # A Redis that never held the marker (a fresh one) is rebuilt before the first answer.
    assert await denylist.contains(jti)
    assert await redis.get(LOADED_KEY) == await run_id(redis)
    assert source.reads == 1

    await redis.flushdb()
    assert await denylist.contains(jti)
    assert not await denylist.contains(str(uuid.uuid4()))
    assert source.reads == 2
    # Listed again for the rest of the token's life and the verifiers' leeway, no longer.
    ttl = await redis.ttl(JTI_KEY.format(jti))
    assert TOKEN_LIFE_S + DEFAULT_LEEWAY_S - 3 <= ttl <= TOKEN_LIFE_S + DEFAULT_LEEWAY_S


async def test_a_marker_from_another_redis_process_is_not_trusted(
    redis: aioredis.Redis, db: Database, denylist: Denylist, source: Source
) -> None:
    """Redis restarted from its files (which may lack the last writes) or a promoted replica:
    the marker names another process, so the list is rebuilt."""
    jti = await revoke(db, denylist)
    assert await denylist.contains(jti)
    await redis.set(LOADED_KEY, b"0" * 40)
    await redis.delete(JTI_KEY.format(jti))  # the write the files did not keep
    assert await denylist.contains(jti)
    assert source.reads == 2


async def test_only_tokens_a_verifier_may_still_accept_are_loaded(
    redis: aioredis.Redis, db: Database, denylist: Denylist
) -> None:
    live = await revoke(db, denylist)
    within_leeway = await revoke(db, denylist, expires_in=-1)
    expired = await revoke(db, denylist, expires_in=-(DEFAULT_LEEWAY_S + 30))
    await redis.flushdb()
    assert await denylist.contains(live)
    assert await denylist.contains(within_leeway)
    assert 1 <= await redis.ttl(JTI_KEY.format(within_leeway)) <= DEFAULT_LEEWAY_S
    assert not await denylist.contains(expired)


async def test_calls_and_replicas_share_one_rebuild(
    redis: aioredis.Redis, db: Database, denylist: Denylist, source: Source
) -> None:
    jti = await revoke(db, denylist)
    replica = Denylist(redis, source)
    try:
        answers = await asyncio.gather(
            *(listed.contains(jti) for listed in (denylist, replica) for _ in range(25))
        )
    finally:
        await replica.aclose()
    assert answers == [True] * 50
    assert source.reads == 1
    assert await redis.exists(REBUILD_LOCK_KEY) == 0


async def test_a_flush_during_the_rebuild_starts_it_again(
    redis: aioredis.Redis, db: Database, denylist: Denylist, source: Source
) -> None:
    """A flush between the claim and the marker wipes the claim: the marker is not set on a
    list that may have lost entries, and the rebuild starts over."""
    jti = await revoke(db, denylist)

    async def flush() -> None:
        await redis.flushdb()

    source.before.append(flush)
    loaded = rebuilds("loaded")
    assert await denylist.contains(jti)
    assert source.reads == 2
    assert rebuilds("loaded") == loaded + 1


async def test_a_failed_rebuild_fails_closed_and_the_next_call_retries(
    redis: aioredis.Redis, db: Database, denylist: Denylist, source: Source
) -> None:
    jti = await revoke(db, denylist)

    async def database_down() -> None:
        raise Unavailable("the database is not available; retry shortly")

    source.before.append(database_down)
    failed = rebuilds("failed")
    with pytest.raises(Unavailable):
        await denylist.contains(jti)
    assert rebuilds("failed") == failed + 1
    assert await redis.get(LOADED_KEY) is None
    assert await denylist.contains(jti)


async def test_a_slow_rebuild_fails_closed_meanwhile_and_finishes_alone(
    redis: aioredis.Redis, db: Database, source: Source
) -> None:
    listed = Denylist(redis, source, rebuild_wait_s=0.05)
    gate = asyncio.Event()
    jti = await revoke(db, listed)
    source.before.append(gate.wait)
    try:
        for _ in range(3):
            with pytest.raises(Unavailable):
                await listed.contains(jti)
        gate.set()
        deadline = time.monotonic() + 10
        while await redis.get(LOADED_KEY) is None:
            assert time.monotonic() < deadline, "the rebuild did not finish"
            await asyncio.sleep(0.01)
        assert await listed.contains(jti)
        assert source.reads == 1
    finally:
        await listed.aclose()


async def test_without_redis_the_check_fails_closed(db: Database, source: Source) -> None:
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    listed = Denylist(dead, source)
    try:
        with pytest.raises(Unavailable):
            await listed.contains(str(uuid.uuid4()))
    finally:
        await listed.aclose()
        await dead.aclose()
    assert source.reads == 0


# ---------------------------------------------------------------------------- API keys
def add_api_keys(scratch: Scratch, revoked_ago_s: dict[str, float | None]) -> None:
    """A tenant, its owner and one API key per entry, revoked that long ago (None: live)."""
    tenant, user = str(uuid.uuid4()), str(uuid.uuid4())
    scratch.add_tenant(tenant)
    scratch.query(
        "INSERT INTO users (id, tenant_id, email, password_hash, role)"
        " VALUES (%s, %s, %s, 'x', 'owner') RETURNING id",
        (user, tenant, f"{user}@example.com"),
    )
    for number, (key_id, ago) in enumerate(revoked_ago_s.items()):
        scratch.query(
            "INSERT INTO api_keys (id, tenant_id, user_id, name, prefix, secret_hash, role,"
            " revoked_at) VALUES (%s, %s, %s, 'k', %s, %s, 'member',"
            " CASE WHEN %s::float8 IS NULL THEN NULL"
            " ELSE now() - make_interval(secs => %s::float8) END) RETURNING id",
            (key_id, tenant, user, f"{'a' * 11}{'bcdefg'[number]}", "0" * 64, ago, ago),
        )


async def test_recently_deleted_api_keys_are_marked_again(
    redis: aioredis.Redis, scratch: Scratch, denylist: Denylist
) -> None:
    """A verifier may cache a key for 30 s after it was deleted; the marker covers that."""
    recent, old, live = (str(uuid.uuid4()) for _ in range(3))
    add_api_keys(scratch, {recent: 10.0, old: API_KEY_MARKER_TTL_S + 60.0, live: None})
    await redis.flushdb()
    assert await denylist.contains_api_key(recent)
    assert not await denylist.contains_api_key(old)
    assert not await denylist.contains_api_key(live)
    # The rest of its original life, not a new one.
    ttl = await redis.ttl(API_KEY_KEY.format(recent))
    assert API_KEY_MARKER_TTL_S - 10 - 3 <= ttl <= API_KEY_MARKER_TTL_S - 10


# ---------------------------------------------------------------------------- the durable log
async def test_each_logout_purges_long_expired_revocations_of_every_tenant(
    scratch: Scratch, db: Database
) -> None:
    log = PostgresRevocations(db)
    now = time.time()
    for tenant in (str(uuid.uuid4()), str(uuid.uuid4())):
        await log.record(tenant, f"old-{tenant}", now - PURGE_AFTER_S - 3600)
        await log.record(tenant, f"recent-{tenant}", now - 5)
    rows = scratch.query("SELECT jti FROM revoked_access_tokens ORDER BY jti")
    # Each logout purged the old rows there were, its own tenant's and the other's.
    assert [row[0].split("-")[0] for row in rows] == ["recent", "recent"]
    await log.record(str(uuid.uuid4()), "live", now + TOKEN_LIFE_S)
    assert await log.purge_expired() == 0
    assert len(scratch.query("SELECT jti FROM revoked_access_tokens")) == 3


async def test_a_tenant_sees_only_its_own_revocations(scratch: Scratch, db: Database) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    log = PostgresRevocations(db)
    await log.record(a, "token-of-a", time.time() + TOKEN_LIFE_S)
    for tenant, expected in ((a, ["token-of-a"]), (b, [])):
        rows = await db.tenant_statement(tenant, "SELECT jti FROM revoked_access_tokens")
        assert [row["jti"] for row in rows] == expected
    # The rebuild's view reads every tenant's, and writes nothing.
    async with db.lookup_transaction(denylist_rebuild="on") as conn:
        cur = await conn.execute("DELETE FROM revoked_access_tokens")
        assert cur.rowcount == 0
        cur = await conn.execute("SELECT tenant_id::text FROM revoked_access_tokens")
        assert [row["tenant_id"] for row in await cur.fetchall()] == [a]
