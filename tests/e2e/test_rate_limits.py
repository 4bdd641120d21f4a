"""Abuse limits through Envoy: 429, a `retry-after` header and a google.rpc.Status body.

A gateway of its own, rendered from the same template, sends auth traffic to an in-process auth
server with tiny limits (on its own Redis database), so these tests neither spend nor depend on
the shared stack's budget; lattice and webhook are the shared stack's.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from devstack import Stack, StackPorts
from devstack.envoy import Envoy
from gateway.render import GatewayConfig
from services.auth.config import AuthConfig
from services.auth.server import create_server
from services.common.cache import open_redis

pytestmark = pytest.mark.e2e

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
LOGIN_PER_MINUTE = 3
FREE_BURST = 3
PASSWORD = "e2e passphrase for rate limits"


@pytest.fixture
async def limited_gateway(stack: Stack, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    redis_url = stack.env["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    redis = await open_redis(redis_url)
    await redis.flushdb()
    await redis.aclose()
    config = AuthConfig.from_env(
        {
            "DATABASE_URL": stack.env["DATABASE_URL"],
            "REDIS_URL": redis_url,
            "AUTH_PORT": "0",
            "AUTH_METRICS_PORT": "0",
            "JWT_KEYS_DIR": str(tmp_path / "keys"),
            "DEFAULT_PLAN": "free",
            "RATE_LIMIT_LOGIN_PER_MINUTE": str(LOGIN_PER_MINUTE),
            "TENANT_RATE_LIMIT_FREE_PER_S": "1",
            "TENANT_RATE_LIMIT_FREE_BURST": str(FREE_BURST),
        }
    )
    auth = await create_server(config)
    await auth.set_serving()
    ports = StackPorts.free()
    (tmp_path / "logs").mkdir()
    envoy = Envoy(
        tmp_path,
        GatewayConfig(
            gateway_port=ports.gateway,
            admin_port=ports.envoy_admin,
            auth_addr=f"127.0.0.1:{auth.port}",
            lattice_addr=stack.addr("lattice"),
            webhook_addr=stack.addr("webhook"),
            descriptor=stack.envoy.config.descriptor,
            access_log=str(tmp_path / "logs" / "gateway-access.log"),
        ),
        base_id=ports.gateway,
    )
    try:
        # In a thread: Envoy's health checks need this event loop, which serves auth.
        await asyncio.to_thread(envoy.start)
        async with httpx.AsyncClient(base_url=envoy.url, timeout=10, trust_env=False) as client:
            yield client
    finally:
        await asyncio.to_thread(envoy.stop)
        await auth.stop(0)


def assert_429(reply: httpx.Response, *, longest_s: float) -> int:
    """A 429 with a whole-second retry-after and a RESOURCE_EXHAUSTED status body."""
    assert reply.status_code == 429, reply.text
    retry_after = int(reply.headers["retry-after"])
    assert 1 <= retry_after <= longest_s
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["code"] == RESOURCE_EXHAUSTED, body
    assert isinstance(body["message"], str)
    delays = [d["retry_delay"] for d in body["details"] if d["@type"].endswith("RetryInfo")]
    assert len(delays) == 1, body
    # The header is the RetryInfo delay in whole seconds, rounded up.
    assert retry_after == max(1, math.ceil(float(delays[0].removesuffix("s"))))
    return retry_after


async def test_login_over_the_per_address_limit_is_429_with_retry_after(
    limited_gateway: httpx.AsyncClient,
) -> None:
    # Whatever a client puts in x-forwarded-for, the gateway appends the address it saw and the
    # service reads from the right: forged entries, "internal" ones included, change nothing.
    forged = ["127.0.0.1", "10.0.0.1", "198.51.100.7", "::1"]
    for i in range(LOGIN_PER_MINUTE):
        reply = await limited_gateway.post(
            "/v1/auth/login", json={}, headers={"x-forwarded-for": forged[i]}
        )
        assert reply.status_code == 400, reply.text
    reply = await limited_gateway.post(
        "/v1/auth/login", json={}, headers={"x-forwarded-for": forged[-1]}
    )
    # 3 per minute: the next request is due in at most 20 s.
    assert_429(reply, longest_s=20)


async def test_a_tenant_over_its_plans_rate_is_429_with_retry_after(
    limited_gateway: httpx.AsyncClient,
) -> None:
    email = f"rl-e2e-{uuid.uuid4().hex[:12]}@example.com"
    reply = await limited_gateway.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "tenant_name": "rl"}
    )
    assert reply.status_code == 200, reply.text
    reply = await limited_gateway.post(
        "/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert reply.status_code == 200, reply.text
    headers = {"authorization": f"Bearer {reply.json()['access_token']}"}
    for _ in range(FREE_BURST):
        assert (await limited_gateway.get("/v1/users/me", headers=headers)).status_code == 200
    reply = await limited_gateway.get("/v1/users/me", headers=headers)
    assert assert_429(reply, longest_s=1) == 1
    await asyncio.sleep(1.05)
    assert (await limited_gateway.get("/v1/users/me", headers=headers)).status_code == 200
