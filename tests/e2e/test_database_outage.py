"""A PostgreSQL outage: every service answers 503 + retry-after at once, and all comes back.

ADR 44: before, auth and webhook answered 500 (AdminShutdown unhandled) and
requests hung until the database returned. The test stops the session stack's PostgreSQL (a
fast shutdown, as an operator's restart or a failover does), asks each service through the
gateway for something that needs the database, and times the answer; then it starts
PostgreSQL again and checks that the services recover on their own, that what was accepted
before the outage is still there, and that the background work (outbox relay, delivery worker)
resumed. PostgreSQL is restarted whatever happens, so later tests find the stack as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from devstack import Stack
from services.common.config import DEFAULT_DATABASE_WAIT_S
from tests.e2e.helpers import Tenant, assert_status_body
from tests.unit.webhook.receiver import Receiver, running_receiver

pytestmark = pytest.mark.e2e

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
# The stack runs with the default DATABASE_WAIT_S. The margin covers the gateway's retry of a
# GET (its route retries UNAVAILABLE twice, 50-500 ms apart) and a loaded CI machine.
ANSWER_WITHIN_S = DEFAULT_DATABASE_WAIT_S + 2.0
RECOVERY_S = 20.0
LATTICE = {"name": "outage", "dimensions": 2, "size": 4, "constant": {"value": 1}}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def lattice_events(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(request.body) for request in receiver.received("/hook")]


def wait_for_event(receiver: Receiver, lattice_id: str, within: float = RECOVERY_S) -> None:
    deadline = time.monotonic() + within
    while not any(e["data"].get("lattice_id") == lattice_id for e in lattice_events(receiver)):
        assert time.monotonic() < deadline, f"no lattice.created for {lattice_id} delivered"
        time.sleep(0.2)


def until_ok(call: Callable[[], httpx.Response], within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        reply = call()
        if reply.status_code == 200 or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_a_database_outage_is_a_fast_503_with_retry_after_and_recovers(
    stack: Stack, gateway: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    assert stack.postgres is not None, "the test stack runs its own PostgreSQL"
    headers = tenant.headers
    hook = gateway.post(
        "/v1/webhooks",
        json={"url": receiver.url(), "event_types": ["lattice.created"]},
        headers=headers,
    )
    assert hook.status_code == 200, hook.text
    before = gateway.post("/v1/lattices", json=LATTICE, headers=headers)
    assert before.status_code == 200, before.text
    wait_for_event(receiver, before.json()["id"])

    # Each service's routes that need the database: a read (which the gateway retries on
    # UNAVAILABLE) and a write; login is the one an anonymous client makes.
    calls: dict[str, Callable[[], httpx.Response]] = {
        "auth login": lambda: gateway.post(
            "/v1/auth/login", json={"email": tenant.email, "password": tenant.password}
        ),
        "auth me": lambda: gateway.get("/v1/users/me", headers=headers),
        "auth api keys": lambda: gateway.get("/v1/api-keys", headers=headers),
        "lattice list": lambda: gateway.get("/v1/lattices", headers=headers),
        "lattice create": lambda: gateway.post("/v1/lattices", json=LATTICE, headers=headers),
        "webhook list": lambda: gateway.get("/v1/webhooks", headers=headers),
        "webhook create": lambda: gateway.post(
            "/v1/webhooks",
            json={"url": receiver.url(), "event_types": ["lattice.created"]},
            headers=headers,
        ),
    }
    timings: dict[str, float] = {}
    stack.postgres.stop()
    try:
        for name, call in calls.items():
            started = time.monotonic()
            reply = call()
            timings[name] = round(time.monotonic() - started, 2)
            assert_status_body(reply, 503, UNAVAILABLE)
            assert reply.headers.get("retry-after") == "1", (name, reply.headers)
            assert timings[name] <= ANSWER_WITHIN_S, (name, timings)
        print(f"time to 503 during the outage (s): {timings}")
    finally:
        stack.postgres.start()

    started = time.monotonic()
    for name, call in calls.items():
        if name.endswith("create"):
            continue
        reply = until_ok(call, RECOVERY_S)
        assert reply.status_code == 200, f"{name} not recovered after {RECOVERY_S} s: {reply.text}"
    print(f"recovered in {time.monotonic() - started:.1f} s")

    # Nothing accepted before the outage was lost, and writes and events work again.
    kept = gateway.get(f"/v1/lattices/{before.json()['id']}", headers=headers)
    assert kept.status_code == 200, kept.text
    after = gateway.post("/v1/lattices", json=LATTICE, headers=headers)
    assert after.status_code == 200, after.text
    wait_for_event(receiver, after.json()["id"])
    stack.wait_for_gateway()
