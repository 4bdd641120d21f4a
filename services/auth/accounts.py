"""Registration, log-in and the current user: the auth domain, free of gRPC and SQL."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.auth import passwords
from services.auth.membership import MemberRecord, default_tenant, parse_uuid
from services.auth.tokens import TokenIssuer, hash_token, new_refresh_token
from services.common import audit
from services.common.context import AUTH_METHOD_JWT, Principal
from services.common.denylist import remaining_ttl
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)

logger = logging.getLogger("catalytic.auth")

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)
OWNER = "owner"
LOGIN_FAILED = "e-mail or password is incorrect"
# Another tenant, one that does not exist, or one the user left: the same answer.
TENANT_NOT_FOUND = "tenant_id: no tenant with this id has you as a member"
NO_TENANT = "this account is no member of any tenant any more; accept an invitation to join one"
# One answer for unknown, expired, revoked and reused refresh tokens: nothing to probe with.
REFRESH_FAILED = "refresh token is invalid, expired or revoked"
# Ours are 46 characters; anything much longer is not worth hashing.
MAX_REFRESH_TOKEN_LENGTH = 256


@dataclass(frozen=True)
class TenantRecord:
    """A tenant as stored."""

    id: str
    name: str
    plan: str


@dataclass(frozen=True)
class UserRecord:
    """A user as stored, or as a member of one tenant (`tenant_id` and `role` that
    membership's); the hash never leaves the auth service."""

    id: str
    email: str
    tenant_id: str
    role: str
    created_at: datetime
    password_hash: str = field(repr=False, default="")


@dataclass(frozen=True)
class TokenPair:
    """What log-in and refresh return."""

    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True)
class RefreshTokenRecord:
    """A stored refresh token, found by its hash; the token itself is never stored."""

    tenant_id: str
    user_id: str
    family_id: str
    # The family's absolute expiry: every rotation copies it, so it never moves.
    expires_at: datetime
    spent: bool
    revoked: bool


class RefreshSession(Protocol):
    """One transaction around a refresh token, which it holds locked until the end."""

    @property
    def token(self) -> RefreshTokenRecord | None:
        """The presented token, or None when no token has that hash."""

    async def owner(self) -> UserRecord | None:
        """The user the token belongs to, if that user still exists."""

    async def replace(self, successor_hash: str) -> None:
        """Marks the token spent and stores its successor: same family, same expiry."""

    async def revoke_family(self) -> None:
        """Revokes every token of the token's family."""


class TokenDenylist(Protocol):
    """Where revoked access tokens go for every service to see (Redis in production)."""

    async def add(self, jti: str, ttl_s: int) -> None:
        """Rejects the token with this `jti` everywhere for `ttl_s` seconds."""


class RevocationLog(Protocol):
    """The durable record of revoked access tokens (PostgreSQL in production), from which the
    denylist is rebuilt when Redis loses it."""

    async def record(self, tenant_id: str, jti: str, expires_at: float) -> None:
        """Stores the revocation until the token expires; committed when this returns."""


class LoginGuard(Protocol):
    """Per-account brute-force lockout (Redis in production)."""

    async def check(self, email: str) -> int:
        """Counts an attempt, answering its number; ResourceExhausted while the address is
        locked."""

    def locks(self, attempt: int) -> bool:
        """Whether the `attempt`-th counted attempt, failed, locks the address."""

    async def record_failure(self, email: str) -> None:
        """Notes a failed attempt."""

    async def forgive(self, email: str) -> None:
        """Takes back the attempt `check` counted: it could not be judged."""

    async def record_success(self, email: str) -> None:
        """Forgets the address's failures."""


class Audit(Protocol):
    """Where the events that change nothing else go (services/common/audit.py AuditTrail)."""

    async def record(
        self, tenant_id: str, event: audit.AuditEvent, *, actor: audit.Actor | None = None
    ) -> None:
        """Appends the event to the tenant's chain, committed when this returns."""


class AuthStore(Protocol):
    """Persistence the auth domain needs (PostgreSQL in production)."""

    async def create_tenant_with_owner(self, tenant: TenantRecord, user: UserRecord) -> None:
        """Inserts both, and the owner's membership, atomically; AlreadyExists when the e-mail
        is taken."""

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        """The user with this (lower-cased) e-mail, with the tenant it was created in."""

    async def memberships_of(self, email: str) -> list[MemberRecord]:
        """Every membership of the user with this e-mail, in any tenant."""

    async def get_user(self, tenant_id: str, user_id: str) -> UserRecord | None:
        """The user as a member of that tenant; None when it is no member of it."""

    async def update_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        """Replaces a user's password hash."""

    async def save_refresh_token(
        self,
        *,
        tenant_id: str,
        user_id: str,
        family_id: str,
        token_hash: str,
        expires_at: datetime,
    ) -> None:
        """Stores a new refresh token (hashed)."""

    def refresh_session(self, token_hash: str) -> AbstractAsyncContextManager[RefreshSession]:
        """A transaction holding the token with this hash locked; commits when left normally."""

    async def revoke_refresh_family(self, tenant_id: str, user_id: str, token_hash: str) -> bool:
        """Revokes the family of the user's token with this hash; False when there is none."""


def normalise_email(email: str) -> str:
    """Validates and lower-cases an e-mail address; InvalidArgument(field="email") if bad."""
    email = email.strip().lower()
    if not email:
        raise InvalidArgument("email", "is required")
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidArgument("email", "is not a valid e-mail address")
    return email


class Accounts:
    """Use cases of the auth service."""

    def __init__(
        self,
        store: AuthStore,
        issuer: TokenIssuer,
        *,
        denylist: TokenDenylist,
        revocations: RevocationLog,
        lockout: LoginGuard,
        audit_trail: Audit,
        default_plan: str,
        refresh_ttl_s: int,
    ) -> None:
        self._store = store
        self._issuer = issuer
        self._denylist = denylist
        self._revocations = revocations
        self._lockout = lockout
        self._audit = audit_trail
        self._default_plan = default_plan
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)

    async def register(
        self, email: str, password: str, tenant_name: str
    ) -> tuple[UserRecord, TenantRecord]:
        """Creates a new tenant and its owner; never joins an existing tenant."""
        email = normalise_email(email)
        tenant_name = tenant_name.strip()
        if not 1 <= len(tenant_name) <= 100:
            raise InvalidArgument("tenant_name", "must be 1 to 100 characters")
        passwords.check_policy(password, email)
        # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        tenant = TenantRecord(id=str(uuid.uuid4()), name=tenant_name, plan=self._default_plan)
        user = UserRecord(
            id=str(uuid.uuid4()),
            email=email,
            tenant_id=tenant.id,
            role=OWNER,
            created_at=datetime.now(UTC),
            password_hash=password_hash,
        )
        await self._store.create_tenant_with_owner(tenant, user)
        return user, tenant

    async def login(self, email: str, password: str, tenant_id: str = "") -> TokenPair:
        """Checks the password; unknown e-mail and wrong password fail alike, in like time.

        The pair is for `tenant_id`, or the user's default tenant when it is empty.
        """
        if not email.strip():
            raise InvalidArgument("email", "is required")
        if not password:
            raise InvalidArgument("password", "is required")
        wanted = parse_uuid("tenant_id", tenant_id, "tenant") if tenant_id else ""
        address = email.strip().lower()
        # Refused before the password is looked at; unknown addresses lock exactly like real
        # ones, so a lockout tells nothing about which e-mails exist.
        attempt = await self._lockout.check(address)
        try:
            user = await self._store.find_user_by_email(address)
        except Unavailable:
            # The database could not say: not a failed guess (an outage must not lock out
            # every user who retries through it).
            await self._lockout.forgive(address)
            raise
        ok = await asyncio.to_thread(
            passwords.verify_password, user.password_hash if user else None, password
        )
        if user is None or not ok:
            await self._lockout.record_failure(address)
            await self._audit_failure(address, user, attempt)
            raise Unauthenticated(LOGIN_FAILED)
        await self._lockout.record_success(address)
        if passwords.needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(passwords.hash_password, password)
            await self._store.update_password_hash(user.tenant_id, user.id, new_hash)
        memberships = await self._store.memberships_of(user.email)
        chosen = wanted or default_tenant(user.tenant_id, memberships)
        membership = next((m for m in memberships if m.tenant_id == chosen), None)
        if membership is None:
            raise NotFound(TENANT_NOT_FOUND) if wanted else FailedPrecondition(NO_TENANT)
        member = UserRecord(
            id=user.id,
            email=user.email,
            tenant_id=membership.tenant_id,
            role=membership.role,
            created_at=user.created_at,
        )
        pair = await self._issue_pair(member, family_id=str(uuid.uuid4()))
        await self._audit.record(
            member.tenant_id,
            audit.AuditEvent("auth.login", "user", user.id, details={"role": member.role}),
            actor=audit.Actor("user", user.id),
        )
        return pair

    async def _audit_failure(self, address: str, user: UserRecord | None, attempt: int) -> None:
        """A refused log-in, and the lockout it starts: in the account's tenant, or for an
        unknown e-mail the platform's chain with only the address's domain (a mistyped
        password in the e-mail field must not be kept)."""
        anonymous = audit.Actor("anonymous", "")
        if user is None:
            tenant, target, reason = audit.PLATFORM_TENANT, "", "unknown_email"
            details: dict[str, audit.Detail] = {"email_domain": address.rpartition("@")[2][:253]}
        else:
            tenant, target, reason, details = user.tenant_id, user.id, "bad_password", {}
        await self._audit.record(
            tenant,
            audit.AuditEvent("auth.login", "user", target, audit.FAILURE, reason, details),
            actor=anonymous,
        )
        if self._lockout.locks(attempt):
            await self._audit.record(
                tenant,
                audit.AuditEvent(
                    "auth.lockout", "user", target, details={**details, "attempts": attempt}
                ),
                actor=audit.Actor.system("auth"),
            )

    async def switch_tenant(self, principal: Principal, tenant_id: str) -> TokenPair:
        """A new pair (a new refresh family) for another tenant the caller belongs to."""
        if principal.auth_method != AUTH_METHOD_JWT:
            raise FailedPrecondition("switching tenants needs an access token, not an API key")
        tenant_id = parse_uuid("tenant_id", tenant_id, "tenant")
        member = await self._store.get_user(tenant_id, principal.user_id)
        if member is None:
            raise NotFound(TENANT_NOT_FOUND)
        return await self._issue_pair(member, family_id=str(uuid.uuid4()))

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spends the refresh token for a new pair in its family.

        Presenting a spent token again means two parties hold it (RFC 9700 §4.14.2): the whole
        family is revoked, the legitimate client's newest token included. Two requests racing
        with one token are the same case: the lock lets the first through, the second revokes.
        """
        if not refresh_token:
            raise InvalidArgument("refresh_token", "is required")
        if len(refresh_token) > MAX_REFRESH_TOKEN_LENGTH:
            raise Unauthenticated(REFRESH_FAILED)
        pair: TokenPair | None = None
        reused: RefreshTokenRecord | None = None
        # Decided inside the transaction, raised after it: a revocation must commit.
        async with self._store.refresh_session(hash_token(refresh_token)) as session:
            token = session.token
            if token is None or token.revoked or token.expires_at <= datetime.now(UTC):
                pass
            elif token.spent:
                await session.revoke_family()
                reused = token
            else:
                user = await session.owner()
                if user is not None:
                    successor = new_refresh_token()
                    await session.replace(hash_token(successor))
                    pair = self._pair(user, successor)
        if reused is not None:
            logger.warning(
                "spent refresh token presented again: family %s of tenant %s revoked",
                reused.family_id,
                reused.tenant_id,
            )
        if pair is None:
            raise Unauthenticated(REFRESH_FAILED)
        return pair

    async def logout(self, principal: Principal, refresh_token: str) -> None:
        """Revokes the caller's access token everywhere and, if given, the refresh family.

        A refresh token that is unknown, or not the caller's, is ignored: the answer must not
        tell whether it exists.

        The revocation is committed to the durable log before it is listed in the denylist:
        whatever Redis loses later is rebuilt from the log (ADR 57). If listing fails, the
        caller sees Unavailable and the token may work until a retry or a rebuild lists it.
        """
        if principal.auth_method != AUTH_METHOD_JWT or not principal.token_id:
            raise FailedPrecondition(
                "logout ends an access-token session; delete an API key to revoke it"
            )
        await self._revocations.record(
            principal.tenant_id, principal.token_id, principal.expires_at
        )
        await self._denylist.add(principal.token_id, remaining_ttl(principal.expires_at))
        family_revoked = False
        if refresh_token and len(refresh_token) <= MAX_REFRESH_TOKEN_LENGTH:
            family_revoked = await self._store.revoke_refresh_family(
                principal.tenant_id, principal.user_id, hash_token(refresh_token)
            )
        await self._audit.record(
            principal.tenant_id,
            audit.AuditEvent(
                "auth.logout",
                "user",
                principal.user_id,
                details={"refresh_family_revoked": family_revoked},
            ),
        )

    async def current_user(self, principal: Principal) -> UserRecord:
        """The caller's own record, with the role the credential acts with (an API key's may be
        below its creator's)."""
        user = await self._store.get_user(principal.tenant_id, principal.user_id)
        if user is None:
            raise NotFound("user not found")
        return dataclasses.replace(user, role=principal.role)

    async def _issue_pair(self, user: UserRecord, *, family_id: str) -> TokenPair:
        refresh = new_refresh_token()
        await self._store.save_refresh_token(
            tenant_id=user.tenant_id,
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_token(refresh),
            expires_at=datetime.now(UTC) + self._refresh_ttl,
        )
        return self._pair(user, refresh)

    def _pair(self, user: UserRecord, refresh_token: str) -> TokenPair:
        # The role claim is the membership's when issued; the services read the current one on
        # every call (the permission interceptor), so a change holds at once anyway.
        access = self._issuer.issue(user_id=user.id, tenant_id=user.tenant_id, role=user.role)
        return TokenPair(
            access_token=access.token, refresh_token=refresh_token, expires_in=access.expires_in
        )
