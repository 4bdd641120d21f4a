"""The permission matrix through the gateway: every REST route x every kind of caller.

The routes are read from the OpenAPI document generated afresh from the descriptor set, and
each one's expected answer is derived from the services' one permission table
(services/common/permissions.py): below the route's role, or an API key where people must sign
in, 403 naming what is needed; a user of another tenant naming this tenant's resources, 404;
everyone else gets the route's own answer. A route with no rule in the table, or no request
recipe here, fails `test_every_route_has_a_rule_and_a_request`, so a route added later cannot
slip past the matrix.

Callers: the owner, an admin and a member of tenant A (access tokens), API keys of A with each
role (made by the owner), and the owner of tenant B. A is on the enterprise plan, so that the
matrix's lattices fit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest

from gateway import apidocs, openapi
from gateway.render import DEFAULT_DESCRIPTOR
from services.common.permissions import RULES, Access, Rule, at_least
from tests.e2e.helpers import Tenant, invite, join, log_in, register_and_login, set_plan, user_id

pytestmark = pytest.mark.e2e

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
PASSWORD = "matrix passphrase staple"
LATTICE = {"name": "matrix", "dimensions": 2, "size": 10, "constant": {"value": 1}}
WEBHOOK = {"url": "http://127.0.0.1:9/matrix", "event_types": ["lattice.created"]}


def _routes() -> dict[str, str]:
    """'VERB /path' -> the full gRPC method, for every operation of the document."""
    document = json.loads(openapi.generate(DEFAULT_DESCRIPTOR))
    routes = {}
    for path, item in document["paths"].items():
        for verb, op in item.items():
            service, _, name = apidocs._prose(op)[1].rpartition(".")
            routes[f"{verb.upper()} {path}"] = f"/{service}/{name}"
    return routes


ROUTES = _routes()


def fresh_email() -> str:
    return f"matrix-{uuid.uuid4().hex[:12]}@example.com"


@dataclass
class Caller:
    """One kind of caller; `fresh()` gives headers that may be spent (log-out)."""

    name: str
    role: str  # the role it acts with in its own tenant
    outsider: bool
    headers: dict[str, str]
    person: Tenant | None = None  # None for API keys

    @property
    def is_key(self) -> bool:
        return self.person is None

    def fresh(self, gateway: httpx.Client) -> dict[str, str]:
        if self.person is None:
            return self.headers
        pair = log_in(gateway, self.person.email, self.person.password, self.person.tenant_id)
        return {"authorization": f"Bearer {pair['access_token']}"}


@dataclass
class World:
    """Tenant A with a resource of every kind, its callers, and makers of fresh resources."""

    gateway: httpx.Client
    owner: Tenant
    callers: list[Caller]
    lattice: str
    webhook: str
    delivery: str
    target: str  # a member whose role PATCH sets (to what it is)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        reply = self.gateway.post(path, json=body, headers=self.owner.headers)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def fresh_lattice(self) -> str:
        return str(self._post("/v1/lattices", LATTICE)["id"])

    def fresh_webhook(self) -> str:
        return str(self._post("/v1/webhooks", WEBHOOK)["webhook"]["id"])

    def fresh_key(self) -> str:
        return str(self._post("/v1/api-keys", {"name": "matrix"})["id"])

    def fresh_invitation(self) -> str:
        return str(invite(self.gateway, self.owner)["invitation"]["id"])

    def fresh_member(self) -> str:
        return user_id(self.gateway, join(self.gateway, self.owner))


@dataclass(frozen=True)
class Recipe:
    """How to call one route for the matrix, and its answer to a caller who may call it."""

    allowed: int = 200
    ids: Callable[[World], dict[str, str]] = lambda world: {}
    params: list[tuple[str, str | int]] = field(default_factory=list)
    body: Callable[[World], dict[str, Any] | None] = lambda world: None
    # The answer to an allowed API key, where it differs (a domain rule beyond the table).
    allowed_key: int | None = None
    # The answer to the other tenant's owner when the body (not the path) names A.
    outsider: int | None = None
    # The call spends its credential (log-out): made with fresh headers of the same caller.
    spends_credential: bool = False


def _lattice(world: World) -> dict[str, str]:
    return {"id": world.lattice}


def _webhook(world: World) -> dict[str, str]:
    return {"id": world.webhook}


RECIPES: dict[str, Recipe] = {
    "POST /v1/auth/register": Recipe(
        body=lambda w: {"email": fresh_email(), "password": PASSWORD, "tenant_name": "matrix"}
    ),
    "POST /v1/auth/login": Recipe(
        body=lambda w: {"email": w.owner.email, "password": w.owner.password}
    ),
    "POST /v1/auth/refresh": Recipe(
        allowed=401, body=lambda w: {"refresh_token": "rt_" + "A" * 43}
    ),
    "POST /v1/auth/logout": Recipe(body=lambda w: {}, allowed_key=400, spends_credential=True),
    "GET /v1/users/me": Recipe(),
    "GET /.well-known/jwks.json": Recipe(),
    "POST /v1/api-keys": Recipe(body=lambda w: {"name": "matrix"}),
    "GET /v1/api-keys": Recipe(),
    "DELETE /v1/api-keys/{id}": Recipe(ids=lambda w: {"id": w.fresh_key()}),
    "POST /v1/auth/switch-tenant": Recipe(
        body=lambda w: {"tenant_id": w.owner.tenant_id}, outsider=404
    ),
    "GET /v1/users/me/tenants": Recipe(),
    "POST /v1/invitations": Recipe(body=lambda w: {"email": fresh_email()}),
    "GET /v1/invitations": Recipe(),
    "DELETE /v1/invitations/{id}": Recipe(ids=lambda w: {"id": w.fresh_invitation()}),
    "POST /v1/invitations/accept": Recipe(
        allowed=404, body=lambda w: {"token": "inv_" + "A" * 43, "password": PASSWORD}
    ),
    "GET /v1/members": Recipe(),
    "GET /v1/audit-events": Recipe(),
    "PATCH /v1/members/{user_id}": Recipe(
        ids=lambda w: {"user_id": w.target}, body=lambda w: {"role": "member"}
    ),
    "DELETE /v1/members/{user_id}": Recipe(ids=lambda w: {"user_id": w.fresh_member()}),
    "POST /v1/lattices": Recipe(body=lambda w: LATTICE),
    "POST /v1/lattices/create": Recipe(body=lambda w: LATTICE),
    "GET /v1/lattices/{id}": Recipe(ids=_lattice),
    "GET /v1/lattices": Recipe(),
    "DELETE /v1/lattices/{id}": Recipe(ids=lambda w: {"id": w.fresh_lattice()}),
    "GET /v1/lattices/{id}/field": Recipe(ids=_lattice, params=[("offset", 0), ("limit", 4)]),
    "POST /v1/lattices/{id}/transform": Recipe(ids=_lattice, body=lambda w: {"flip": {"axis": 0}}),
    "GET /v1/lattices/{id}/path": Recipe(
        ids=_lattice, params=[("start", 0), ("start", 0), ("end", 9), ("end", 9)]
    ),
    "GET /v1/lattices/{id}/analysis": Recipe(ids=_lattice),
    "POST /v1/webhooks": Recipe(body=lambda w: WEBHOOK),
    "GET /v1/webhooks/{id}": Recipe(ids=_webhook),
    "GET /v1/webhooks": Recipe(),
    "DELETE /v1/webhooks/{id}": Recipe(ids=lambda w: {"id": w.fresh_webhook()}),
    "POST /v1/webhooks/{id}/rotate-secret": Recipe(ids=_webhook),
    "POST /v1/webhooks/{id}/enable": Recipe(ids=_webhook),
    "POST /v1/webhooks/{id}/test": Recipe(ids=_webhook),
    "GET /v1/webhooks/{id}/deliveries": Recipe(ids=_webhook),
    "POST /v1/webhooks/{id}/deliveries/{delivery_id}/resend": Recipe(
        ids=lambda w: {"id": w.webhook, "delivery_id": w.delivery}
    ),
}


def expected(rule: Rule, recipe: Recipe, caller: Caller, route: str) -> int:
    """The status the permission table says this caller gets."""
    if rule.access in (Access.PUBLIC, Access.OPTIONAL):
        return recipe.allowed
    if caller.is_key and not rule.api_keys:
        return 403
    if not at_least(caller.role, rule.role):
        return 403
    if caller.outsider and recipe.outsider is not None:
        return recipe.outsider
    if caller.outsider and "{" in route:
        return 404
    if caller.is_key and recipe.allowed_key is not None:
        return recipe.allowed_key
    return recipe.allowed


@pytest.fixture(scope="module")
def client(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def world(stack, client: httpx.Client) -> World:
    owner, other = register_and_login(client), register_and_login(client)
    for tenant in (owner, other):
        set_plan(stack, tenant, "enterprise")
    admin, member = join(client, owner, "admin"), join(client, owner, "member")
    callers = [
        Caller("owner", "owner", False, owner.headers, owner),
        Caller("admin", "admin", False, admin.headers, admin),
        Caller("member", "member", False, member.headers, member),
    ]
    for role in ("owner", "admin", "member"):
        reply = client.post(
            "/v1/api-keys", json={"name": f"matrix {role}", "role": role}, headers=owner.headers
        )
        assert reply.status_code == 200, reply.text
        callers.append(Caller(f"{role} key", role, False, {"x-api-key": reply.json()["key"]}))
    callers.append(Caller("other tenant's owner", "owner", True, other.headers, other))
    world = World(client, owner, callers, "", "", "", "")
    world.lattice = world.fresh_lattice()
    world.webhook = world.fresh_webhook()
    reply = client.post(f"/v1/webhooks/{world.webhook}/test", headers=owner.headers)
    assert reply.status_code == 200, reply.text
    world.delivery = reply.json()["id"]
    world.target = world.fresh_member()
    return world


def test_every_route_has_a_rule_and_a_request() -> None:
    without_rule = [route for route, method in ROUTES.items() if method not in RULES]
    assert without_rule == [], "add these RPCs to services/common/permissions.py"
    assert sorted(set(ROUTES) - set(RECIPES)) == [], "add a Recipe for these routes"
    assert sorted(set(RECIPES) - set(ROUTES)) == [], "these recipes name no route"


@pytest.mark.parametrize("route", sorted(ROUTES), ids=str)
def test_the_permission_matrix(client: httpx.Client, world: World, route: str) -> None:
    rule, recipe = RULES[ROUTES[route]], RECIPES[route]
    verb, template = route.split(" ", 1)
    wrong = []
    for caller in world.callers:
        want = expected(rule, recipe, caller, template)
        headers = caller.fresh(client) if recipe.spends_credential else caller.headers
        path = template.format(**recipe.ids(world))
        body = recipe.body(world)
        reply = client.request(verb, path, params=recipe.params, json=body, headers=headers)
        if reply.status_code != want:
            wrong.append(f"{caller.name}: {reply.status_code}, expected {want}: {reply.text}")
        elif want == 403:
            message = reply.json()["message"]
            named = "API keys" if caller.is_key and not rule.api_keys else rule.role
            if reply.json()["code"] != PERMISSION_DENIED or named not in message:
                wrong.append(f"{caller.name}: 403 without naming {named!r}: {reply.text}")
    assert not wrong, f"{route} ({rule.describe()}):\n" + "\n".join(wrong)
