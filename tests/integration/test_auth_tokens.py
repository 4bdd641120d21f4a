"""Refresh rotation and logout, in-process servers (port 0) on the stack's PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import redis.asyncio as aioredis
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc
from catalytic.lattice.v1 import lattice_service_pb2 as lattice_pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as lattice_grpc
from jose import jwt

from services.auth.config import AuthConfig
from services.auth.server import create_server
from services.auth.tokens import hash_token
from services.common.access_tokens import DEFAULT_LEEWAY_S, AccessTokenVerifier
from services.common.config import ServiceConfig
from services.common.db import Database, open_pool
from services.common.denylist import Denylist
from services.common.jwks_client import grpc_jwks_fetcher
from services.common.revocations import PostgresRevocations
from services.lattice.catalog import Catalog
from services.lattice.server import start_server as start_lattice
from services.lattice.store import PostgresLatticeStore

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
ACCESS_TTL_S = 600
ISSUER = "catalytic-auth"
AUDIENCE = "catalytic-api"
# Port 1 on loopback refuses connections at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
async def auth_port(stack, tmp_path: Path) -> AsyncIterator[int]:
    config = AuthConfig.from_env(
        {
            "DATABASE_URL": stack.env["DATABASE_URL"],
            "REDIS_URL": stack.env["REDIS_URL"],
            "AUTH_PORT": "0",
            "AUTH_METRICS_PORT": "0",
            "JWT_KEYS_DIR": str(tmp_path / "keys"),
            "ACCESS_TOKEN_TTL_S": str(ACCESS_TTL_S),
        }
    )
    running = await create_server(config)
    await running.set_serving()
    try:
        yield running.port
    finally:
        await running.stop(0)


@pytest.fixture
async def auth(auth_port: int) -> AsyncIterator[pb_grpc.AuthServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as channel:
        yield pb_grpc.AuthServiceStub(channel)


@pytest.fixture
def admin(stack) -> Iterator[psycopg.Connection]:
    """The schema owner; RLS is FORCED, so each transaction names its tenant."""
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
async def redis_client(stack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        yield client
    finally:
        await client.aclose()


async def login(auth: pb_grpc.AuthServiceAsyncStub) -> tuple[pb.RegisterResponse, pb.LoginResponse]:
    email = f"tokens-{uuid.uuid4().hex[:10]}@example.com"
    registered = await auth.Register(
        pb.RegisterRequest(email=email, password=PASSWORD, tenant_name="tokens")
    )
    return registered, await auth.Login(pb.LoginRequest(email=email, password=PASSWORD))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def refresh_code(auth: pb_grpc.AuthServiceAsyncStub, token: str) -> grpc.StatusCode:
    try:
        await auth.Refresh(pb.RefreshRequest(refresh_token=token))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def token_rows(admin: psycopg.Connection, tenant_id: str) -> dict[str, tuple[object, ...]]:
    """token_hash -> (family_id, expires_at, spent, revoked) for every token of the tenant."""
    with admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        rows = admin.execute(
            "SELECT token_hash, family_id, expires_at, spent_at IS NOT NULL,"
            " revoked_at IS NOT NULL FROM refresh_tokens"
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


# ------------------------------------------------------------------ refresh
async def test_refresh_rotates_within_the_family_and_never_extends_it(
    auth: pb_grpc.AuthServiceAsyncStub, admin: psycopg.Connection
) -> None:
    registered, first = await login(auth)
    second = await auth.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.token_type == "Bearer"
    assert second.expires_in == ACCESS_TTL_S
    me = await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(second.access_token))
    assert me.id == registered.user.id
    rows = token_rows(admin, registered.tenant.id)
    old, new = rows[hash_token(first.refresh_token)], rows[hash_token(second.refresh_token)]
    assert old[0] == new[0]  # same family
    assert old[1] == new[1]  # same absolute expiry
    assert old[2:] == (True, False)
    assert new[2:] == (False, False)


async def test_reusing_a_spent_token_revokes_the_whole_family(
    auth: pb_grpc.AuthServiceAsyncStub, admin: psycopg.Connection
) -> None:
    registered, first = await login(auth)
    other_session = await auth.Login(
        pb.LoginRequest(email=registered.user.email, password=PASSWORD)
    )
    second = await auth.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    assert await refresh_code(auth, first.refresh_token) == grpc.StatusCode.UNAUTHENTICATED
    # The thief or the client, whoever comes next with the newest token, is refused too.
    assert await refresh_code(auth, second.refresh_token) == grpc.StatusCode.UNAUTHENTICATED
    rows = token_rows(admin, registered.tenant.id)
    assert rows[hash_token(second.refresh_token)][3] is True
    # Another log-in is another family, untouched.
    assert await refresh_code(auth, other_session.refresh_token) == grpc.StatusCode.OK


async def test_concurrent_uses_of_one_token_let_exactly_one_through(
    auth: pb_grpc.AuthServiceAsyncStub,
) -> None:
    _, first = await login(auth)
    codes = await asyncio.gather(*(refresh_code(auth, first.refresh_token) for _ in range(5)))
    assert sorted(code.name for code in codes) == ["OK"] + ["UNAUTHENTICATED"] * 4


async def test_an_expired_family_cannot_refresh(
    auth: pb_grpc.AuthServiceAsyncStub, admin: psycopg.Connection
) -> None:
    registered, first = await login(auth)
    second = await auth.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    with admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (registered.tenant.id,))
        admin.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    assert await refresh_code(auth, second.refresh_token) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_deleted_user_cannot_refresh(
    auth: pb_grpc.AuthServiceAsyncStub, admin: psycopg.Connection
) -> None:
    registered, first = await login(auth)
    with admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (registered.tenant.id,))
        admin.execute("DELETE FROM users WHERE id = %s", (registered.user.id,))
    assert await refresh_code(auth, first.refresh_token) == grpc.StatusCode.UNAUTHENTICATED


async def test_bad_refresh_tokens_fail_alike(auth: pb_grpc.AuthServiceAsyncStub) -> None:
    _, first = await login(auth)
    await auth.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))
    await refresh_code(auth, first.refresh_token)  # reuse: the family is now revoked
    answers = set()
    for token in ("rt_unknown", first.refresh_token, "x" * 5000):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth.Refresh(pb.RefreshRequest(refresh_token=token))
        answers.add((info.value.code(), info.value.details()))
    assert len(answers) == 1
    assert next(iter(answers))[0] == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.Refresh(pb.RefreshRequest(refresh_token=""))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------------ logout
async def test_logout_revokes_the_access_token_and_the_family(
    auth: pb_grpc.AuthServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    _, tokens = await login(auth)
    second = await auth.Refresh(pb.RefreshRequest(refresh_token=tokens.refresh_token))
    await auth.Logout(
        pb.LogoutRequest(refresh_token=second.refresh_token),
        metadata=bearer(second.access_token),
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(second.access_token))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await refresh_code(auth, second.refresh_token) == grpc.StatusCode.UNAUTHENTICATED
    # Listed for the token's remaining life (plus the verifiers' leeway), then gone by itself.
    jti = _jti(second.access_token)
    ttl = await redis_client.ttl(f"denylist:jti:{jti}")
    assert ACCESS_TTL_S - 5 <= ttl <= ACCESS_TTL_S + DEFAULT_LEEWAY_S


async def test_logout_without_a_refresh_token_and_with_unknown_or_foreign_ones(
    auth: pb_grpc.AuthServiceAsyncStub,
) -> None:
    _, mine = await login(auth)
    _, theirs = await login(auth)
    for refresh_token in ("", "rt_unknown"):
        _, session = await login(auth)
        await auth.Logout(
            pb.LogoutRequest(refresh_token=refresh_token), metadata=bearer(session.access_token)
        )
    await auth.Logout(
        pb.LogoutRequest(refresh_token=theirs.refresh_token), metadata=bearer(mine.access_token)
    )
    # Another user's refresh token is not the caller's to revoke.
    assert await refresh_code(auth, theirs.refresh_token) == grpc.StatusCode.OK


async def test_logout_needs_a_valid_access_token(auth: pb_grpc.AuthServiceAsyncStub) -> None:
    _, tokens = await login(auth)
    await auth.Logout(pb.LogoutRequest(), metadata=bearer(tokens.access_token))
    for metadata in ((), bearer(tokens.access_token)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth.Logout(pb.LogoutRequest(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _jti(token: str) -> str:
    return str(jwt.get_unverified_claims(token)["jti"])


# ------------------------------------------------------------------ other services, Redis down
@contextlib.asynccontextmanager
async def lattice_stub(
    stack, auth_port: int, make_denylist: Callable[[Database], Denylist]
) -> AsyncIterator[lattice_grpc.LatticeServiceAsyncStub]:
    pool = await open_pool(stack.env["DATABASE_URL"], min_size=1, max_size=2, name="t")
    auth_channel = grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}")
    config = ServiceConfig(
        service_name="lattice",
        grpc_port=0,
        metrics_port=0,
        database_url=stack.env["DATABASE_URL"],
        redis_url=stack.env["REDIS_URL"],
    )
    verifier = AccessTokenVerifier(
        grpc_jwks_fetcher(auth_channel), issuer=ISSUER, audience=AUDIENCE
    )
    database = Database(pool)
    denylist = make_denylist(database)
    running = await start_lattice(
        config, Catalog(PostgresLatticeStore(database)), verifier, denylist=denylist
    )
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield lattice_grpc.LatticeServiceStub(channel)
    finally:
        await running.stop(0)
        await denylist.aclose()
        await auth_channel.close()
        await pool.close()


async def test_another_service_rejects_a_logged_out_token_at_once(
    stack, auth: pb_grpc.AuthServiceAsyncStub, auth_port: int, redis_client: aioredis.Redis
) -> None:
    _, tokens = await login(auth)
    async with lattice_stub(
        stack, auth_port, lambda db: Denylist(redis_client, PostgresRevocations(db))
    ) as lattice:
        listed = await lattice.ListLattices(
            lattice_pb.ListLatticesRequest(), metadata=bearer(tokens.access_token)
        )
        assert list(listed.lattices) == []
        await auth.Logout(pb.LogoutRequest(), metadata=bearer(tokens.access_token))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await lattice.ListLattices(
                lattice_pb.ListLatticesRequest(), metadata=bearer(tokens.access_token)
            )
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_without_redis_authenticated_calls_fail_closed(
    stack, auth: pb_grpc.AuthServiceAsyncStub, auth_port: int
) -> None:
    _, tokens = await login(auth)
    dead = aioredis.Redis.from_url(DEAD_REDIS, socket_connect_timeout=0.5)
    try:
        async with lattice_stub(
            stack, auth_port, lambda db: Denylist(dead, PostgresRevocations(db))
        ) as lattice:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await lattice.ListLattices(
                    lattice_pb.ListLatticesRequest(), metadata=bearer(tokens.access_token)
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            # A bad token is still UNAUTHENTICATED: the denylist is asked only about valid ones.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await lattice.ListLattices(
                    lattice_pb.ListLatticesRequest(), metadata=bearer("not.a.jwt")
                )
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await dead.aclose()
