"""Who may call what: the one table of every RPC's access rule, for every service (ADR 63).

Each RPC of every service is PUBLIC (no credential), OPTIONAL (public, but a credential sent is
verified and the handler may use it), INTERNAL (the shared internal token only) or needs a
tenant credential whose role in the tenant is at least `role`. A rule with `api_keys=False`
refuses API keys: managing people and keys needs a signed-in person, so a leaked key can
neither mint keys nor invite anyone.

The roles are ordered member < admin < owner. An RPC missing from the table is refused (the
permission interceptor fails closed) and a server that registers one does not start.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf import descriptor_pool

MEMBER, ADMIN, OWNER = "member", "admin", "owner"
# Lowest first: a role may do everything a role before it may.
ROLES = (MEMBER, ADMIN, OWNER)
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Infrastructure RPCs that never carry tenant data: public on every server.
ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class Access(enum.Enum):
    """How a caller gets past a rule."""

    PUBLIC = "public"
    OPTIONAL = "optional"
    INTERNAL = "internal"
    ROLE = "role"


@dataclass(frozen=True, slots=True)
class Rule:
    """The access rule of one RPC."""

    access: Access
    # The lowest role that may call it (Access.ROLE only).
    role: str = ""
    # Whether an API key may call it (Access.ROLE only); never above the key's own role.
    api_keys: bool = True

    def describe(self) -> str:
        """The rule in words, for documents and messages."""
        if self.access is not Access.ROLE:
            return str(self.access.value)
        who = f"{self.role} or above" if self.role != OWNER else OWNER
        return who if self.api_keys else f"{who}, signed in (no API keys)"


PUBLIC = Rule(Access.PUBLIC)
OPTIONAL = Rule(Access.OPTIONAL)
INTERNAL = Rule(Access.INTERNAL)


def role(minimum: str, *, api_keys: bool = True) -> Rule:
    """Callers whose role is `minimum` or higher."""
    if minimum not in _RANK:
        raise ValueError(f"unknown role {minimum!r}")
    return Rule(Access.ROLE, minimum, api_keys)


_AUTH = "/catalytic.auth.v1.AuthService/"
_LATTICE = "/catalytic.lattice.v1.LatticeService/"
_WEBHOOK = "/catalytic.webhook.v1.WebhookService/"

# The table. Lattices are the team's shared work: any member creates, reads, transforms, finds
# paths in, analyses and deletes any of the tenant's lattices (ADR 63). Webhooks decide where
# the tenant's data goes, so members only read them and their deliveries.
RULES: Mapping[str, Rule] = {
    _AUTH + "Register": PUBLIC,
    _AUTH + "Login": PUBLIC,
    _AUTH + "Refresh": PUBLIC,
    _AUTH + "GetJwks": PUBLIC,
    _AUTH + "AcceptInvitation": OPTIONAL,
    _AUTH + "Logout": role(MEMBER),
    _AUTH + "GetCurrentUser": role(MEMBER),
    _AUTH + "SwitchTenant": role(MEMBER, api_keys=False),
    _AUTH + "ListMyTenants": role(MEMBER, api_keys=False),
    _AUTH + "ListMembers": role(MEMBER),
    _AUTH + "UpdateMember": role(ADMIN, api_keys=False),
    _AUTH + "RemoveMember": role(ADMIN, api_keys=False),
    _AUTH + "CreateInvitation": role(ADMIN, api_keys=False),
    _AUTH + "ListInvitations": role(ADMIN, api_keys=False),
    _AUTH + "ListAuditEvents": role(ADMIN, api_keys=False),
    _AUTH + "RevokeInvitation": role(ADMIN, api_keys=False),
    _AUTH + "CreateApiKey": role(ADMIN, api_keys=False),
    _AUTH + "ListApiKeys": role(MEMBER),
    _AUTH + "DeleteApiKey": role(ADMIN, api_keys=False),
    _LATTICE + "CreateLattice": role(MEMBER),
    _LATTICE + "GetLattice": role(MEMBER),
    _LATTICE + "ListLattices": role(MEMBER),
    _LATTICE + "DeleteLattice": role(MEMBER),
    _LATTICE + "GetField": role(MEMBER),
    _LATTICE + "TransformLattice": role(MEMBER),
    _LATTICE + "FindPath": role(MEMBER),
    _LATTICE + "AnalyzeLattice": role(MEMBER),
    _WEBHOOK + "CreateWebhook": role(ADMIN),
    _WEBHOOK + "GetWebhook": role(MEMBER),
    _WEBHOOK + "ListWebhooks": role(MEMBER),
    _WEBHOOK + "DeleteWebhook": role(ADMIN),
    _WEBHOOK + "RotateWebhookSecret": role(ADMIN),
    _WEBHOOK + "EnableWebhook": role(ADMIN),
    _WEBHOOK + "TestWebhook": role(ADMIN),
    _WEBHOOK + "ListDeliveries": role(MEMBER),
    _WEBHOOK + "ResendDelivery": role(ADMIN),
    _WEBHOOK + "PublishEvent": INTERNAL,
}


def rule_for(method: str) -> Rule | None:
    """The rule of a full method name (`/package.Service/Method`); None when it has none."""
    return RULES.get(method)


def is_valid_role(name: str) -> bool:
    return name in _RANK


def at_least(actual: str, minimum: str) -> bool:
    """Whether `actual` may do what `minimum` may; an unknown role may do nothing."""
    return actual in _RANK and _RANK[actual] >= _RANK[minimum]


def lower(first: str, second: str) -> str:
    """The lesser of two roles (an API key acts with its own role or its creator's, whichever
    is lower)."""
    return first if _RANK[first] <= _RANK[second] else second


def methods(service: str, access: Access) -> frozenset[str]:
    """The full method names of `service` (`package.Service`) whose rule has `access`."""
    prefix = f"/{service}/"
    return frozenset(m for m, r in RULES.items() if m.startswith(prefix) and r.access is access)


def service_methods(services: Iterable[str]) -> list[str]:
    """Every full method name of these services, from the generated descriptors (imported by
    whoever registers them)."""
    pool = descriptor_pool.Default()
    return [
        f"/{name}/{method.name}"
        for name in services
        for method in pool.FindServiceByName(name).methods
    ]


def without_rule(services: Iterable[str]) -> list[str]:
    """The methods of these services that the table does not cover."""
    return [method for method in service_methods(services) if method not in RULES]
