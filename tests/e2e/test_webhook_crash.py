"""No webhook is lost when the webhook service is SIGKILLed, twice, mid-delivery.

200 events are published to one endpoint (a real receiver on 127.0.0.1) through PublishEvent,
the way the lattice service publishes them; the shared stack's webhook service is SIGKILLed
and restarted twice while it delivers them. Every event must then arrive: leases held by a
killed process run out within WEBHOOK_LEASE_S (10 s on the shared stack) and the restarted
service sends those deliveries again. A duplicate is allowed (delivery is at least once) but
only under its event's own `webhook-id`, and every request must verify with the reference
Standard Webhooks library.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from standardwebhooks.webhooks import Webhook as Verifier

from devstack import Stack
from tests.e2e.helpers import Tenant
from tests.unit.webhook.receiver import Received, Receiver, Reply, running_receiver

pytestmark = pytest.mark.e2e

EVENTS = 200
PATH = "/crash-twice"
# Two leases (10 s each on the shared stack) plus restarts and the rest of the drain at
# about 16 events/s.
DELIVERY_DEADLINE_S = 90.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.02)


def _complete(request: Received) -> bool:
    """Whether the whole body arrived. A sender SIGKILLed between the headers and the body
    leaves a request the test receiver records with a short body; no real server would hand
    that on, and it is not a delivery: the event must arrive again, whole."""
    return len(request.body) == int(request.headers.get("content-length", "-1"))


def _delivered(receiver: Receiver) -> list[Received]:
    return [request for request in receiver.received(PATH) if _complete(request)]


def _delivered_ids(receiver: Receiver) -> set[str]:
    return {request.headers.get("webhook-id", "") for request in _delivered(receiver)}


def _at_least(receiver: Receiver, count: int) -> Callable[[], bool]:
    return lambda: len(_delivered_ids(receiver)) >= count


def test_no_webhook_lost_when_service_is_killed_twice(
    stack: Stack,
    gateway: httpx.Client,
    tenant: Tenant,
    receiver: Receiver,
    grpc_channel: Callable[[str], grpc.Channel],
) -> None:
    # Slow answers keep attempts in flight (leased, unfinished) when the service dies, and
    # pace the arrivals: the worker's 32 slots then take 2 s each per event, about 16 new
    # events/s, so the backlog still lasts seconds after a restart. (With 0.5 s answers the
    # restarted service could land every remaining event before the second kill.)
    receiver.script(PATH, Reply(200, delay_s=2.0))
    reply = gateway.post(
        "/v1/webhooks",
        json={"url": receiver.url(PATH), "event_types": ["lattice.created"]},
        headers=tenant.headers,
    )
    assert reply.status_code == 200, reply.text
    secret = reply.json()["secret"]

    stub = pb_grpc.WebhookServiceStub(grpc_channel("webhook"))
    metadata = (("x-internal-token", stack.env["INTERNAL_TOKEN"]),)
    sequence_of: dict[str, int] = {}
    futures = []
    # Published concurrently, so that the backlog is there before the first kill.
    for sequence in range(EVENTS):
        event_id = f"evt_{uuid.uuid4().hex}"
        data = struct_pb2.Struct()
        data.update({"lattice_id": f"l-{sequence}", "sequence": sequence})
        futures.append(
            stub.PublishEvent.future(
                pb.PublishEventRequest(
                    event_id=event_id,
                    tenant_id=tenant.tenant_id,
                    event_type="lattice.created",
                    data=data,
                ),
                metadata=metadata,
                timeout=30,
            )
        )
        sequence_of[event_id] = sequence
    assert [future.result().queued_deliveries for future in futures] == [1] * EVENTS

    kills: list[int] = []
    try:
        for _ in range(2):
            # Kill while delivery is under way: some more events have arrived, not all.
            wanted = len(_delivered_ids(receiver)) + 10
            _wait_until(
                _at_least(receiver, wanted),
                30.0,
                f"10 more deliveries before kill {len(kills) + 1} (after {kills})",
            )
            kills.append(len(_delivered_ids(receiver)))
            stack.kill_service("webhook")
            # Back as soon as its own health check says SERVING: waiting for the gateway too
            # (whose outlier detection keeps a crashed host out for 5 s or more) would let the
            # restarted service deliver everything before the second kill.
            stack.start_service("webhook", wait_for_gateway=False)
    finally:
        # Other tests share the stack: leave the service up, and routed, whatever happened.
        if not stack.services.running("webhook"):
            stack.start_service("webhook", wait_for_gateway=False)
        stack.wait_for_gateway()
    assert all(count < EVENTS for count in kills), f"delivered before each kill: {kills}"

    _wait_until(
        lambda: _delivered_ids(receiver) >= set(sequence_of),
        DELIVERY_DEADLINE_S,
        f"all {EVENTS} events delivered (got {len(_delivered_ids(receiver))})",
    )

    requests = _delivered(receiver)
    assert _delivered_ids(receiver) == set(sequence_of)
    # Cut-off requests (at most what was in flight at the two kills) were for published events.
    cut_off = [request for request in receiver.received(PATH) if not _complete(request)]
    assert {request.headers.get("webhook-id") for request in cut_off} <= set(sequence_of)
    verifier = Verifier(secret)
    for request in requests:
        body: dict[str, Any] = verifier.verify(request.body, request.headers)
        # A duplicate carries its own event's webhook-id and body, never another's.
        assert body["data"]["sequence"] == sequence_of[request.headers["webhook-id"]]
    assert len(requests) >= EVENTS
