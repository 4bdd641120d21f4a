"""Permission interceptor: every RPC is checked against the one table in common/permissions.py.

It runs right after the auth interceptor, on every service, so the rule holds for gRPC callers
as for REST ones; the gateway enforces nothing of it. For an RPC that needs a role, the
caller's role is read afresh (common/roles.py) rather than taken from the token: a member
removed or demoted a moment ago is treated as such on the very next call. An API key acts with
its own role or its creator's current one, whichever is lower.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Protocol

from services.common import context as request_context
from services.common.context import AUTH_METHOD_API_KEY, Principal
from services.common.errors import PermissionDenied, Unauthenticated
from services.common.interceptors.base import Context, RpcInterceptor
from services.common.permissions import (
    ALWAYS_PUBLIC_PREFIXES,
    RULES,
    Access,
    Rule,
    at_least,
    lower,
    service_methods,
)

NOT_A_MEMBER = "credential's user is no longer a member of this tenant"


class RoleSource(Protocol):
    """Members' current roles (common/roles.py: PostgreSQL behind a Redis cache)."""

    async def role(self, tenant_id: str, user_id: str) -> str | None:
        """The user's role in the tenant, or None when the user is no member of it."""


class PermissionInterceptor(RpcInterceptor):
    """Refuses calls below their RPC's role, and RPCs without a rule (fail closed).

    `services` are the full names of the services the server registers: a method of theirs
    without a rule stops the server from being built. Without `roles` (unit tests with fakes)
    the role in the credential is trusted.
    """

    def __init__(
        self,
        services: Collection[str],
        *,
        roles: RoleSource | None = None,
        rules: Mapping[str, Rule] = RULES,
    ) -> None:
        missing = [m for m in service_methods(services) if m not in rules]
        if missing:
            raise ValueError(
                "no permission rule for " + ", ".join(missing) + " (services/common/permissions.py)"
            )
        self._rules = rules
        self._roles = roles

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        if not method.startswith(ALWAYS_PUBLIC_PREFIXES):
            rule = self._rules.get(method)
            if rule is None:
                raise PermissionDenied(f"{method} has no permission rule")
            if rule.access is Access.ROLE:
                await self._authorize(rule)
        yield

    async def _authorize(self, rule: Rule) -> None:
        principal = request_context.current_principal()
        is_key = principal.auth_method == AUTH_METHOD_API_KEY
        if is_key and not rule.api_keys:
            raise PermissionDenied(
                f"API keys cannot call this; requires role {rule.role} or above, signed in"
                " with an access token"
            )
        effective = await self._effective_role(principal, is_key)
        if not at_least(effective, rule.role):
            raise PermissionDenied(f"requires role {rule.role} or above; the caller is {effective}")
        if effective != principal.role:
            request_context.set_principal(dataclasses.replace(principal, role=effective))

    async def _effective_role(self, principal: Principal, is_key: bool) -> str:
        if self._roles is None:
            return principal.role
        current = await self._roles.role(principal.tenant_id, principal.user_id)
        if current is None:
            raise Unauthenticated(NOT_A_MEMBER)
        return lower(principal.role, current) if is_key else current
