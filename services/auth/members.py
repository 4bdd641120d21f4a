"""A tenant's members: listing them, changing their roles, removing them, and the tenants a user
belongs to. Free of gRPC and SQL.

The permission table lets owners and admins in (services/common/permissions.py); the rules that
depend on whom the change is about are here: only an owner touches an owner or makes one, and
the last owner can be neither demoted nor removed. A change holds from the member's next call:
the cached role is dropped inside the changing transaction and the new one written after it.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from services.auth.accounts import AuthStore, TenantRecord
from services.auth.membership import MemberRecord, RoleCache, default_tenant, parse_role, parse_uuid
from services.common.context import Principal
from services.common.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from services.common.permissions import OWNER

MEMBER_NOT_FOUND = "user_id: no member of this tenant has this id"
LAST_OWNER = "the last owner cannot be {}; make another member owner first"


@dataclass(frozen=True)
class TenantMembership:
    """A tenant the caller belongs to, as listed."""

    tenant: TenantRecord
    member: MemberRecord
    is_default: bool


class MembershipChange(Protocol):
    """One transaction around one membership, holding the tenant's memberships still."""

    @property
    def member(self) -> MemberRecord | None:
        """The membership, or None when the user is no member of the tenant."""

    @property
    def owners(self) -> int:
        """How many owners the tenant has."""

    async def set_role(self, role: str) -> MemberRecord:
        """Gives the member `role`."""

    async def remove(self) -> None:
        """Ends the membership, with the member's refresh tokens and API keys in the tenant and
        the pending invitations they sent."""


class MemberStore(Protocol):
    """Persistence of memberships (PostgreSQL in production)."""

    async def list_members(self, tenant_id: str) -> list[MemberRecord]:
        """The tenant's members, oldest first."""

    def changing_member(
        self, tenant_id: str, user_id: str
    ) -> AbstractAsyncContextManager[MembershipChange]:
        """A transaction changing one membership; commits when left normally."""

    async def tenants_of(self, email: str) -> list[tuple[TenantRecord, MemberRecord]]:
        """Every tenant the user with this e-mail belongs to, oldest membership first."""


def _require_owner_for(principal: Principal, member: MemberRecord, new_role: str | None) -> None:
    if principal.role == OWNER:
        return
    if member.role == OWNER:
        raise PermissionDenied("changing or removing an owner requires role owner")
    if new_role == OWNER:
        raise PermissionDenied("making a member owner requires role owner")


class Members:
    """Use cases of a tenant's membership."""

    def __init__(self, store: MemberStore, accounts: AuthStore, cache: RoleCache) -> None:
        self._store = store
        self._accounts = accounts
        self._cache = cache

    async def list_members(self, principal: Principal) -> list[MemberRecord]:
        """Every member of the caller's tenant."""
        return await self._store.list_members(principal.tenant_id)

    async def update(self, principal: Principal, user_id: str, role: str) -> MemberRecord:
        """Gives a member of the caller's tenant another role."""
        user_id = parse_uuid("user_id", user_id, "user")
        role = parse_role("role", role)
        async with self._store.changing_member(principal.tenant_id, user_id) as change:
            member = change.member
            if member is None:
                raise NotFound(MEMBER_NOT_FOUND)
            _require_owner_for(principal, member, role)
            if member.role == role:
                return member
            if member.role == OWNER and change.owners <= 1:
                raise FailedPrecondition(LAST_OWNER.format("demoted"))
            await self._cache.forget(principal.tenant_id, user_id)
            updated = await change.set_role(role)
        await self._settle(principal.tenant_id, user_id, role)
        return updated

    async def remove(self, principal: Principal, user_id: str) -> None:
        """Removes a member from the caller's tenant; their credentials for it stop at once."""
        user_id = parse_uuid("user_id", user_id, "user")
        async with self._store.changing_member(principal.tenant_id, user_id) as change:
            member = change.member
            if member is None:
                raise NotFound(MEMBER_NOT_FOUND)
            _require_owner_for(principal, member, None)
            if member.role == OWNER and change.owners <= 1:
                raise FailedPrecondition(LAST_OWNER.format("removed"))
            await self._cache.forget(principal.tenant_id, user_id)
            await change.remove()
        await self._settle(principal.tenant_id, user_id, None)

    async def my_tenants(self, principal: Principal) -> list[TenantMembership]:
        """Every tenant the caller belongs to, the one log-in picks by default marked."""
        me = await self._accounts.get_user(principal.tenant_id, principal.user_id)
        if me is None:
            raise NotFound("user not found")
        account = await self._accounts.find_user_by_email(me.email)
        found = await self._store.tenants_of(me.email)
        home = account.tenant_id if account is not None else ""
        chosen = default_tenant(home, [member for _, member in found])
        return [TenantMembership(tenant, member, tenant.id == chosen) for tenant, member in found]

    async def _settle(self, tenant_id: str, user_id: str, role: str | None) -> None:
        # After the commit: replaces whatever a call cached meanwhile from before it. Should
        # Redis fail just now, such a stale entry lives out its TTL (roles.DEFAULT_TTL_S).
        with contextlib.suppress(Unavailable):
            await self._cache.remember(tenant_id, user_id, role)
