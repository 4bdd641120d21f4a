"""Refresh rotation, logout and API-key management rules, on in-memory fakes of the stores."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.auth.accounts import Accounts, RefreshTokenRecord, UserRecord
from services.auth.api_keys import ApiKeyRecord, ApiKeys, NewApiKeyRow
from services.auth.keys import KeyRing
from services.auth.tokens import TokenIssuer, hash_token
from services.common.access_tokens import DEFAULT_LEEWAY_S
from services.common.context import Principal
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

TENANT = str(uuid.uuid4())
USER = UserRecord(
    id=str(uuid.uuid4()),
    email="ada@example.com",
    tenant_id=TENANT,
    role="owner",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


@dataclass
class FakeStore:
    """The refresh-token part of AuthStore, in memory, committing only on a clean exit."""

    tokens: dict[str, RefreshTokenRecord] = field(default_factory=dict)
    users: dict[str, UserRecord] = field(default_factory=lambda: {USER.id: USER})

    async def save_refresh_token(
        self, *, tenant_id: str, user_id: str, family_id: str, token_hash: str, expires_at: datetime
    ) -> None:
        self.tokens[token_hash] = RefreshTokenRecord(
            tenant_id=tenant_id,
            user_id=user_id,
            family_id=family_id,
            expires_at=expires_at,
            spent=False,
            revoked=False,
        )

    @asynccontextmanager
    async def refresh_session(self, token_hash: str) -> AsyncIterator[FakeStore.Session]:
        session = FakeStore.Session(self, token_hash, dict(self.tokens))
        yield session
        self.tokens = session.tokens

    @dataclass
    class Session:
        store: FakeStore
        hash: str
        tokens: dict[str, RefreshTokenRecord]

        @property
        def token(self) -> RefreshTokenRecord | None:
            return self.tokens.get(self.hash)

        async def owner(self) -> UserRecord | None:
            assert self.token is not None
            return self.store.users.get(self.token.user_id)

        async def replace(self, successor_hash: str) -> None:
            token = self.tokens[self.hash]
            self.tokens[self.hash] = replace(token, spent=True)
            self.tokens[successor_hash] = replace(token, spent=False)

        async def revoke_family(self) -> None:
            family = self.tokens[self.hash].family_id
            for key, token in self.tokens.items():
                if token.family_id == family:
                    self.tokens[key] = replace(token, revoked=True)

    async def revoke_refresh_family(self, tenant_id: str, user_id: str, token_hash: str) -> bool:
        token = self.tokens.get(token_hash)
        if token is None or token.tenant_id != tenant_id or token.user_id != user_id:
            return False
        for key, other in self.tokens.items():
            if other.family_id == token.family_id:
                self.tokens[key] = replace(other, revoked=True)
        return True


@dataclass
class FakeRevocationLog:
    """The durable log; `events` (shared with the denylist) records the order of writes."""

    events: list[str]
    rows: dict[str, tuple[str, float]] = field(default_factory=dict)
    down: bool = False

    async def record(self, tenant_id: str, jti: str, expires_at: float) -> None:
        if self.down:
            raise Unavailable("database down")
        self.events.append(f"log {jti}")
        self.rows[jti] = (tenant_id, expires_at)


@dataclass
class FakeDenylist:
    jtis: dict[str, int] = field(default_factory=dict)
    api_keys: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    down: bool = False

    async def add(self, jti: str, ttl_s: int) -> None:
        if self.down:
            raise Unavailable("redis down")
        self.events.append(f"denylist {jti}")
        self.jtis[jti] = ttl_s

    async def add_api_key(self, key_id: str) -> None:
        if self.down:
            raise Unavailable("redis down")
        self.api_keys.append(key_id)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def denylist() -> FakeDenylist:
    return FakeDenylist()


@pytest.fixture
def revocations(denylist: FakeDenylist) -> FakeRevocationLog:
    return FakeRevocationLog(denylist.events)


@dataclass
class RecordingAudit:
    """The audit trail, as a list of (tenant, action, outcome)."""

    events: list[tuple[str, str, str]] = field(default_factory=list)

    async def record(self, tenant_id: str, event: Any, *, actor: Any = None) -> None:
        self.events.append((tenant_id, event.action, event.outcome))


class NoLockout:
    """A LoginGuard that never locks: lockout has its own tests."""

    async def check(self, email: str) -> int:
        return 1

    def locks(self, attempt: int) -> bool:
        return False

    async def record_failure(self, email: str) -> None:
        return None

    async def forgive(self, email: str) -> None:
        return None

    async def record_success(self, email: str) -> None:
        return None


@dataclass
class CountingLockout:
    """Counts attempts as LoginLockout does: `check` counts, `forgive` takes one back."""

    attempts: int = 0

    async def check(self, email: str) -> int:
        self.attempts += 1
        return self.attempts

    def locks(self, attempt: int) -> bool:
        return False

    async def record_failure(self, email: str) -> None:
        return None

    async def forgive(self, email: str) -> None:
        self.attempts -= 1

    async def record_success(self, email: str) -> None:
        self.attempts = 0


@pytest.fixture
def accounts(
    store: FakeStore, denylist: FakeDenylist, revocations: FakeRevocationLog, tmp_path: Path
) -> Accounts:
    issuer = TokenIssuer(KeyRing.load(tmp_path / "keys"), issuer="i", audience="a", ttl_s=600)
    return Accounts(
        store,  # type: ignore[arg-type]
        issuer,
        denylist=denylist,
        revocations=revocations,
        lockout=NoLockout(),
        audit_trail=RecordingAudit(),
        default_plan="free",
        refresh_ttl_s=3600,
    )


async def first_token(accounts: Accounts, store: FakeStore) -> str:
    pair = await accounts._issue_pair(USER, family_id=str(uuid.uuid4()))
    return pair.refresh_token


async def test_refresh_rotates_within_the_family_keeping_its_expiry(
    accounts: Accounts, store: FakeStore
) -> None:
    old = await first_token(accounts, store)
    pair = await accounts.refresh(old)
    assert pair.refresh_token != old
    before, after = store.tokens[hash_token(old)], store.tokens[hash_token(pair.refresh_token)]
    assert before.spent
    assert not after.spent
    assert after.family_id == before.family_id
    assert after.expires_at == before.expires_at


async def test_reuse_revokes_the_family_and_commits(accounts: Accounts, store: FakeStore) -> None:
    old = await first_token(accounts, store)
    new = (await accounts.refresh(old)).refresh_token
    with pytest.raises(Unauthenticated):
        await accounts.refresh(old)
    assert store.tokens[hash_token(new)].revoked
    with pytest.raises(Unauthenticated):
        await accounts.refresh(new)


async def test_unusable_tokens_fail_alike(accounts: Accounts, store: FakeStore) -> None:
    expired = await first_token(accounts, store)
    store.tokens[hash_token(expired)] = replace(
        store.tokens[hash_token(expired)], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    orphan = await first_token(accounts, store)
    store.users.clear()
    answers = []
    for token in (expired, orphan, "rt_unknown", "x" * 10_000):
        with pytest.raises(Unauthenticated) as info:
            await accounts.refresh(token)
        answers.append(info.value.message)
    assert len(set(answers)) == 1
    with pytest.raises(InvalidArgument):
        await accounts.refresh("")


def jwt_principal(role: str = "owner", *, expires_in: float = 600) -> Principal:
    return Principal(
        user_id=USER.id,
        tenant_id=TENANT,
        role=role,
        auth_method="jwt",
        token_id=uuid.uuid4().hex,
        expires_at=time.time() + expires_in,
    )


def key_principal() -> Principal:
    return Principal(
        user_id=USER.id,
        tenant_id=TENANT,
        role="member",
        auth_method="api_key",
        api_key_id=str(uuid.uuid4()),
    )


async def test_logout_lists_the_jti_for_its_remaining_life_and_revokes_the_family(
    accounts: Accounts, store: FakeStore, denylist: FakeDenylist, revocations: FakeRevocationLog
) -> None:
    refresh = await first_token(accounts, store)
    principal = jwt_principal(expires_in=300)
    await accounts.logout(principal, refresh)
    ttl = denylist.jtis[principal.token_id]
    assert 300 + DEFAULT_LEEWAY_S - 1 <= ttl <= 300 + DEFAULT_LEEWAY_S
    assert store.tokens[hash_token(refresh)].revoked
    # Durable first, then Redis: a rebuild after Redis loses the entry finds it (ADR 57).
    assert revocations.rows == {principal.token_id: (TENANT, principal.expires_at)}
    assert denylist.events == [f"log {principal.token_id}", f"denylist {principal.token_id}"]


async def test_logout_lists_nothing_when_the_revocation_cannot_be_stored(
    accounts: Accounts, store: FakeStore, denylist: FakeDenylist, revocations: FakeRevocationLog
) -> None:
    refresh = await first_token(accounts, store)
    revocations.down = True
    with pytest.raises(Unavailable):
        await accounts.logout(jwt_principal(), refresh)
    assert denylist.jtis == {}
    assert not store.tokens[hash_token(refresh)].revoked


async def test_logout_ignores_unknown_and_foreign_refresh_tokens(
    accounts: Accounts, store: FakeStore, denylist: FakeDenylist
) -> None:
    refresh = await first_token(accounts, store)
    stranger = replace(jwt_principal(), user_id=str(uuid.uuid4()))
    await accounts.logout(stranger, refresh)
    await accounts.logout(jwt_principal(), "rt_unknown")
    assert not store.tokens[hash_token(refresh)].revoked
    assert len(denylist.jtis) == 2


async def test_logout_needs_an_access_token(accounts: Accounts) -> None:
    with pytest.raises(FailedPrecondition):
        await accounts.logout(key_principal(), "")


async def test_logout_fails_closed_when_the_denylist_is_down(
    accounts: Accounts, store: FakeStore, denylist: FakeDenylist
) -> None:
    refresh = await first_token(accounts, store)
    denylist.down = True
    with pytest.raises(Unavailable):
        await accounts.logout(jwt_principal(), refresh)


# ------------------------------------------------------------------ API-key management
@dataclass
class FakeKeyStore:
    rows: dict[str, tuple[NewApiKeyRow, bool]] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)

    async def insert_api_key(self, row: NewApiKeyRow, *, max_live: int) -> ApiKeyRecord | None:
        live = sum(
            1 for r, revoked in self.rows.values() if r.tenant_id == row.tenant_id and not revoked
        )
        if live >= max_live:
            return None
        self.rows[row.id] = (row, False)
        return ApiKeyRecord(row.id, row.name, row.prefix, datetime.now(UTC), None)

    async def list_api_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        return []

    @asynccontextmanager
    async def revoking_api_key(self, tenant_id: str, key_id: str) -> AsyncIterator[bool]:
        row = self.rows.get(key_id)
        found = row is not None and row[0].tenant_id == tenant_id and not row[1]
        yield found
        if found:
            self.rows[key_id] = (self.rows[key_id][0], True)
            self.committed.append(key_id)


@pytest.fixture
def key_store() -> FakeKeyStore:
    return FakeKeyStore()


@pytest.fixture
def api_keys(key_store: FakeKeyStore, denylist: FakeDenylist) -> ApiKeys:
    return ApiKeys(key_store, denylist)


@pytest.mark.parametrize("role", ["owner", "admin"])
async def test_owners_and_admins_create_member_keys(
    api_keys: ApiKeys, key_store: FakeKeyStore, role: str
) -> None:
    created = await api_keys.create(jwt_principal(role), "  ci  ")
    assert created.record.name == "ci"
    row, _ = key_store.rows[created.record.id]
    assert row.role == "member"
    assert row.user_id == USER.id
    assert created.key not in repr(created)
    assert created.key not in repr(row)


@pytest.mark.parametrize("principal", [jwt_principal("member"), key_principal()])
async def test_members_and_api_keys_cannot_manage_keys(
    api_keys: ApiKeys, principal: Principal
) -> None:
    with pytest.raises(PermissionDenied):
        await api_keys.create(principal, "x")
    with pytest.raises(PermissionDenied):
        await api_keys.delete(principal, str(uuid.uuid4()))


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
async def test_key_names_are_validated(api_keys: ApiKeys, name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        await api_keys.create(jwt_principal(), name)
    assert info.value.field == "name"


async def test_delete_marks_the_key_revoked_everywhere(
    api_keys: ApiKeys, key_store: FakeKeyStore, denylist: FakeDenylist
) -> None:
    created = await api_keys.create(jwt_principal(), "ci")
    await api_keys.delete(jwt_principal(), created.record.id.upper())
    # Inside the transaction, and again after its commit (ADR 57).
    assert denylist.api_keys == [created.record.id, created.record.id]
    assert key_store.committed == [created.record.id]
    with pytest.raises(NotFound):
        await api_keys.delete(jwt_principal(), created.record.id)


async def test_delete_of_a_malformed_or_unknown_id(api_keys: ApiKeys) -> None:
    with pytest.raises(InvalidArgument) as info:
        await api_keys.delete(jwt_principal(), "not-a-uuid")
    assert info.value.field == "id"
    with pytest.raises(NotFound):
        await api_keys.delete(jwt_principal(), str(uuid.uuid4()))


async def test_delete_revokes_nothing_when_the_marker_cannot_be_written(
    api_keys: ApiKeys, key_store: FakeKeyStore, denylist: FakeDenylist
) -> None:
    created = await api_keys.create(jwt_principal(), "ci")
    denylist.down = True
    with pytest.raises(Unavailable):
        await api_keys.delete(jwt_principal(), created.record.id)
    assert key_store.committed == []


async def test_a_log_in_the_database_could_not_judge_is_not_a_failed_attempt(
    tmp_path: Path,
) -> None:
    # A database outage answers 503; users retrying through it must not lock themselves out.
    class DownStore:
        async def find_user_by_email(self, email: str) -> UserRecord | None:
            raise Unavailable("the database is unavailable")

    lockout = CountingLockout()
    issuer = TokenIssuer(KeyRing.load(tmp_path / "keys"), issuer="i", audience="a", ttl_s=600)
    accounts = Accounts(
        DownStore(),  # type: ignore[arg-type]
        issuer,
        denylist=FakeDenylist(),
        revocations=FakeRevocationLog(FakeDenylist().events),
        lockout=lockout,
        audit_trail=RecordingAudit(),
        default_plan="free",
        refresh_ttl_s=3600,
    )
    for _ in range(3):
        with pytest.raises(Unavailable):
            await accounts.login("ada@example.com", "correct horse battery staple")
    assert lockout.attempts == 0
