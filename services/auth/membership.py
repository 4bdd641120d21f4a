"""Memberships: a user's role in a tenant, the default tenant, and the parsing every team use
case shares. Free of gRPC and SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.common.errors import InvalidArgument
from services.common.permissions import MEMBER, ROLES, is_valid_role


@dataclass(frozen=True)
class MemberRecord:
    """One user's membership of one tenant."""

    tenant_id: str
    user_id: str
    email: str
    role: str
    joined_at: datetime


class RoleCache(Protocol):
    """The cache of members' roles every service reads (Redis in production,
    services.common.roles)."""

    async def forget(self, tenant_id: str, user_id: str) -> None:
        """Drops the cached role; Unavailable when the cache cannot take it."""

    async def remember(self, tenant_id: str, user_id: str, role: str | None) -> None:
        """Caches the committed role (None: no longer a member)."""


def parse_role(field: str, value: str, *, default: str | None = None) -> str:
    """A role name, or `default` when empty; InvalidArgument naming `field` otherwise."""
    value = value.strip().lower()
    if not value and default is not None:
        return default
    if not value:
        raise InvalidArgument(field, f"is required: one of {', '.join(ROLES)}")
    if not is_valid_role(value):
        raise InvalidArgument(field, f"must be one of {', '.join(ROLES)}")
    return value


def parse_uuid(field: str, value: str, what: str) -> str:
    """The canonical form of an id (a UUID), or InvalidArgument naming `field`."""
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(field, f"is not a valid {what} id") from None


def default_tenant(home_tenant_id: str, memberships: Sequence[MemberRecord]) -> str | None:
    """The tenant log-in picks when the caller names none: the one the account was created in
    while the user is still a member there, else the oldest membership; None when none."""
    if any(m.tenant_id == home_tenant_id for m in memberships):
        return home_tenant_id
    oldest = min(memberships, key=lambda m: (m.joined_at, m.tenant_id), default=None)
    return oldest.tenant_id if oldest else None


DEFAULT_ROLE = MEMBER
