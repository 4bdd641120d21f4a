"""AuthService gRPC servicer: proto in, domain call, proto out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import grpc
from catalytic.auth.v1 import auth_service_pb2 as pb
from catalytic.auth.v1 import auth_service_pb2_grpc as pb_grpc

from services.auth.accounts import Accounts, TenantRecord, TokenPair, UserRecord
from services.auth.api_keys import ApiKeyRecord, ApiKeys
from services.auth.audit_log import AuditLog, audit_filter
from services.auth.invitations import InvitationRecord, Invitations
from services.auth.members import Members, TenantMembership
from services.auth.membership import MemberRecord
from services.auth.signing import SigningKeyRing
from services.common.context import current_principal, optional_principal
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
        role=key.role,
    )


def member_message(member: MemberRecord) -> pb.Member:
    return pb.Member(
        user_id=member.user_id,
        email=member.email,
        role=member.role,
        joined_at=to_timestamp(member.joined_at),
    )


def membership_message(found: TenantMembership) -> pb.Membership:
    return pb.Membership(
        tenant=tenant_message(found.tenant),
        role=found.member.role,
        joined_at=to_timestamp(found.member.joined_at),
        is_default=found.is_default,
    )


def invitation_message(invitation: InvitationRecord) -> pb.Invitation:
    return pb.Invitation(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        invited_by=invitation.invited_by,
        created_at=to_timestamp(invitation.created_at),
        expires_at=to_timestamp(invitation.expires_at),
    )


class PairFields(TypedDict):
    """The fields every token-pair response shares."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


def audit_event_message(row: Mapping[str, Any]) -> pb.AuditEvent:
    event = pb.AuditEvent(
        id=row["id"],
        seq=row["seq"],
        occurred_at=to_timestamp(row["occurred_at"]),
        actor_type=row["actor_type"],
        actor_id=row["actor_id"],
        action=row["action"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        outcome=row["outcome"],
        reason=row["reason"],
        client_address=row["client_address"],
        user_agent=row["user_agent"],
        request_id=row["request_id"],
        prev_hash=bytes(row["prev_hash"]).hex(),
        hash=bytes(row["hash"]).hex(),
    )
    event.details.update(row["details"])
    return event


def pair_fields(pair: TokenPair) -> PairFields:
    return PairFields(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=TOKEN_TYPE,
        expires_in=pair.expires_in,
    )


class AuthServicer(pb_grpc.AuthServiceServicer):
    """Thin adapter over Accounts, ApiKeys, Members, Invitations and the key ring."""

    def __init__(
        self,
        accounts: Accounts,
        api_keys: ApiKeys,
        keys: SigningKeyRing,
        *,
        members: Members,
        invitations: Invitations,
        audit_log: AuditLog,
    ) -> None:
        self._accounts = accounts
        self._api_keys = api_keys
        self._keys = keys
        self._members = members
        self._invitations = invitations
        self._audit_log = audit_log

    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        user, tenant = await self._accounts.register(
            request.email, request.password, request.tenant_name
        )
        return pb.RegisterResponse(user=user_message(user), tenant=tenant_message(tenant))

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        pair = await self._accounts.login(request.email, request.password, request.tenant_id)
        return pb.LoginResponse(**pair_fields(pair))

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Context) -> pb.User:
        return user_message(await self._accounts.current_user(current_principal()))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=[pb.Jwk(**key) for key in self._keys.jwks()])

    async def Refresh(self, request: pb.RefreshRequest, context: Context) -> pb.RefreshResponse:
        pair = await self._accounts.refresh(request.refresh_token)
        return pb.RefreshResponse(**pair_fields(pair))

    async def Logout(self, request: pb.LogoutRequest, context: Context) -> pb.LogoutResponse:
        await self._accounts.logout(current_principal(), request.refresh_token)
        return pb.LogoutResponse()

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        created = await self._api_keys.create(current_principal(), request.name, request.role)
        return pb.CreateApiKeyResponse(
            id=created.record.id,
            name=created.record.name,
            key=created.key,
            prefix=created.record.prefix,
            created_at=to_timestamp(created.record.created_at),
            role=created.record.role,
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

    async def SwitchTenant(
        self, request: pb.SwitchTenantRequest, context: Context
    ) -> pb.SwitchTenantResponse:
        pair = await self._accounts.switch_tenant(current_principal(), request.tenant_id)
        return pb.SwitchTenantResponse(**pair_fields(pair))

    async def ListMyTenants(
        self, request: pb.ListMyTenantsRequest, context: Context
    ) -> pb.ListMyTenantsResponse:
        found = await self._members.my_tenants(current_principal())
        return pb.ListMyTenantsResponse(memberships=[membership_message(m) for m in found])

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Context
    ) -> pb.ListMembersResponse:
        members = await self._members.list_members(current_principal())
        return pb.ListMembersResponse(members=[member_message(m) for m in members])

    async def UpdateMember(self, request: pb.UpdateMemberRequest, context: Context) -> pb.Member:
        member = await self._members.update(current_principal(), request.user_id, request.role)
        return member_message(member)

    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Context
    ) -> pb.RemoveMemberResponse:
        await self._members.remove(current_principal(), request.user_id)
        return pb.RemoveMemberResponse()

    async def CreateInvitation(
        self, request: pb.CreateInvitationRequest, context: Context
    ) -> pb.CreateInvitationResponse:
        created = await self._invitations.create(current_principal(), request.email, request.role)
        return pb.CreateInvitationResponse(
            invitation=invitation_message(created.record), token=created.token
        )

    async def ListInvitations(
        self, request: pb.ListInvitationsRequest, context: Context
    ) -> pb.ListInvitationsResponse:
        pending = await self._invitations.list_pending(current_principal())
        return pb.ListInvitationsResponse(invitations=[invitation_message(i) for i in pending])

    async def RevokeInvitation(
        self, request: pb.RevokeInvitationRequest, context: Context
    ) -> pb.RevokeInvitationResponse:
        await self._invitations.revoke(current_principal(), request.id)
        return pb.RevokeInvitationResponse()

    async def AcceptInvitation(
        self, request: pb.AcceptInvitationRequest, context: Context
    ) -> pb.AcceptInvitationResponse:
        user, tenant = await self._invitations.accept(
            optional_principal(), request.token, request.password
        )
        return pb.AcceptInvitationResponse(user=user_message(user), tenant=tenant_message(tenant))

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        found = audit_filter(request.start_time, request.end_time, request.action, request.actor_id)
        page = await self._audit_log.page(
            current_principal(), found, page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListAuditEventsResponse(
            events=[audit_event_message(row) for row in page.events],
            next_page_token=page.next_page_token,
        )
