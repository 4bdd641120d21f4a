"""API keys: AuthService management and `x-api-key` verification, in-process on the real stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.config import AuthConfig
from services.auth.passwords import hash_password
from services.auth.server import create_server
from services.common.api_keys import parse_api_key
from tests.support.grpc_calls import violations

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def auth(stack, tmp_path: Path) -> AsyncIterator[pb_grpc.AuthServiceAsyncStub]:
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
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.AuthServiceStub(channel)
    finally:
        await running.stop(0)


@pytest.fixture
def admin(stack) -> Iterator[psycopg.Connection]:
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as conn:
        yield conn


@pytest.fixture
def app(stack) -> Iterator[psycopg.Connection]:
    """The role the services connect as."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        yield conn


class Owner:
    def __init__(self, registered: pb.RegisterResponse, access_token: str) -> None:
        self.user = registered.user
        self.tenant_id = registered.tenant.id
        self.metadata: Metadata = (("authorization", f"Bearer {access_token}"),)


async def new_owner(auth: pb_grpc.AuthServiceAsyncStub) -> Owner:
    email = f"keys-{uuid.uuid4().hex[:10]}@example.com"
    registered = await auth.Register(
        pb.RegisterRequest(email=email, password=PASSWORD, tenant_name="keys")
    )
    tokens = await auth.Login(pb.LoginRequest(email=email, password=PASSWORD))
    return Owner(registered, tokens.access_token)


def api_key(key: str) -> Metadata:
    return (("x-api-key", key),)


async def code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_create_list_delete(auth: pb_grpc.AuthServiceAsyncStub) -> None:
    owner = await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name=" ci "), metadata=owner.metadata)
    assert created.name == "ci"
    assert parse_api_key(created.key) == created.prefix
    assert created.key.startswith(f"cat_{created.prefix}_")
    assert created.created_at.seconds > 0
    uuid.UUID(created.id)
    second = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="two"), metadata=owner.metadata)

    listed = await auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=owner.metadata)
    assert [key.id for key in listed.api_keys] == [second.id, created.id]  # newest first
    assert listed.api_keys[1].prefix == created.prefix
    assert not listed.api_keys[1].HasField("last_used_at")
    wire = listed.SerializeToString()
    # The secret may hold "_" itself (URL-safe base64): cut the known prefix, not at a "_".
    secret = created.key.removeprefix(f"cat_{created.prefix}_").encode()
    assert len(secret) == 43
    assert created.key.encode() not in wire
    assert secret[:16] not in wire

    await auth.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.id), metadata=owner.metadata)
    listed = await auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=owner.metadata)
    assert [key.id for key in listed.api_keys] == [second.id]
    again = auth.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.id), metadata=owner.metadata)
    assert await code_of(again) == grpc.StatusCode.NOT_FOUND


async def test_a_key_authenticates_as_its_creator_until_deleted(
    auth: pb_grpc.AuthServiceAsyncStub,
) -> None:
    owner = await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), metadata=owner.metadata)
    me = await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=api_key(created.key))
    assert me.id == owner.user.id
    assert me.tenant_id == owner.tenant_id
    listed = await auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=api_key(created.key))
    assert listed.api_keys[0].HasField("last_used_at")
    # The verification above is cached; the deletion's Redis marker must still stop it at once.
    await auth.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.id), metadata=owner.metadata)
    again = auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=api_key(created.key))
    assert await code_of(again) == grpc.StatusCode.UNAUTHENTICATED


async def test_forged_and_malformed_keys_fail(auth: pb_grpc.AuthServiceAsyncStub) -> None:
    owner = await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), metadata=owner.metadata)
    secret = created.key[len(f"cat_{created.prefix}_") :]
    flipped = ("B" if secret[0] == "A" else "A") + secret[1:]
    for key in (
        f"cat_{created.prefix}_{flipped}",  # right prefix, wrong secret
        f"cat_{created.prefix}_",  # the prefix alone
        f"cat_{created.prefix}",
        created.key + "x",
        created.key[:-1],
        created.key.upper(),
        "cat_",
        "x",
    ):
        call = auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=api_key(key))
        assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED, key


async def test_both_credentials_at_once_are_refused(auth: pb_grpc.AuthServiceAsyncStub) -> None:
    owner = await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), metadata=owner.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth.GetCurrentUser(
            pb.GetCurrentUserRequest(), metadata=owner.metadata + api_key(created.key)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for twice in (owner.metadata * 2, api_key(created.key) * 2):
        call = auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=twice)
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_owners_and_admins_signed_in_manage_keys(
    auth: pb_grpc.AuthServiceAsyncStub, admin: psycopg.Connection
) -> None:
    owner = await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="ci"), metadata=owner.metadata)
    member_email = f"member-{uuid.uuid4().hex[:10]}@example.com"
    with admin.transaction():
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (owner.tenant_id,))
        admin.execute(
            "INSERT INTO users (id, tenant_id, email, password_hash, role)"
            " VALUES (%s, %s, %s, %s, 'member')",
            (str(uuid.uuid4()), owner.tenant_id, member_email, hash_password(PASSWORD)),
        )
    tokens = await auth.Login(pb.LoginRequest(email=member_email, password=PASSWORD))
    member: Metadata = (("authorization", f"Bearer {tokens.access_token}"),)
    for metadata in (member, api_key(created.key)):
        create = auth.CreateApiKey(pb.CreateApiKeyRequest(name="x"), metadata=metadata)
        assert await code_of(create) == grpc.StatusCode.PERMISSION_DENIED
        delete = auth.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.id), metadata=metadata)
        assert await code_of(delete) == grpc.StatusCode.PERMISSION_DENIED
        listed = await auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=metadata)
        assert [key.id for key in listed.api_keys] == [created.id]


async def test_another_tenants_key_is_not_found(auth: pb_grpc.AuthServiceAsyncStub) -> None:
    a, b = await new_owner(auth), await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="a"), metadata=a.metadata)
    delete = auth.DeleteApiKey(pb.DeleteApiKeyRequest(id=created.id), metadata=b.metadata)
    assert await code_of(delete) == grpc.StatusCode.NOT_FOUND
    listed = await auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=b.metadata)
    assert list(listed.api_keys) == []
    # Still alive for its own tenant.
    me = await auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=api_key(created.key))
    assert me.tenant_id == a.tenant_id


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("CreateApiKey", pb.CreateApiKeyRequest(name=""), "name"),
        ("CreateApiKey", pb.CreateApiKeyRequest(name="x" * 101), "name"),
        ("DeleteApiKey", pb.DeleteApiKeyRequest(id="not-a-uuid"), "id"),
    ],
)
async def test_invalid_requests_name_the_field(
    auth: pb_grpc.AuthServiceAsyncStub, method: str, request_message: object, field: str
) -> None:
    owner = await new_owner(auth)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(auth, method)(request_message, metadata=owner.metadata)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(info.value) == [field]


# ------------------------------------------------------------------ row-level security
def test_api_keys_table_has_forced_rls(admin: psycopg.Connection) -> None:
    row = admin.execute(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'api_keys'"
    ).fetchone()
    assert row == (True, True)


async def test_the_app_role_sees_keys_only_by_tenant_or_exact_prefix(
    auth: pb_grpc.AuthServiceAsyncStub, app: psycopg.Connection
) -> None:
    a, b = await new_owner(auth), await new_owner(auth)
    created = await auth.CreateApiKey(pb.CreateApiKeyRequest(name="a"), metadata=a.metadata)
    with app.transaction():
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (b.tenant_id,))
        assert app.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
        updated = app.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (created.id,))
        assert updated.rowcount == 0
    with app.transaction():
        assert app.execute("SELECT count(*) FROM api_keys").fetchone() == (0,)
    with app.transaction():
        app.execute("SELECT set_config('app.lookup_api_key_prefix', %s, true)", (created.prefix,))
        rows = app.execute("SELECT id::text FROM api_keys").fetchall()
        assert rows == [(created.id,)]
        # The look-up policy is read-only.
        updated = app.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (created.id,))
        assert updated.rowcount == 0


async def test_a_key_cannot_name_another_tenants_user(
    auth: pb_grpc.AuthServiceAsyncStub, app: psycopg.Connection
) -> None:
    # Foreign-key checks bypass RLS; the composite key (tenant_id, user_id) still holds.
    a, b = await new_owner(auth), await new_owner(auth)
    with app.transaction(force_rollback=True):
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (b.tenant_id,))
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            app.execute(
                "INSERT INTO api_keys (id, tenant_id, user_id, name, prefix, secret_hash, role)"
                " VALUES (%s, %s, %s, 'x', 'abcdefghijkl', %s, 'member')",
                (str(uuid.uuid4()), b.tenant_id, a.user.id, "0" * 64),
            )
