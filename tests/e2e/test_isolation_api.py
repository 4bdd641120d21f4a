"""Tenant isolation through the public API: tenant B never reaches tenant A's resources.

Every route that names a resource by `{id}` is one test id. B's answer must be 404 NOT_FOUND
(never 403, which would confirm the id exists, and never 200), and A's resource must be
unchanged afterwards. Every route is implemented: a 501 UNIMPLEMENTED fails like any other 5xx.

Tenants A and B are made once for this module (two registrations instead of thirty), and A's
resources are re-checked after every attempt, so a leaking DELETE cannot make later tests pass
vacuously.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as webhook_pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as webhook_grpc

from tests.e2e.helpers import (
    Tenant,
    assert_status_body,
    invite,
    join,
    register_and_login,
    user_id,
)

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
LATTICE = {"name": "tenant-a", "dimensions": 2, "size": 10, "constant": {"value": 1}}
# A loopback receiver, allowed by WEBHOOK_ALLOW_CIDRS in the test stack.
WEBHOOK = {"url": "http://127.0.0.1:9/tenant-a", "event_types": ["lattice.created"]}


@dataclass(frozen=True)
class Route:
    """One REST route; `{id}` and `{delivery_id}` are filled with tenant A's ids."""

    method: str
    template: str
    # "lattice", "webhook", "api_key", "invitation" or "member": which of A's resources it names
    kind: str
    params: list[tuple[str, str | int]] = field(default_factory=list)
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        text = f"{self.method} {self.template}"
        return text.replace("{id}", "{B's id}") if self.kind == "b_webhook" else text


ROUTES = [
    Route("GET", "/v1/lattices/{id}", "lattice"),
    Route("DELETE", "/v1/lattices/{id}", "lattice"),
    Route("GET", "/v1/lattices/{id}/field", "lattice", params=[("offset", 0), ("limit", 10)]),
    Route("POST", "/v1/lattices/{id}/transform", "lattice", body={"flip": {"axis": 0}}),
    Route(
        "GET",
        "/v1/lattices/{id}/path",
        "lattice",
        params=[("start", 0), ("start", 0), ("end", 9), ("end", 9)],
    ),
    Route("GET", "/v1/lattices/{id}/analysis", "lattice"),
    Route("GET", "/v1/webhooks/{id}", "webhook"),
    Route("DELETE", "/v1/webhooks/{id}", "webhook"),
    Route("POST", "/v1/webhooks/{id}/rotate-secret", "webhook"),
    Route("POST", "/v1/webhooks/{id}/enable", "webhook"),
    Route("POST", "/v1/webhooks/{id}/test", "webhook"),
    Route("GET", "/v1/webhooks/{id}/deliveries", "webhook"),
    Route("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/resend", "webhook"),
    # B's own webhook with A's delivery: the delivery must be looked up under the webhook.
    Route("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/resend", "b_webhook"),
    Route("DELETE", "/v1/api-keys/{id}", "api_key"),
    # Memberships: A's invitations and members.
    Route("DELETE", "/v1/invitations/{id}", "invitation"),
    Route("PATCH", "/v1/members/{id}", "member", body={"role": "admin"}),
    Route("DELETE", "/v1/members/{id}", "member"),
]


@dataclass
class World:
    """Tenant A with one lattice, one webhook, an API key, a pending invitation and a member,
    and tenant B with nothing. `c` is a user of a tenant of its own who is also a member of A:
    its token for its own tenant must reach none of A's resources either."""

    a: Tenant
    b: Tenant
    lattice: dict[str, Any]
    webhook: dict[str, Any]
    delivery_id: str  # a real delivery of A's (its test event)
    api_key: dict[str, Any]
    b_webhook: dict[str, Any]
    invitation: dict[str, Any]
    member_id: str
    c: Tenant

    def ids(self, kind: str) -> dict[str, str]:
        if kind == "b_webhook":
            return {"id": self.b_webhook["id"], "delivery_id": self.delivery_id}
        if kind == "api_key":
            return {"id": self.api_key["id"]}
        if kind == "invitation":
            return {"id": self.invitation["id"]}
        if kind == "member":
            return {"id": self.member_id}
        resource = self.lattice if kind == "lattice" else self.webhook
        return {"id": resource["id"], "delivery_id": self.delivery_id}


@pytest.fixture(scope="module")
def client(stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def world(client: httpx.Client) -> World:
    a, b = register_and_login(client), register_and_login(client)
    reply = client.post("/v1/lattices", json=LATTICE, headers=a.headers)
    assert reply.status_code == 200, reply.text
    lattice = reply.json()
    reply = client.post("/v1/webhooks", json=WEBHOOK, headers=a.headers)
    assert reply.status_code == 200, reply.text
    webhook = reply.json()["webhook"]
    reply = client.post(f"/v1/webhooks/{webhook['id']}/test", headers=a.headers)
    assert reply.status_code == 200, reply.text
    delivery_id = reply.json()["id"]
    reply = client.post("/v1/api-keys", json={"name": "tenant-a"}, headers=a.headers)
    assert reply.status_code == 200, reply.text
    api_key = reply.json()
    reply = client.post("/v1/webhooks", json=WEBHOOK, headers=b.headers)
    assert reply.status_code == 200, reply.text
    b_webhook = reply.json()["webhook"]
    invitation = invite(client, a)["invitation"]
    member_id = user_id(client, join(client, a))
    c = register_and_login(client)
    reply = client.post(
        "/v1/invitations/accept",
        json={"token": invite(client, a, c.email, role="admin")["token"]},
        headers=c.headers,
    )
    assert reply.status_code == 200, reply.text
    return World(a, b, lattice, webhook, delivery_id, api_key, b_webhook, invitation, member_id, c)


def _request(client: httpx.Client, route: Route, world: World, headers: dict[str, str]) -> Any:
    path = route.template.format(**world.ids(route.kind))
    return client.request(route.method, path, params=route.params, json=route.body, headers=headers)


def assert_intact(client: httpx.Client, world: World, kind: str) -> None:
    """A's resource of this kind is still there, unchanged."""
    if kind == "b_webhook":
        kind = "webhook"
    if kind == "lattice":
        reply = client.get(f"/v1/lattices/{world.lattice['id']}", headers=world.a.headers)
        assert reply.status_code == 200, f"A's lattice is gone: {reply.text}"
        now = reply.json()
        for name in ("version", "checksum", "updated_at", "name"):
            assert now[name] == world.lattice[name], f"A's lattice {name} changed"
    elif kind == "webhook":
        reply = client.get(f"/v1/webhooks/{world.webhook['id']}", headers=world.a.headers)
        assert reply.status_code == 200, f"A's webhook is gone: {reply.text}"
        assert reply.json() == world.webhook, "A's webhook changed"
    elif kind == "invitation":
        reply = client.get("/v1/invitations", headers=world.a.headers)
        assert reply.status_code == 200, reply.text
        ids = [item["id"] for item in reply.json()["invitations"]]
        assert world.invitation["id"] in ids, "A's invitation is gone"
    elif kind == "member":
        reply = client.get("/v1/members", headers=world.a.headers)
        assert reply.status_code == 200, reply.text
        roles = {item["user_id"]: item["role"] for item in reply.json()["members"]}
        assert roles.get(world.member_id) == "member", "A's member is gone or changed"
    else:
        reply = client.get("/v1/api-keys", headers=world.a.headers)
        assert reply.status_code == 200, reply.text
        ids = [key["id"] for key in reply.json()["api_keys"]]
        assert world.api_key["id"] in ids, "A's API key is gone"


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_another_tenants_resource_is_not_found(
    client: httpx.Client, world: World, route: Route
) -> None:
    reply = _request(client, route, world, world.b.headers)

    status = reply.status_code
    assert status != 200, f"B was served A's resource: {reply.text}"
    assert status != 403, "403 tells B that A's id exists; another tenant's resource is 404"
    assert status < 500, f"B's request caused a server error: {reply.text}"
    assert_intact(client, world, route.kind)
    assert_status_body(reply, 404, NOT_FOUND)


LISTS = [
    ("/v1/lattices", "lattices", "lattice"),
    ("/v1/webhooks", "webhooks", "webhook"),
    ("/v1/api-keys", "api_keys", "api_key"),
    ("/v1/invitations", "invitations", "invitation"),
    ("/v1/members", "members", "member"),
]


@pytest.mark.parametrize(
    ("path", "field_name", "kind"), LISTS, ids=[f"GET {path}" for path, _, _ in LISTS]
)
def test_lists_never_show_another_tenants_ids(
    client: httpx.Client, world: World, path: str, field_name: str, kind: str
) -> None:
    own_id = world.ids(kind)["id"]
    reply = client.get(path, headers=world.b.headers)
    assert reply.status_code == 200, reply.text
    assert own_id not in reply.text, f"B's listing shows A's id {own_id}"
    # The control: A's own listing does show it, so the check above means something.
    reply = client.get(path, headers=world.a.headers)
    assert reply.status_code == 200, reply.text
    assert own_id in [item.get("id", item.get("user_id")) for item in reply.json()[field_name]]


@pytest.mark.parametrize("kind", ["lattice", "webhook", "api_key", "invitation", "member"])
def test_the_audit_trail_never_shows_another_tenants_events(
    client: httpx.Client, world: World, kind: str
) -> None:
    """GET /v1/audit-events: B's trail names none of A's resources, A's does."""
    own_id = world.ids(kind)["id"]
    for who, shown in ((world.b, False), (world.a, True)):
        targets: set[str] = set()
        token = ""
        while True:
            params = {"page_size": 100, **({"page_token": token} if token else {})}
            reply = client.get("/v1/audit-events", params=params, headers=who.headers)
            assert reply.status_code == 200, reply.text
            targets |= {event["target_id"] for event in reply.json().get("events", [])}
            token = reply.json().get("next_page_token", "")
            if not token:
                break
        assert (own_id in targets) is shown, f"{kind} {own_id}: in {'A' if shown else 'B'}'s trail"


@pytest.mark.parametrize(
    ("template", "kind"),
    [("/v1/lattices/{id}", "lattice"), ("/v1/webhooks/{id}", "webhook")],
    ids=["GET /v1/lattices/{id}", "GET /v1/webhooks/{id}"],
)
def test_another_tenants_api_key_reaches_nothing(
    client: httpx.Client, world: World, template: str, kind: str
) -> None:
    reply = client.post("/v1/api-keys", json={"name": "tenant-b"}, headers=world.b.headers)
    assert reply.status_code == 200, reply.text
    b_key = {"x-api-key": reply.json()["key"]}
    path = template.format(**world.ids(kind))

    assert_status_body(client.get(path, headers=b_key), 404, NOT_FOUND)
    # The control: the key works, for B's own (empty) listings.
    listing = client.get(template.removesuffix("/{id}"), headers=b_key)
    assert listing.status_code == 200, listing.text
    assert world.ids(kind)["id"] not in listing.text


@pytest.mark.parametrize("target", ["gateway", "webhook"])
def test_a_tenant_cannot_publish_events_to_another_tenant(
    grpc_channel: Callable[[str], grpc.Channel], world: World, target: str
) -> None:
    """PublishEvent names its tenant in the request: a tenant's token must not reach it.

    It is internal (blocked at the gateway); straight to the webhook service, B's token naming
    A's tenant must be refused too, or B could have signed events delivered to A's endpoints.
    """
    stub = webhook_grpc.WebhookServiceStub(grpc_channel(target))
    request = webhook_pb.PublishEventRequest(
        event_id=str(uuid.uuid4()), tenant_id=world.a.tenant_id, event_type="lattice.created"
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.PublishEvent(
            request, metadata=[("authorization", f"Bearer {world.b.access_token}")], timeout=10
        )
    assert refused.value.code() != grpc.StatusCode.OK


@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind != "b_webhook"], ids=str)
def test_a_member_of_both_tenants_reaches_a_only_with_as_token(
    client: httpx.Client, world: World, route: Route
) -> None:
    """C is an admin of A and the owner of its own tenant: with its own tenant's token, A's
    resources are as foreign as to B (404), whatever C may do in A with A's token."""
    reply = _request(client, route, world, world.c.headers)
    assert_status_body(reply, 404, NOT_FOUND)
    assert_intact(client, world, route.kind)


@pytest.mark.parametrize(("path", "field_name", "kind"), LISTS, ids=[p for p, _, _ in LISTS])
def test_a_member_of_both_tenants_lists_only_the_tokens_tenant(
    client: httpx.Client, world: World, path: str, field_name: str, kind: str
) -> None:
    reply = client.get(path, headers=world.c.headers)
    assert reply.status_code == 200, reply.text
    assert world.ids(kind)["id"] not in reply.text
