"""Registration, log-in and the current user: the auth domain, free of gRPC and SQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.auth import passwords
from services.auth.tokens import TokenIssuer, hash_token, new_refresh_token
from services.common.context import Principal
from services.common.errors import InvalidArgument, NotFound, Unauthenticated

_EMAIL = re.compile(
    r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$"
)
OWNER = "owner"
LOGIN_FAILED = "e-mail or password is incorrect"


@dataclass(frozen=True)
class TenantRecord:
    """A tenant as stored."""

    id: str
    name: str
    plan: str


@dataclass(frozen=True)
class UserRecord:
    """A user as stored; the hash never leaves the auth service."""

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


class AuthStore(Protocol):
    """Persistence the auth domain needs (PostgreSQL in production)."""

    async def create_tenant_with_owner(self, tenant: TenantRecord, user: UserRecord) -> None:
        """Inserts both atomically; AlreadyExists when the e-mail is taken."""

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        """The user with this (lower-cased) e-mail, in any tenant."""

    async def get_user(self, tenant_id: str, user_id: str) -> UserRecord | None:
        """The user, if it exists in that tenant."""

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
        default_plan: str,
        refresh_ttl_s: int,
    ) -> None:
        self._store = store
        self._issuer = issuer
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

    async def login(self, email: str, password: str) -> TokenPair:
        """Checks the password; unknown e-mail and wrong password fail alike, in like time."""
        if not email.strip():
            raise InvalidArgument("email", "is required")
        if not password:
            raise InvalidArgument("password", "is required")
        user = await self._store.find_user_by_email(email.strip().lower())
        ok = await asyncio.to_thread(
            passwords.verify_password, user.password_hash if user else None, password
        )
        if user is None or not ok:
            raise Unauthenticated(LOGIN_FAILED)
        if passwords.needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(passwords.hash_password, password)
            await self._store.update_password_hash(user.tenant_id, user.id, new_hash)
        return await self._issue_pair(user, family_id=str(uuid.uuid4()))

    async def current_user(self, principal: Principal) -> UserRecord:
        """The caller's own record."""
        user = await self._store.get_user(principal.tenant_id, principal.user_id)
        if user is None:
            raise NotFound("user not found")
        return user

    async def _issue_pair(self, user: UserRecord, *, family_id: str) -> TokenPair:
        access = self._issuer.issue(user_id=user.id, tenant_id=user.tenant_id, role=user.role)
        refresh = new_refresh_token()
        await self._store.save_refresh_token(
            tenant_id=user.tenant_id,
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_token(refresh),
            expires_at=datetime.now(UTC) + self._refresh_ttl,
        )
        return TokenPair(
            access_token=access.token, refresh_token=refresh, expires_in=access.expires_in
        )
