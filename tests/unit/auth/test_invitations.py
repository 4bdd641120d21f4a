"""Invitation rules (services/auth/invitations.py) on in-memory fakes: one answer for every
unusable token, the invited address only, a token shown once and stored hashed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from services.auth.accounts import TenantRecord, UserRecord
from services.auth.invitations import (
    INVITATION_NOT_FOUND,
    InvitationRecord,
    Invitations,
    NewInvitation,
)
from services.auth.passwords import hash_password
from services.auth.tokens import hash_token
from services.common.context import AUTH_METHOD_API_KEY, AUTH_METHOD_JWT, Principal
from services.common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)

TENANT = TenantRecord(str(uuid.uuid4()), "Ada Labs", "free")
OWNER = str(uuid.uuid4())
PASSWORD = "correct horse battery staple"


@dataclass
class FakeStore:
    """InvitationStore and the AuthStore reads invitations need, in memory."""

    invitations: dict[str, tuple[InvitationRecord, str]] = field(default_factory=dict)
    users: dict[str, UserRecord] = field(default_factory=dict)
    members: set[tuple[str, str]] = field(default_factory=set)

    async def insert_invitation(
        self, row: NewInvitation, *, max_pending: int
    ) -> InvitationRecord | None:
        record = InvitationRecord(
            row.id,
            row.tenant_id,
            row.email,
            row.role,
            row.invited_by,
            datetime.now(UTC),
            row.expires_at,
        )
        self.invitations[row.token_hash] = (record, row.token_hash)
        return record

    async def find_invitation(self, token_hash: str) -> InvitationRecord | None:
        found = self.invitations.get(token_hash)
        return found[0] if found else None

    @asynccontextmanager
    async def accepting_invitation(self, token_hash: str) -> AsyncIterator[Session]:
        yield Session(self, token_hash)

    async def find_user_by_email(self, email: str) -> UserRecord | None:
        return next((u for u in self.users.values() if u.email == email), None)

    async def get_user(self, tenant_id: str, user_id: str) -> UserRecord | None:
        user = self.users.get(user_id)
        return user if user and (tenant_id, user_id) in self.members else None


@dataclass
class Session:
    store: FakeStore
    token_hash: str

    @property
    def invitation(self) -> InvitationRecord | None:
        return self.store.invitations[self.token_hash][0]

    async def is_member(self, user_id: str) -> bool:
        return (TENANT.id, user_id) in self.store.members

    async def tenant(self) -> TenantRecord:
        return TENANT

    async def join(self, user_id: str, email: str) -> None:
        self.store.members.add((TENANT.id, user_id))
        self._spend()

    async def join_new(self, user: UserRecord) -> None:
        self.store.users[user.id] = replace(user, tenant_id=TENANT.id)
        await self.join(user.id, user.email)

    def _spend(self) -> None:
        record, token_hash = self.store.invitations[self.token_hash]
        self.store.invitations[self.token_hash] = (replace(record, pending=False), token_hash)


class Cache:
    async def forget(self, tenant_id: str, user_id: str) -> None:
        pass

    async def remember(self, tenant_id: str, user_id: str, role: str | None) -> None:
        pass


class Lockout:
    def __init__(self) -> None:
        self.failures = 0

    async def check(self, email: str) -> None:
        pass

    async def record_failure(self, email: str) -> None:
        self.failures += 1

    async def forgive(self, email: str) -> None:
        pass

    async def record_success(self, email: str) -> None:
        pass


def principal(user: str, role: str = "owner", method: str = AUTH_METHOD_JWT) -> Principal:
    return Principal(user, TENANT.id, role, method)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def lockout() -> Lockout:
    return Lockout()


@pytest.fixture
def invitations(store: FakeStore, lockout: Lockout) -> Invitations:
    return Invitations(store, store, Cache(), lockout)  # type: ignore[arg-type]


def existing(store: FakeStore, email: str) -> UserRecord:
    user = UserRecord(
        str(uuid.uuid4()),
        email,
        str(uuid.uuid4()),
        "owner",
        datetime.now(UTC),
        hash_password(PASSWORD),
    )
    store.users[user.id] = user
    store.members.add((user.tenant_id, user.id))
    return user


async def test_the_token_is_shown_once_and_stored_hashed(
    invitations: Invitations, store: FakeStore
) -> None:
    created = await invitations.create(principal(OWNER), " Grace@Example.com ", "")
    assert created.token.startswith("inv_")
    assert created.record.email == "grace@example.com"
    assert created.record.role == "member"
    assert list(store.invitations) == [hash_token(created.token)]
    assert created.token not in repr(created)


async def test_a_new_account_joins_once(invitations: Invitations, store: FakeStore) -> None:
    created = await invitations.create(principal(OWNER), "grace@example.com", "admin")
    user, tenant = await invitations.accept(None, created.token, "grace hopper compiles cobol")
    assert (user.email, user.tenant_id, user.role, tenant) == (
        "grace@example.com",
        TENANT.id,
        "admin",
        TENANT,
    )
    with pytest.raises(NotFound) as spent:
        await invitations.accept(None, created.token, "grace hopper compiles cobol")
    assert spent.value.message == INVITATION_NOT_FOUND


async def test_unusable_tokens_get_one_answer(invitations: Invitations, store: FakeStore) -> None:
    created = await invitations.create(principal(OWNER), "grace@example.com", "")
    record, token_hash = store.invitations[hash_token(created.token)]
    store.invitations[token_hash] = (replace(record, pending=False), token_hash)
    for token in (created.token, "inv_" + "A" * 43, "not a token", "inv_" + "A" * 400):
        with pytest.raises(NotFound) as refused:
            await invitations.accept(None, token, PASSWORD)
        assert refused.value.message == INVITATION_NOT_FOUND
    with pytest.raises(InvalidArgument) as empty:
        await invitations.accept(None, "", PASSWORD)
    assert empty.value.field == "token"


async def test_only_the_invited_address_accepts(
    invitations: Invitations, store: FakeStore, lockout: Lockout
) -> None:
    bob, carol = existing(store, "bob@example.com"), existing(store, "carol@example.com")
    created = await invitations.create(principal(OWNER), bob.email, "")
    as_carol = Principal(carol.id, carol.tenant_id, "owner", AUTH_METHOD_JWT)
    with pytest.raises(PermissionDenied):
        await invitations.accept(as_carol, created.token, "")
    as_key = Principal(bob.id, bob.tenant_id, "owner", AUTH_METHOD_API_KEY)
    with pytest.raises(PermissionDenied):
        await invitations.accept(as_key, created.token, "")
    with pytest.raises(Unauthenticated):
        await invitations.accept(None, created.token, "not bob's password at all")
    assert lockout.failures == 1
    with pytest.raises(InvalidArgument) as missing:
        await invitations.accept(None, created.token, "")
    assert missing.value.field == "password"
    as_bob = Principal(bob.id, bob.tenant_id, "owner", AUTH_METHOD_JWT)
    user, _ = await invitations.accept(as_bob, created.token, "")
    assert (user.id, user.tenant_id) == (bob.id, TENANT.id)


async def test_a_member_is_not_invited_in_again(invitations: Invitations, store: FakeStore) -> None:
    bob = existing(store, "bob@example.com")
    store.members.add((TENANT.id, bob.id))
    created = await invitations.create(principal(OWNER), bob.email, "")
    with pytest.raises(AlreadyExists):
        await invitations.accept(None, created.token, PASSWORD)


async def test_only_owners_invite_owners(invitations: Invitations) -> None:
    with pytest.raises(PermissionDenied):
        await invitations.create(principal(OWNER, "admin"), "o@example.com", "owner")
    created = await invitations.create(principal(OWNER), "o@example.com", "owner")
    assert created.record.role == "owner"
    assert created.record.expires_at - created.record.created_at > timedelta(days=6)
