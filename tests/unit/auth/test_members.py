"""Member management rules (services/auth/members.py) and the default tenant, on in-memory fakes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from services.auth.members import Members
from services.auth.membership import MemberRecord, default_tenant, parse_role
from services.common.context import AUTH_METHOD_JWT, Principal
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

TENANT = str(uuid.uuid4())
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def member(role: str, *, tenant: str = TENANT, joined: datetime = T0) -> MemberRecord:
    user = str(uuid.uuid4())
    return MemberRecord(tenant, user, f"{user[:8]}@example.com", role, joined)


@dataclass
class FakeMemberStore:
    """MemberStore in memory; a change commits only when its block is left normally."""

    members: dict[str, MemberRecord] = field(default_factory=dict)

    def add(self, record: MemberRecord) -> MemberRecord:
        self.members[record.user_id] = record
        return record

    async def list_members(self, tenant_id: str) -> list[MemberRecord]:
        return sorted(self.members.values(), key=lambda m: m.joined_at)

    async def tenants_of(self, email: str) -> list[object]:
        return []

    @asynccontextmanager
    async def changing_member(self, tenant_id: str, user_id: str) -> AsyncIterator[Change]:
        change = Change(dict(self.members), user_id)
        yield change
        self.members = change.members

    async def get_user(self, tenant_id: str, user_id: str) -> None:
        return None

    async def find_user_by_email(self, email: str) -> None:
        return None


@dataclass
class Change:
    members: dict[str, MemberRecord]
    user_id: str

    @property
    def member(self) -> MemberRecord | None:
        return self.members.get(self.user_id)

    @property
    def owners(self) -> int:
        return sum(1 for m in self.members.values() if m.role == "owner")

    async def set_role(self, role: str) -> MemberRecord:
        self.members[self.user_id] = replace(self.members[self.user_id], role=role)
        return self.members[self.user_id]

    async def remove(self) -> None:
        del self.members[self.user_id]


@dataclass
class FakeCache:
    """The role cache: what was forgotten and remembered, and whether Redis is down."""

    events: list[tuple[str, str, str | None]] = field(default_factory=list)
    down: bool = False

    async def forget(self, tenant_id: str, user_id: str) -> None:
        if self.down:
            raise Unavailable("redis down")
        self.events.append(("forget", user_id, None))

    async def remember(self, tenant_id: str, user_id: str, role: str | None) -> None:
        if self.down:
            raise Unavailable("redis down")
        self.events.append(("remember", user_id, role))


def caller(record: MemberRecord) -> Principal:
    return Principal(record.user_id, TENANT, record.role, AUTH_METHOD_JWT)


@pytest.fixture
def store() -> FakeMemberStore:
    return FakeMemberStore()


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def members(store: FakeMemberStore, cache: FakeCache) -> Members:
    return Members(store, store, cache)  # type: ignore[arg-type]


async def test_a_role_change_is_cached_after_the_commit(
    members: Members, store: FakeMemberStore, cache: FakeCache
) -> None:
    owner, grace = store.add(member("owner")), store.add(member("member"))
    updated = await members.update(caller(owner), grace.user_id, " Admin ")
    assert updated.role == "admin"
    assert store.members[grace.user_id].role == "admin"
    assert cache.events == [
        ("forget", grace.user_id, None),
        ("remember", grace.user_id, "admin"),
    ]


async def test_redis_down_rolls_the_change_back(
    members: Members, store: FakeMemberStore, cache: FakeCache
) -> None:
    owner, grace = store.add(member("owner")), store.add(member("member"))
    cache.down = True
    with pytest.raises(Unavailable):
        await members.update(caller(owner), grace.user_id, "admin")
    assert store.members[grace.user_id].role == "member"


async def test_the_last_owner_stays(members: Members, store: FakeMemberStore) -> None:
    owner = store.add(member("owner"))
    with pytest.raises(FailedPrecondition):
        await members.update(caller(owner), owner.user_id, "admin")
    with pytest.raises(FailedPrecondition):
        await members.remove(caller(owner), owner.user_id)
    second = store.add(member("owner"))
    await members.update(caller(second), owner.user_id, "member")
    assert store.members[owner.user_id].role == "member"


async def test_only_owners_touch_owners(members: Members, store: FakeMemberStore) -> None:
    owner, admin, grace = (store.add(member(r)) for r in ("owner", "admin", "member"))
    for attempt in (
        members.update(caller(admin), owner.user_id, "member"),
        members.remove(caller(admin), owner.user_id),
        members.update(caller(admin), grace.user_id, "owner"),
    ):
        with pytest.raises(PermissionDenied):
            await attempt
    await members.update(caller(admin), grace.user_id, "admin")
    await members.remove(caller(admin), grace.user_id)
    assert set(store.members) == {owner.user_id, admin.user_id}


async def test_unknown_members_and_bad_input_name_their_field(
    members: Members, store: FakeMemberStore
) -> None:
    owner = store.add(member("owner"))
    with pytest.raises(NotFound):
        await members.remove(caller(owner), str(uuid.uuid4()))
    with pytest.raises(InvalidArgument) as bad:
        await members.update(caller(owner), "not-a-uuid", "admin")
    assert bad.value.field == "user_id"
    with pytest.raises(InvalidArgument) as bad:
        await members.update(caller(owner), owner.user_id, "superuser")
    assert bad.value.field == "role"
    with pytest.raises(InvalidArgument):
        parse_role("role", "")


def test_the_default_tenant_is_home_while_a_member_there_else_the_oldest() -> None:
    home, first, second = (str(uuid.uuid4()) for _ in range(3))
    later = member("member", tenant=second, joined=T0 + timedelta(days=2))
    earlier = member("admin", tenant=first, joined=T0 + timedelta(days=1))
    at_home = member("owner", tenant=home)
    assert default_tenant(home, [later, at_home, earlier]) == home
    assert default_tenant(home, [later, earlier]) == first
    assert default_tenant(home, []) is None
