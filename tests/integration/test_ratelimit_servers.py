"""Rate limits in a real auth server (in-process, port 0) on the stack's PostgreSQL and Redis.

The server gets tiny limits of its own, so nothing here spends the shared stack's budget.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psycopg
import pytest
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack import Stack
from services.auth.config import AuthConfig
from services.auth.server import create_server
from services.common.ratelimit import RATE_LIMITED

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
LIMITS = {
    "RATE_LIMIT_REGISTER_PER_HOUR": "2",
    "RATE_LIMIT_LOGIN_PER_MINUTE": "3",
    "RATE_LIMIT_REFRESH_PER_MINUTE": "2",
    "TENANT_RATE_LIMIT_FREE_PER_S": "1",
    "TENANT_RATE_LIMIT_FREE_BURST": "3",
    "TENANT_RATE_LIMIT_STARTER_PER_S": "1",
    "TENANT_RATE_LIMIT_STARTER_BURST": "6",
    # Plan changes apply at once (production caches them for 60 s).
    "TENANT_PLAN_CACHE_S": "0",
}


@pytest.fixture
async def auth(stack: Stack, tmp_path: Path) -> AsyncIterator[pb_grpc.AuthServiceStub]:
    config = AuthConfig.from_env(
        {
            "DATABASE_URL": stack.env["DATABASE_URL"],
            "REDIS_URL": stack.env["REDIS_URL"],
            "AUTH_PORT": "0",
            "AUTH_METRICS_PORT": "0",
            "JWT_KEYS_DIR": str(tmp_path / "keys"),
            "DEFAULT_PLAN": "free",
            **LIMITS,
        }
    )
    running = await create_server(config)
    await running.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.AuthServiceStub(channel)
    await running.stop(0)


def client_address() -> str:
    """An address of its own per test (198.18.0.0/15, benchmarking): buckets never shared."""
    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def forwarded(address: str) -> tuple[tuple[str, str], ...]:
    # This test talks to the server from loopback, a trusted proxy, as the gateway would.
    return (("x-forwarded-for", address),)


async def expect_exhausted(call: grpc.aio.Call) -> float:
    """The call fails RESOURCE_EXHAUSTED with retry-after and RetryInfo; returns the delay."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
    trailers = dict(await call.trailing_metadata())
    assert int(trailers["retry-after"]) >= 1
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    delay = retry.retry_delay.ToNanoseconds() / 1e9
    assert delay > 0
    return delay


def empty_call(auth: pb_grpc.AuthServiceStub, method: str, address: str) -> grpc.aio.Call:
    requests = {
        "Register": pb.RegisterRequest(),
        "Login": pb.LoginRequest(),
        "Refresh": pb.RefreshRequest(),
    }
    stub_method = getattr(auth, method)
    return stub_method(requests[method], metadata=forwarded(address))


@pytest.mark.parametrize(("method", "limit"), [("Register", 2), ("Login", 3), ("Refresh", 2)])
async def test_public_entry_points_are_limited_per_client_address(
    auth: pb_grpc.AuthServiceStub, method: str, limit: int
) -> None:
    address = client_address()
    for _ in range(limit):
        # Malformed on purpose: the limit counts requests, before any validation or hashing.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await empty_call(auth, method, address)
        assert caught.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
    await expect_exhausted(empty_call(auth, method, address))
    # Another client is not affected.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await empty_call(auth, method, client_address())
    assert caught.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_forged_left_most_entries_do_not_make_a_new_client(
    auth: pb_grpc.AuthServiceStub,
) -> None:
    address = client_address()
    codes = []
    for _ in range(5):
        forged = f"{client_address()}, {client_address()}, {address}"
        try:
            await auth.Login(pb.LoginRequest(), metadata=forwarded(forged))
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2


async def test_callers_inside_the_trusted_network_are_not_limited_per_address(
    auth: pb_grpc.AuthServiceStub,
) -> None:
    for _ in range(6):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Login(pb.LoginRequest())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def register_and_login(auth: pb_grpc.AuthServiceStub) -> tuple[str, str]:
    """(tenant id, access token) of a new tenant, from an address of its own."""
    address = client_address()
    email = f"rl-{uuid.uuid4().hex[:12]}@example.com"
    registered = await auth.Register(
        pb.RegisterRequest(email=email, password=PASSWORD, tenant_name="rl"),
        metadata=forwarded(address),
    )
    tokens = await auth.Login(
        pb.LoginRequest(email=email, password=PASSWORD), metadata=forwarded(address)
    )
    return registered.tenant.id, tokens.access_token


async def test_authenticated_calls_are_limited_per_tenant_by_plan(
    auth: pb_grpc.AuthServiceStub,
) -> None:
    _, token = await register_and_login(auth)
    bearer = (("authorization", f"Bearer {token}"),)
    counter = RATE_LIMITED.labels("auth", "tenant")
    before = counter._value.get()
    for _ in range(3):  # the free plan's burst
        await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer)
    delay = await expect_exhausted(auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer))
    assert delay <= 1.0  # one per second: the next one is due within a second
    assert counter._value.get() == before + 1
    await asyncio.sleep(delay + 0.05)
    await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer)


async def test_another_tenant_has_its_own_budget(auth: pb_grpc.AuthServiceStub) -> None:
    _, first = await register_and_login(auth)
    _, second = await register_and_login(auth)
    for _ in range(3):
        await auth.GetCurrentUser(
            pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {first}"),)
        )
    await auth.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {second}"),)
    )


async def test_a_better_plan_gets_a_bigger_budget(
    auth: pb_grpc.AuthServiceStub, stack: Stack
) -> None:
    tenant_id, token = await register_and_login(auth)
    async with (
        await psycopg.AsyncConnection.connect(stack.env["DATABASE_URL"], autocommit=True) as conn,
        conn.transaction(),
    ):
        await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        await conn.execute("UPDATE tenants SET plan = 'starter' WHERE id = %s", (tenant_id,))
    bearer = (("authorization", f"Bearer {token}"),)
    for _ in range(6):  # the starter plan's burst
        await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer)
    await expect_exhausted(auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer))
