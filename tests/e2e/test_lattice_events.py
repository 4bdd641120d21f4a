"""Lattice events on the real stack: announced through the outbox, delivered by the webhook
service to a registered receiver, and not lost while the webhook service is down."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from devstack import Stack
from tests.e2e.helpers import Tenant
from tests.unit.webhook.receiver import Receiver, running_receiver

pytestmark = pytest.mark.e2e

HOOK = "/lattice-events"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def subscribe(gateway: httpx.Client, tenant: Tenant, receiver: Receiver) -> None:
    reply = gateway.post(
        "/v1/webhooks",
        json={"url": receiver.url(HOOK), "event_types": ["*"]},
        headers=tenant.headers,
    )
    assert reply.status_code == 200, reply.text


def changes(gateway: httpx.Client, tenant: Tenant) -> str:
    """A lattice created, transformed, searched and deleted; returns its id."""
    reply = gateway.post(
        "/v1/lattices",
        json={"name": "evented", "dimensions": 2, "size": 6, "constant": {"value": 1}},
        headers=tenant.headers,
    )
    assert reply.status_code == 200, reply.text
    lattice_id: str = reply.json()["id"]
    reply = gateway.post(
        f"/v1/lattices/{lattice_id}/transform", json={"flip": {"axis": 1}}, headers=tenant.headers
    )
    assert reply.status_code == 200, reply.text
    reply = gateway.get(
        f"/v1/lattices/{lattice_id}/path",
        params=[("start", 0), ("start", 0), ("end", 5), ("end", 5)],
        headers=tenant.headers,
    )
    assert reply.status_code == 200, reply.text
    reply = gateway.delete(f"/v1/lattices/{lattice_id}", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    return lattice_id


EXPECTED = ["lattice.created", "lattice.transformed", "path.computed", "lattice.deleted"]


def waiting_events(stack: Stack, tenant: Tenant) -> list[tuple[str, str]]:
    """(event id, type) of the tenant's events not sent yet, oldest first (read as the
    owner)."""
    with psycopg.connect(stack.env["DATABASE_ADMIN_URL"]) as conn:
        rows = conn.execute(
            "SELECT id::text, event_type FROM lattice_outbox"
            " WHERE tenant_id = %s AND sent_at IS NULL ORDER BY seq",
            (tenant.tenant_id,),
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in receiver.received(HOOK)]


def test_changes_reach_the_tenants_endpoint(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    subscribe(gateway, tenant, receiver)
    lattice_id = changes(gateway, tenant)
    received = receiver.wait_for(HOOK, len(EXPECTED), timeout=60)
    events = [json.loads(request.body) for request in received]
    # Endpoints not marked `ordered` may receive concurrent deliveries in any order.
    assert sorted(event["type"] for event in events) == sorted(EXPECTED)
    assert {event["data"]["lattice_id"] for event in events} == {lattice_id}
    ids = [request.headers["webhook-id"] for request in received]
    assert len(set(ids)) == len(ids)


def test_no_event_is_lost_while_the_webhook_service_is_down(
    stack: Stack, gateway: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    subscribe(gateway, tenant, receiver)
    stack.kill_service("webhook")
    try:
        # The lattice service answers as usual: the webhook service is not on its path.
        first = changes(gateway, tenant)
        second = changes(gateway, tenant)
        waiting = waiting_events(stack, tenant)
        assert [event_type for _, event_type in waiting] == EXPECTED * 2
    finally:
        stack.start_service("webhook")

    received = receiver.wait_for(HOOK, len(waiting), timeout=120)
    # Every event exactly once, under its outbox id.
    delivered = Counter(request.headers["webhook-id"] for request in received)
    assert delivered == Counter(event_id for event_id, _ in waiting)
    assert Counter((event["type"], event["data"]["lattice_id"]) for event in bodies(receiver)) == (
        Counter((event_type, lattice) for lattice in (first, second) for event_type in EXPECTED)
    )
    assert waiting_events(stack, tenant) == []
