"""AuthService gRPC servicer: proto in, domain call, proto out."""

from __future__ import annotations

import grpc
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.accounts import Accounts, TenantRecord, UserRecord
from services.auth.api_keys import ApiKeyRecord, ApiKeys
from services.auth.signing import SigningKeyRing
from services.common.context import current_principal
from services.common.timestamps import to_timestamp

Context = grpc.aio.ServicerContext[object, object]
TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth token_type, not a secret


def user_message(user: UserRecord) -> pb.User:
    return pb.User(
        id=user.id,
        email=user.email,
        tenant_id=user.tenant_id,
        role=user.role,
        created_at=to_timestamp(user.created_at),
    )


def tenant_message(tenant: TenantRecord) -> pb.Tenant:
    return pb.Tenant(id=tenant.id, name=tenant.name, plan=tenant.plan)


def api_key_message(key: ApiKeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        created_at=to_timestamp(key.created_at),
        last_used_at=to_timestamp(key.last_used_at),
    )


class AuthServicer(pb_grpc.AuthServiceServicer):
    """Thin adapter over Accounts, ApiKeys and the key ring."""

    def __init__(self, accounts: Accounts, api_keys: ApiKeys, keys: SigningKeyRing) -> None:
        self._accounts = accounts
        self._api_keys = api_keys
        self._keys = keys

    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        user, tenant = await self._accounts.register(
            request.email, request.password, request.tenant_name
        )
        return pb.RegisterResponse(user=user_message(user), tenant=tenant_message(tenant))

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        pair = await self._accounts.login(request.email, request.password)
        return pb.LoginResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=pair.expires_in,
        )

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Context) -> pb.User:
        return user_message(await self._accounts.current_user(current_principal()))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=[pb.Jwk(**key) for key in self._keys.jwks()])

    async def Refresh(self, request: pb.RefreshRequest, context: Context) -> pb.RefreshResponse:
        pair = await self._accounts.refresh(request.refresh_token)
        return pb.RefreshResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=pair.expires_in,
        )

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self._accounts.logout(current_principal(), request.refresh_token)
        return pb.LogoutResponse()

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        created = await self._api_keys.create(current_principal(), request.name)
        return pb.CreateApiKeyResponse(
            id=created.record.id,
            name=created.record.name,
            key=created.key,
            prefix=created.record.prefix,
            created_at=to_timestamp(created.record.created_at),
        )

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        keys = await self._api_keys.list_keys(current_principal())
        return pb.ListApiKeysResponse(api_keys=[api_key_message(key) for key in keys])

    async def DeleteApiKey(
        self, request: pb.DeleteApiKeyRequest, context: Context
    ) -> pb.DeleteApiKeyResponse:
        await self._api_keys.delete(current_principal(), request.id)
        return pb.DeleteApiKeyResponse()
