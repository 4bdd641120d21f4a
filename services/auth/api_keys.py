"""Creating, listing and revoking a tenant's API keys: free of gRPC and SQL.

Only owners and admins, signed in with an access token, create and revoke keys (the permission
table, services/common/permissions.py); an API key can never manage keys, so a leaked key
cannot mint or destroy others. A key acts with the role chosen at its creation (`member` by
default), never above its creator's: not at creation, and not later, since every call takes the
lower of the key's role and its creator's current one. Verifying keys is
`services.common.api_keys`, used by every service.
"""

from __future__ import annotations

import contextlib
import uuid
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from services.auth.membership import parse_role
from services.common.api_keys import generate_api_key
from services.common.context import AUTH_METHOD_JWT, Principal
from services.common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from services.common.permissions import MEMBER, at_least

KEY_MANAGER_ROLES = frozenset({"owner", "admin"})
API_KEY_ROLE = MEMBER
MAX_NAME_LENGTH = 100
MAX_LIVE_KEYS_PER_TENANT = 100
API_KEY_NOT_FOUND = "API key not found"
# Two random 60-bit prefixes clash almost never; a few draws settle it.
_CREATE_ATTEMPTS = 3


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key as listed: never its secret or hash."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    role: str = API_KEY_ROLE


@dataclass(frozen=True)
class NewApiKeyRow:
    """What the store inserts for a new key."""

    id: str
    tenant_id: str
    user_id: str
    name: str
    prefix: str
    secret_hash: str = field(repr=False)
    role: str = API_KEY_ROLE


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key: the record, and the key itself, which is shown once and never stored."""

    record: ApiKeyRecord
    key: str = field(repr=False)


class ApiKeyStore(Protocol):
    """Persistence of API keys (PostgreSQL in production)."""

    async def insert_api_key(self, row: NewApiKeyRow, *, max_live: int) -> ApiKeyRecord | None:
        """Inserts the key; None when the tenant already has `max_live` live keys.

        AlreadyExists when the prefix is taken.
        """

    async def list_api_keys(self, tenant_id: str) -> list[ApiKeyRecord]:
        """The tenant's live (not revoked) keys, newest first."""

    def revoking_api_key(self, tenant_id: str, key_id: str) -> AbstractAsyncContextManager[bool]:
        """A transaction revoking the tenant's live key; yields whether there was one.

        The revocation commits when the block is left normally, and not when it raises.
        """


class ApiKeyRevocations(Protocol):
    """Tells every service's verifier cache that a key is revoked (Redis in production)."""

    async def add_api_key(self, key_id: str) -> None:
        """Marks the key revoked for longer than any verifier caches it."""


def _require_key_manager(principal: Principal) -> None:
    if principal.auth_method != AUTH_METHOD_JWT:
        raise PermissionDenied("API keys cannot manage API keys; sign in as an owner or admin")
    if principal.role not in KEY_MANAGER_ROLES:
        raise PermissionDenied("only a tenant's owner or admins may manage API keys")


def parse_key_id(value: str) -> str:
    """The canonical form of a key id (a UUID), or InvalidArgument naming `id`."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("id", "is not a valid API key id") from None


class ApiKeys:
    """Use cases of API-key management."""

    def __init__(self, store: ApiKeyStore, revocations: ApiKeyRevocations) -> None:
        self._store = store
        self._revocations = revocations

    async def create(self, principal: Principal, name: str, role: str = "") -> CreatedApiKey:
        """A new key for the caller's tenant acting with `role` (`member` when empty); the
        returned `key` is never available again."""
        _require_key_manager(principal)
        name = name.strip()
        if not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise InvalidArgument("name", f"must be 1 to {MAX_NAME_LENGTH} characters")
        role = parse_role("role", role, default=API_KEY_ROLE)
        if not at_least(principal.role, role):
            raise PermissionDenied(
                f"role: a key with role {role} requires role {role} or above; the caller is"
                f" {principal.role}"
            )
        # The prefix is random and unique; on a clash (AlreadyExists), draw a new key.
        for _ in range(_CREATE_ATTEMPTS - 1):
            with contextlib.suppress(AlreadyExists):
                return await self._insert(principal, name, role)
        return await self._insert(principal, name, role)

    async def _insert(self, principal: Principal, name: str, role: str) -> CreatedApiKey:
        generated = generate_api_key()
        row = NewApiKeyRow(
            id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            name=name,
            prefix=generated.prefix,
            secret_hash=generated.secret_hash,
            role=role,
        )
        record = await self._store.insert_api_key(row, max_live=MAX_LIVE_KEYS_PER_TENANT)
        if record is None:
            raise ResourceExhausted(
                f"a tenant may have {MAX_LIVE_KEYS_PER_TENANT} live API keys; delete one first"
            )
        return CreatedApiKey(record=record, key=generated.key)

    async def list_keys(self, principal: Principal) -> list[ApiKeyRecord]:
        """The caller's tenant's live keys, newest first; any member may list them."""
        return await self._store.list_api_keys(principal.tenant_id)

    async def delete(self, principal: Principal, key_id: str) -> None:
        """Revokes the key at once in every service; another tenant's key is NotFound."""
        _require_key_manager(principal)
        key_id = parse_key_id(key_id)
        async with self._store.revoking_api_key(principal.tenant_id, key_id) as found:
            if found:
                # Inside the transaction: if Redis cannot take the marker, nothing is revoked
                # and the caller sees UNAVAILABLE, rather than a key that works for 30 s more.
                await self._revocations.add_api_key(key_id)
        if not found:
            raise NotFound(API_KEY_NOT_FOUND)
        # Once more after the commit: a denylist rebuild that read the database before it
        # (after Redis lost the first marker) could not restore the marker (ADR 57).
        with contextlib.suppress(Unavailable):
            await self._revocations.add_api_key(key_id)
