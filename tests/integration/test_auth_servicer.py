"""AuthService in-process (port 0) against the stack's real PostgreSQL: codes, not messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.config import AuthConfig
from services.auth.server import create_server
from tests.support.grpc_calls import violations

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def auth(stack, tmp_path: Path) -> AsyncIterator[pb_grpc.AuthServiceStub]:
    config = AuthConfig.from_env(
        {
            "DATABASE_URL": stack.env["DATABASE_URL"],
            "REDIS_URL": stack.env["REDIS_URL"],
            "AUTH_PORT": "0",
            "AUTH_METRICS_PORT": "0",
            "JWT_KEYS_DIR": str(tmp_path / "keys"),
        }
    )
    running = await create_server(config)
    await running.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.AuthServiceStub(channel)
    await running.stop(0)


def email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


async def test_register_login_and_me(auth: pb_grpc.AuthServiceStub) -> None:
    address = email()
    registered = await auth.Register(
        pb.RegisterRequest(email=address.upper(), password=PASSWORD, tenant_name="acme")
    )
    assert registered.user.email == address
    assert registered.user.role == "owner"
    assert registered.user.tenant_id == registered.tenant.id
    assert registered.tenant.plan == "free"
    tokens = await auth.Login(pb.LoginRequest(email=address, password=PASSWORD))
    assert tokens.token_type == "Bearer"
    assert 300 <= tokens.expires_in <= 900
    assert tokens.refresh_token
    me = await auth.GetCurrentUser(
        pb.GetCurrentUserRequest(), metadata=(("authorization", f"Bearer {tokens.access_token}"),)
    )
    assert me.id == registered.user.id
    assert me.created_at.seconds > 0


async def test_every_registration_creates_a_new_tenant(auth: pb_grpc.AuthServiceStub) -> None:
    first = await auth.Register(
        pb.RegisterRequest(email=email(), password=PASSWORD, tenant_name="same")
    )
    second = await auth.Register(
        pb.RegisterRequest(email=email(), password=PASSWORD, tenant_name="same")
    )
    assert first.tenant.id != second.tenant.id


async def test_duplicate_email_is_already_exists(auth: pb_grpc.AuthServiceStub) -> None:
    address = email()
    await auth.Register(pb.RegisterRequest(email=address, password=PASSWORD, tenant_name="a"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.Register(pb.RegisterRequest(email=address, password=PASSWORD, tenant_name="b"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD, "tenant_name": "a"}, "email"),
        ({"email": "x@example.com", "password": "short", "tenant_name": "a"}, "password"),
        ({"email": "x@example.com", "password": PASSWORD, "tenant_name": ""}, "tenant_name"),
    ],
)
async def test_invalid_registration_names_the_field(
    auth: pb_grpc.AuthServiceStub, request_fields: dict[str, str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.Register(pb.RegisterRequest(**request_fields))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(info.value) == [field]


async def test_wrong_password_and_unknown_email_fail_alike(auth: pb_grpc.AuthServiceStub) -> None:
    address = email()
    await auth.Register(pb.RegisterRequest(email=address, password=PASSWORD, tenant_name="a"))
    answers = []
    for request in (
        pb.LoginRequest(email=address, password=PASSWORD + "!"),
        pb.LoginRequest(email=email(), password=PASSWORD),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth.Login(request)
        answers.append((info.value.code(), info.value.details()))
    assert answers[0] == answers[1]
    assert answers[0][0] == grpc.StatusCode.UNAUTHENTICATED


async def test_me_needs_a_valid_token(auth: pb_grpc.AuthServiceStub) -> None:
    for metadata in ((), (("authorization", "Bearer not.a.jwt"),), (("authorization", "Basic x"),)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_jwks_is_public_and_lists_the_signing_key(auth: pb_grpc.AuthServiceStub) -> None:
    jwks = await auth.GetJwks(pb.GetJwksRequest())
    assert [(k.kty, k.crv, k.alg, k.use) for k in jwks.keys] == [("EC", "P-256", "ES256", "sig")]
    assert jwks.keys[0].kid


async def test_repeated_failures_lock_the_account_even_for_the_right_password(
    auth: pb_grpc.AuthServiceStub,
) -> None:
    address = email()
    await auth.Register(pb.RegisterRequest(email=address, password=PASSWORD, tenant_name="a"))
    codes = []
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth.Login(pb.LoginRequest(email=address, password=PASSWORD + "?"))
        codes.append(info.value.code())
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.Login(pb.LoginRequest(email=address, password=PASSWORD))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(info.value.trailing_metadata() or ())
    assert int(trailing["retry-after"]) >= 1


async def test_unknown_email_locks_alike(auth: pb_grpc.AuthServiceStub) -> None:
    address = email()
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError):
            await auth.Login(pb.LoginRequest(email=address, password=PASSWORD))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.Login(pb.LoginRequest(email=address, password=PASSWORD))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
