"""The Redis drill (ADR 57): losing Redis never lets a revoked credential in.

A token is revoked (logout) and an API key deleted; then the session stack's Redis loses
everything, once by FLUSHALL and once by a restart of the redis-server process without its
files. Every call made with the revoked credentials from then on is refused: 503 while the
services fail closed, 401 once the denylist is rebuilt from PostgreSQL, never 200. A valid
token works again by itself, and so do the rate limits and everything else that lives in
Redis. Redis is running again when a test ends, whatever happens, so later tests find the
stack as it was.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
import redis

from devstack import Stack
from devstack.services import SERVICES
from tests.e2e.helpers import Tenant, assert_status_body

pytestmark = pytest.mark.e2e

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
# One authenticated route per service.
ROUTES = ("/v1/users/me", "/v1/lattices", "/v1/webhooks")
RECOVERY_S = 30.0
LATTICE = {"name": "after-redis-loss", "dimensions": 2, "size": 4, "constant": {"value": 1}}


@pytest.fixture
def redis_client(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.env["REDIS_URL"], socket_timeout=5)
    yield client
    client.close()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def fresh_session(gateway: httpx.Client, tenant: Tenant) -> dict[str, str]:
    reply = gateway.post(
        "/v1/auth/login", json={"email": tenant.email, "password": tenant.password}
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, str] = reply.json()
    return body


def revoked_credentials(gateway: httpx.Client, tenant: Tenant) -> list[dict[str, str]]:
    """A logged-out access token and a deleted API key, each refused everywhere, the key
    verified by every service just before (so their caches hold it for 30 s more)."""
    token = fresh_session(gateway, tenant)["access_token"]
    reply = gateway.post("/v1/api-keys", json={"name": "drill"}, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    key_id, key = reply.json()["id"], {"x-api-key": reply.json()["key"]}
    for route in ROUTES:
        for headers in (bearer(token), key):
            reply = gateway.get(route, headers=headers)
            assert reply.status_code == 200, (route, reply.text)

    reply = gateway.post("/v1/auth/logout", json={}, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    reply = gateway.delete(f"/v1/api-keys/{key_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    credentials = [bearer(token), key]
    for route in ROUTES:
        for headers in credentials:
            assert_status_body(gateway.get(route, headers=headers), 401, UNAUTHENTICATED)
    return credentials


def refused_until_rebuilt(gateway: httpx.Client, credentials: list[dict[str, str]]) -> list[int]:
    """Asks every service with every revoked credential until all answer 401; fails at the
    first 200 (or anything but 401 and 503). The statuses seen, in order."""
    seen: list[int] = []
    deadline = time.monotonic() + RECOVERY_S
    while True:
        statuses = []
        for route in ROUTES:
            for headers in credentials:
                reply = gateway.get(route, headers=headers)
                assert reply.status_code in (401, 503), (
                    f"a revoked credential got {reply.status_code} on {route}: {reply.text}"
                )
                code = UNAUTHENTICATED if reply.status_code == 401 else UNAVAILABLE
                assert_status_body(reply, reply.status_code, code)
                statuses.append(reply.status_code)
        seen += statuses
        if set(statuses) == {401}:
            return seen
        assert time.monotonic() < deadline, f"still not 401 after {RECOVERY_S} s: {seen}"
        time.sleep(0.1)


def works_again(gateway: httpx.Client, tenant: Tenant) -> None:
    """The tenant's own valid token works on every service, and a write goes through."""
    deadline = time.monotonic() + RECOVERY_S
    for route in ROUTES:
        while (reply := gateway.get(route, headers=tenant.headers)).status_code != 200:
            assert reply.status_code == 503, (route, reply.text)
            assert time.monotonic() < deadline, f"{route} not back after {RECOVERY_S} s"
            time.sleep(0.1)
    made = gateway.post("/v1/lattices", json=LATTICE, headers=tenant.headers)
    assert made.status_code == 200, made.text
    read = gateway.get(f"/v1/lattices/{made.json()['id']}", headers=tenant.headers)
    assert read.status_code == 200, read.text


def rebuilds(stack: Stack) -> float:
    """Denylist rebuilds the three services ran, summed over their /metrics."""
    total = 0.0
    for service in SERVICES:
        text = httpx.get(stack.metrics_url(service), timeout=5, trust_env=False).text
        total += sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("catalytic_denylist_rebuilds_total{") and 'outcome="loaded"' in line
        )
    return total


def test_a_flushall_never_lets_a_revoked_credential_in(
    stack: Stack, gateway: httpx.Client, tenant: Tenant, redis_client: redis.Redis
) -> None:
    credentials = revoked_credentials(gateway, tenant)
    before = rebuilds(stack)

    redis_client.flushall()
    seen = refused_until_rebuilt(gateway, credentials)
    print(f"after FLUSHALL, the revoked credentials got {seen}")

    works_again(gateway, tenant)
    assert rebuilds(stack) >= before + 1
    assert redis_client.exists("denylist:loaded") == 1


def test_a_restart_without_its_files_never_lets_a_revoked_credential_in(
    stack: Stack, gateway: httpx.Client, tenant: Tenant
) -> None:
    assert stack.redis is not None, "the test stack runs its own Redis"
    credentials = revoked_credentials(gateway, tenant)

    stack.redis.stop()
    try:
        # While Redis is away, everything authenticated fails closed.
        for headers in (*credentials, tenant.headers):
            assert_status_body(gateway.get("/v1/lattices", headers=headers), 503, UNAVAILABLE)
        shutil.rmtree(stack.redis.data_dir)  # its append-only file: it comes back empty
    finally:
        stack.redis.start()

    seen = refused_until_rebuilt(gateway, credentials)
    print(f"after a restart without data, the revoked credentials got {seen}")
    works_again(gateway, tenant)


def test_a_restart_with_its_files_is_rebuilt_too(
    stack: Stack, gateway: httpx.Client, tenant: Tenant, redis_client: redis.Redis
) -> None:
    """The append-only file may lack the last second of writes, so a restarted Redis is not
    trusted even when it kept its data: its marker names the process before the restart."""
    assert stack.redis is not None, "the test stack runs its own Redis"
    credentials = revoked_credentials(gateway, tenant)
    assert redis_client.exists("denylist:loaded") == 1
    before = rebuilds(stack)

    stack.redis.stop()
    stack.redis.start()

    refused_until_rebuilt(gateway, credentials)
    works_again(gateway, tenant)
    assert rebuilds(stack) >= before + 1
