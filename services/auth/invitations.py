"""Invitations to a tenant: creating, listing, revoking and accepting them. Free of gRPC and SQL.

An invitation names an e-mail address and a role. Its token (`inv_` + 256 random bits) is
returned once to the inviter, who passes it on: no e-mail is sent. Only its SHA-256 is stored.
It is good once, until it expires. Accepting a token that is unknown, expired, revoked or
spent gets one answer, NotFound, so a token reveals nothing about its state.

Only the invited address's account can accept: proven by its password (which creates the
account when there is none), or by being signed in as it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.auth import passwords
from services.auth.accounts import (
    LOGIN_FAILED,
    AuthStore,
    LoginGuard,
    TenantRecord,
    UserRecord,
    normalise_email,
)
from services.auth.membership import DEFAULT_ROLE, RoleCache, parse_role, parse_uuid
from services.auth.tokens import hash_token
from services.common.context import AUTH_METHOD_JWT, Principal
from services.common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from services.common.permissions import OWNER

TOKEN_PREFIX = "inv_"  # noqa: S105 - the token's fixed prefix, not a secret
_TOKEN = re.compile(r"inv_[A-Za-z0-9_-]{43}")
DEFAULT_TTL_S = 7 * 24 * 3600
MAX_PENDING_PER_TENANT = 100
# One answer for every token that cannot be used.
INVITATION_NOT_FOUND = (
    "token: no pending invitation has this token (unknown, expired, revoked or already used)"
)
NOT_FOUND_BY_ID = "id: no pending invitation of this tenant has this id"


def new_invitation_token() -> str:
    """256 random bits, URL-safe; only its hash is stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class InvitationRecord:
    """An invitation as stored: never its token or hash."""

    id: str
    tenant_id: str
    email: str
    role: str
    invited_by: str
    created_at: datetime
    expires_at: datetime
    # Neither accepted nor revoked, and not expired (by the database's clock).
    pending: bool = True


@dataclass(frozen=True)
class NewInvitation:
    """What the store inserts for a new invitation."""

    id: str
    tenant_id: str
    email: str
    role: str
    invited_by: str
    expires_at: datetime
    token_hash: str = field(repr=False)


@dataclass(frozen=True)
class CreatedInvitation:
    """A new invitation and its token, which is shown once and never stored."""

    record: InvitationRecord
    token: str = field(repr=False)


class AcceptSession(Protocol):
    """One transaction holding the invitation with a token hash locked."""

    @property
    def invitation(self) -> InvitationRecord | None:
        """The invitation, or None when no invitation has that hash."""

    async def is_member(self, user_id: str) -> bool:
        """Whether the user belongs to the invitation's tenant already."""

    async def tenant(self) -> TenantRecord:
        """The invitation's tenant."""

    async def join(self, user_id: str, email: str) -> None:
        """Adds the existing user to the tenant with the invitation's role; spends it."""

    async def join_new(self, user: UserRecord) -> None:
        """Creates the user in the tenant with the invitation's role; spends it.

        AlreadyExists when an account has that e-mail meanwhile.
        """


class InvitationStore(Protocol):
    """Persistence of invitations (PostgreSQL in production)."""

    async def insert_invitation(
        self, row: NewInvitation, *, max_pending: int
    ) -> InvitationRecord | None:
        """Inserts it, revoking any pending invitation of the same address in the tenant;
        None when the tenant has `max_pending` pending ones. AlreadyExists when the address
        belongs to a member."""

    async def list_invitations(self, tenant_id: str) -> list[InvitationRecord]:
        """The tenant's pending invitations, newest first."""

    async def revoke_invitation(self, tenant_id: str, invitation_id: str) -> bool:
        """Revokes the tenant's pending invitation; False when there is none."""

    async def find_invitation(self, token_hash: str) -> InvitationRecord | None:
        """The invitation with this token hash, in any tenant."""

    def accepting_invitation(self, token_hash: str) -> AbstractAsyncContextManager[AcceptSession]:
        """A transaction holding that invitation locked; commits when left normally."""


class Invitations:
    """Use cases of invitations."""

    def __init__(
        self,
        store: InvitationStore,
        accounts: AuthStore,
        cache: RoleCache,
        lockout: LoginGuard,
        *,
        ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._cache = cache
        self._lockout = lockout
        self._ttl = timedelta(seconds=ttl_s)

    async def create(self, principal: Principal, email: str, role: str) -> CreatedInvitation:
        """Invites `email` to the caller's tenant with `role` (`member` when empty)."""
        email = normalise_email(email)
        role = parse_role("role", role, default=DEFAULT_ROLE)
        if role == OWNER and principal.role != OWNER:
            raise PermissionDenied("inviting an owner requires role owner")
        token = new_invitation_token()
        row = NewInvitation(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            email=email,
            role=role,
            invited_by=principal.user_id,
            expires_at=datetime.now(UTC) + self._ttl,
            token_hash=hash_token(token),
        )
        record = await self._store.insert_invitation(row, max_pending=MAX_PENDING_PER_TENANT)
        if record is None:
            raise ResourceExhausted(
                f"a tenant may have {MAX_PENDING_PER_TENANT} pending invitations; revoke one first"
            )
        return CreatedInvitation(record=record, token=token)

    async def list_pending(self, principal: Principal) -> list[InvitationRecord]:
        return await self._store.list_invitations(principal.tenant_id)

    async def revoke(self, principal: Principal, invitation_id: str) -> None:
        invitation_id = parse_uuid("id", invitation_id, "invitation")
        if not await self._store.revoke_invitation(principal.tenant_id, invitation_id):
            raise NotFound(NOT_FOUND_BY_ID)

    async def accept(
        self, principal: Principal | None, token: str, password: str
    ) -> tuple[UserRecord, TenantRecord]:
        """Adds the invited account to the invitation's tenant: the account of `password`, or
        the signed-in caller when `password` is empty. Returns the user as a member there."""
        if not token:
            raise InvalidArgument("token", "is required")
        token_hash = hash_token(token) if _TOKEN.fullmatch(token) else ""
        invitation = await self._store.find_invitation(token_hash) if token_hash else None
        if invitation is None or not invitation.pending:
            raise NotFound(INVITATION_NOT_FOUND)
        user, existing = await self._invitee(principal, invitation.email, password)
        async with self._store.accepting_invitation(token_hash) as session:
            locked = session.invitation
            if locked is None or not locked.pending:
                raise NotFound(INVITATION_NOT_FOUND)
            if existing and await session.is_member(user.id):
                raise AlreadyExists("you are a member of this tenant already")
            await self._cache.forget(locked.tenant_id, user.id)
            if existing:
                await session.join(user.id, user.email)
            else:
                await session.join_new(user)
            tenant = await session.tenant()
        with contextlib.suppress(Unavailable):
            await self._cache.remember(locked.tenant_id, user.id, locked.role)
        member = UserRecord(
            id=user.id,
            email=user.email,
            tenant_id=locked.tenant_id,
            role=locked.role,
            created_at=user.created_at,
        )
        return member, tenant

    async def _invitee(
        self, principal: Principal | None, email: str, password: str
    ) -> tuple[UserRecord, bool]:
        """The account that accepts, and whether it exists already (else it is to be made, in
        the invitation's tenant)."""
        if password:
            return await self._by_password(email, password)
        if principal is None:
            raise InvalidArgument("password", "is required unless signed in as the invited account")
        if principal.auth_method != AUTH_METHOD_JWT:
            raise PermissionDenied("API keys cannot accept invitations; sign in, or send password")
        me = await self._accounts.get_user(principal.tenant_id, principal.user_id)
        if me is None:
            raise Unauthenticated("sign in again: your token's tenant no longer has you")
        if me.email != email:
            raise PermissionDenied("this invitation is for another e-mail address")
        return me, True

    async def _by_password(self, email: str, password: str) -> tuple[UserRecord, bool]:
        account = await self._accounts.find_user_by_email(email)
        if account is None:
            passwords.check_policy(password, email)
            # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
            password_hash = await asyncio.to_thread(passwords.hash_password, password)
            new = UserRecord(
                id=str(uuid.uuid4()),
                email=email,
                tenant_id="",
                role="",
                created_at=datetime.now(UTC),
                password_hash=password_hash,
            )
            return new, False
        # The invited account's password: a log-in, locked out and counted like one.
        await self._lockout.check(email)
        ok = await asyncio.to_thread(passwords.verify_password, account.password_hash, password)
        if not ok:
            await self._lockout.record_failure(email)
            raise Unauthenticated(LOGIN_FAILED)
        await self._lockout.record_success(email)
        return account, True
