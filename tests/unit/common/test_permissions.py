"""The permission table and its interceptor, through a real in-process server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from catalytic.auth.v1 import auth_service_pb2  # noqa: F401 - registers the descriptors
from catalytic.lattice.v1 import lattice_service_pb2  # noqa: F401
from catalytic.webhook.v1 import webhook_service_pb2  # noqa: F401

from gateway.render import TRANSCODED_SERVICES
from services.auth.keys import KeyRing
from services.auth.tokens import TokenIssuer
from services.common import permissions
from services.common.access_tokens import AccessTokenVerifier
from services.common.interceptors.auth import AuthInterceptor
from services.common.interceptors.permissions import PermissionInterceptor
from services.common.server import RunningService, build_server

from .conftest import SERVICE, make_config, register_echo

ISSUER, AUDIENCE = "catalytic-auth", "catalytic-api"
TENANT = str(uuid.uuid4())
ALL_SERVICES = (*TRANSCODED_SERVICES,)
# The echo service's rules for these tests: Ok needs an admin, Slow an owner, signed in; WhoAmI
# is public; Fail has none at all.
RULES = {
    f"/{SERVICE}/Ok": permissions.role(permissions.ADMIN),
    f"/{SERVICE}/Slow": permissions.role(permissions.OWNER, api_keys=False),
    f"/{SERVICE}/WhoAmI": permissions.PUBLIC,
}


class Roles:
    """Members' current roles, as the cache would answer."""

    def __init__(self) -> None:
        self.current: dict[str, str] = {}

    async def role(self, tenant_id: str, user_id: str) -> str | None:
        assert tenant_id == TENANT
        return self.current.get(user_id)


@pytest.fixture
def keys(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys")


@pytest.fixture
def roles() -> Roles:
    return Roles()


@pytest.fixture
async def channel(keys: KeyRing, roles: Roles) -> AsyncIterator[grpc.aio.Channel]:
    async def fetch() -> Sequence[dict[str, str]]:
        return keys.jwks()

    verifier = AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    service: RunningService = await build_server(
        make_config(),
        service_names=[SERVICE],
        register=register_echo,
        auth_interceptor=AuthInterceptor(
            verifier, service="permtest", public_methods=[f"/{SERVICE}/WhoAmI"]
        ),
        permission_interceptor=PermissionInterceptor([], roles=roles, rules=RULES),
    )
    await service.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
            yield chan
    finally:
        await service.stop(0)


def token(keys: KeyRing, user: str, role: str) -> list[tuple[str, str]]:
    issued = TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE, ttl_s=600).issue(
        user_id=user, tenant_id=TENANT, role=role
    )
    return [("authorization", f"Bearer {issued.token}")]


async def code_of(channel: grpc.aio.Channel, method: str, metadata: object = None) -> object:
    try:
        await channel.unary_unary(f"/{SERVICE}/{method}")(b"0", metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_rpc_of_every_service_has_a_rule() -> None:
    services = (*ALL_SERVICES,)
    assert permissions.without_rule(services) == []
    # And no rule outlives its RPC.
    assert set(permissions.RULES) == set(permissions.service_methods(services))


def test_the_roles_are_ordered_and_api_keys_never_exceed_their_creator() -> None:
    assert permissions.at_least("owner", "admin")
    assert permissions.at_least("admin", "admin")
    assert not permissions.at_least("member", "admin")
    assert not permissions.at_least("service", "member")
    assert permissions.lower("owner", "member") == "member"
    assert permissions.lower("admin", "owner") == "admin"


def test_public_and_internal_methods_come_from_the_table() -> None:
    from services.auth.server import OPTIONAL_METHODS, PUBLIC_METHODS
    from services.webhook.server import INTERNAL_METHODS

    assert {m.rsplit("/", 1)[1] for m in PUBLIC_METHODS} == {
        "Register",
        "Login",
        "Refresh",
        "GetJwks",
    }
    assert {m.rsplit("/", 1)[1] for m in OPTIONAL_METHODS} == {"AcceptInvitation"}
    assert {m.rsplit("/", 1)[1] for m in INTERNAL_METHODS} == {"PublishEvent"}


def test_a_server_whose_rpc_has_no_rule_is_refused() -> None:
    partial = {m: r for m, r in permissions.RULES.items() if not m.endswith("/ListMembers")}
    with pytest.raises(ValueError, match="ListMembers"):
        PermissionInterceptor(["catalytic.auth.v1.AuthService"], rules=partial)


async def test_an_authenticating_server_needs_a_permission_interceptor(keys: KeyRing) -> None:
    async def fetch() -> Sequence[dict[str, str]]:
        return keys.jwks()

    verifier = AccessTokenVerifier(fetch, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ValueError, match="permission interceptor"):
        await build_server(
            make_config(),
            service_names=[SERVICE],
            register=register_echo,
            auth_interceptor=AuthInterceptor(verifier, service="permtest", public_methods=[]),
        )


async def test_the_current_role_decides_not_the_tokens_claim(
    channel: grpc.aio.Channel, keys: KeyRing, roles: Roles
) -> None:
    user = str(uuid.uuid4())
    claims_owner = token(keys, user, "owner")
    roles.current[user] = "member"
    assert await code_of(channel, "Ok", claims_owner) == grpc.StatusCode.PERMISSION_DENIED
    roles.current[user] = "admin"
    assert await code_of(channel, "Ok", claims_owner) == grpc.StatusCode.OK
    assert await code_of(channel, "Slow", claims_owner) == grpc.StatusCode.PERMISSION_DENIED
    del roles.current[user]  # removed from the tenant
    assert await code_of(channel, "Ok", claims_owner) == grpc.StatusCode.UNAUTHENTICATED


async def test_public_methods_need_nothing_and_unlisted_ones_are_refused(
    channel: grpc.aio.Channel, keys: KeyRing, roles: Roles
) -> None:
    user = str(uuid.uuid4())
    roles.current[user] = "owner"
    assert await code_of(channel, "WhoAmI") == grpc.StatusCode.OK
    # Fail has no rule: refused even to an owner, before its handler runs (fail closed).
    assert await code_of(channel, "Fail", token(keys, user, "owner")) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_the_refusal_names_the_role_needed(
    channel: grpc.aio.Channel, keys: KeyRing, roles: Roles
) -> None:
    user = str(uuid.uuid4())
    roles.current[user] = "member"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await channel.unary_unary(f"/{SERVICE}/Ok")(b"x", metadata=token(keys, user, "member"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in (refused.value.details() or "")
