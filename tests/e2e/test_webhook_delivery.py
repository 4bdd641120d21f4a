"""Webhook delivery end to end: the shared stack's webhook service, a real receiver on localhost.

Events are published the way the other services do it (gRPC PublishEvent with the stack's
INTERNAL_TOKEN); endpoints, the log, tests, resends and rotation go through the gateway. The
test stack retries on the schedule 0, 1, 2, 3 s (tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
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
from standardwebhooks.webhooks import WebhookVerificationError

from devstack import Stack
from tests.e2e.helpers import Tenant, assert_status_body, register_and_login
from tests.unit.webhook.receiver import Receiver, Reply, running_receiver

pytestmark = pytest.mark.e2e

NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@pytest.fixture
def publisher(
    stack: Stack, grpc_channel: Callable[[str], grpc.Channel]
) -> Callable[..., pb.PublishEventResponse]:
    """PublishEvent straight to the webhook service, as the lattice service calls it."""
    stub = pb_grpc.WebhookServiceStub(grpc_channel("webhook"))
    token = stack.env["INTERNAL_TOKEN"]

    def publish(
        tenant_id: str,
        event_type: str = "lattice.created",
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> pb.PublishEventResponse:
        struct = struct_pb2.Struct()
        struct.update(data if data is not None else {"lattice_id": "l-1", "size": 10})
        request = pb.PublishEventRequest(
            event_id=event_id or str(uuid.uuid4()),
            tenant_id=tenant_id,
            event_type=event_type,
            data=struct,
        )
        reply: pb.PublishEventResponse = stub.PublishEvent(
            request,
            metadata=metadata if metadata is not None else (("x-internal-token", token),),
            timeout=10,
        )
        return reply

    return publish


def create_webhook(
    gateway: httpx.Client, tenant: Tenant, url: str, *event_types: str, ordered: bool = False
) -> dict[str, Any]:
    reply = gateway.post(
        "/v1/webhooks",
        json={"url": url, "event_types": list(event_types or ["*"]), "ordered": ordered},
        headers=tenant.headers,
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def log(gateway: httpx.Client, tenant: Tenant, webhook_id: str) -> list[dict[str, Any]]:
    reply = gateway.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    rows: list[dict[str, Any]] = reply.json().get("deliveries", [])
    return rows


def wait_for_log(
    gateway: httpx.Client,
    tenant: Tenant,
    webhook_id: str,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = log(gateway, tenant, webhook_id)
        if done(rows):
            return rows
        assert time.monotonic() < deadline, f"log never got there: {rows}"
        time.sleep(0.2)


def verified(secret: str, request: Any) -> dict[str, Any]:
    """The body, verified with the reference Standard Webhooks library."""
    body: dict[str, Any] = Verifier(secret).verify(request.body, request.headers)
    return body


def test_delivery_is_signed_per_standard_webhooks(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver, publisher: Callable[..., Any]
) -> None:
    created = create_webhook(gateway, tenant, receiver.url("/signed"), "lattice.created")
    event_id = f"evt_{uuid.uuid4().hex}"

    reply = publisher(
        tenant.tenant_id, data={"lattice_id": "l-1", "size": 10, "ratio": 0.5}, event_id=event_id
    )

    assert reply.queued_deliveries == 1
    [request] = receiver.wait_for("/signed", 1)
    body = verified(created["secret"], request)
    assert body["type"] == "lattice.created"
    assert body["data"] == {"lattice_id": "l-1", "size": 10, "ratio": 0.5}
    assert body["timestamp"].endswith("Z")
    assert request.headers["webhook-id"] == event_id
    assert request.headers["content-type"] == "application/json"
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert request.headers["webhook-signature"].startswith("v1,")
    # The signature covers the exact bytes sent.
    with pytest.raises(WebhookVerificationError):
        Verifier(created["secret"]).verify(request.body + b" ", request.headers)
    rows = wait_for_log(
        gateway,
        tenant,
        created["webhook"]["id"],
        lambda r: len(r) == 1 and r[0]["status"] == "SUCCEEDED",
    )
    assert rows[0]["event_id"] == event_id
    assert rows[0]["event_type"] == "lattice.created"
    assert rows[0]["attempt"] == 1
    assert rows[0]["response_status"] == 200


def test_events_reach_only_subscribed_enabled_endpoints(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver, publisher: Callable[..., Any]
) -> None:
    create_webhook(gateway, tenant, receiver.url("/all"), "*")
    create_webhook(gateway, tenant, receiver.url("/paths"), "path.computed")

    assert publisher(tenant.tenant_id, "lattice.deleted").queued_deliveries == 1
    assert publisher(tenant.tenant_id, "path.computed").queued_deliveries == 2

    assert len(receiver.wait_for("/all", 2)) == 2
    [only] = receiver.wait_for("/paths", 1)
    assert json.loads(only.body)["type"] == "path.computed"


def test_500_500_200_is_three_attempts_with_growing_gaps(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver, publisher: Callable[..., Any]
) -> None:
    receiver.script("/flaky", Reply(500, b"down"), Reply(500, b"still down"), Reply(200))
    created = create_webhook(gateway, tenant, receiver.url("/flaky"))
    webhook_id = created["webhook"]["id"]

    publisher(tenant.tenant_id)

    first, second, third = receiver.wait_for("/flaky", 3)
    ids = {request.headers["webhook-id"] for request in (first, second, third)}
    assert len(ids) == 1, "every attempt carries the same webhook-id"
    for request in (first, second, third):
        verified(created["secret"], request)
    gap_1, gap_2 = second.at - first.at, third.at - second.at
    # The schedule is 1 s then 2 s, each +-10% jitter: each gap at least its delay. A loaded
    # machine only makes attempts late, so the gaps are not compared with each other.
    assert gap_1 >= 0.85, (gap_1, gap_2)
    assert gap_2 >= 1.75, (gap_1, gap_2)
    rows = wait_for_log(
        gateway, tenant, webhook_id, lambda r: len(r) == 3 and r[0]["status"] == "SUCCEEDED"
    )
    assert [row["status"] for row in rows] == ["SUCCEEDED", "FAILED", "FAILED"]
    assert [row["attempt"] for row in rows] == [3, 2, 1]
    assert [row["response_status"] for row in rows] == [200, 500, 500]
    assert rows[1]["error"] == "HTTP 500"
    assert rows[2]["response_body"] == "down"
    assert len({row["id"] for row in rows}) == 1, "one delivery, three attempt rows"
    assert "next_attempt_at" not in rows[0]
    assert all("next_attempt_at" in row for row in rows[1:])


def test_retry_after_is_honoured(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver, publisher: Callable[..., Any]
) -> None:
    receiver.script("/busy", Reply(429, headers={"retry-after": "2"}), Reply(200))
    create_webhook(gateway, tenant, receiver.url("/busy"))

    publisher(tenant.tenant_id)

    first, second = receiver.wait_for("/busy", 2)
    # The schedule alone would retry after about 1 s.
    assert second.at - first.at >= 2.0


def test_410_disables_the_endpoint_until_enabled(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver, publisher: Callable[..., Any]
) -> None:
    receiver.script("/gone", Reply(410, b"gone"))
    gone = create_webhook(gateway, tenant, receiver.url("/gone"), "lattice.created", ordered=True)
    watcher = create_webhook(gateway, tenant, receiver.url("/watcher"), "webhook.disabled")
    gone_id = gone["webhook"]["id"]

    # Ordered: the second event waits behind the first, so it is still queued when the first
    # one's 410 disables the endpoint.
    first_id, second_id = f"evt_{uuid.uuid4().hex}", f"evt_{uuid.uuid4().hex}"
    publisher(tenant.tenant_id, event_id=first_id)
    publisher(tenant.tenant_id, event_id=second_id)

    [notice] = receiver.wait_for("/watcher", 1)
    disabled = verified(watcher["secret"], notice)
    assert disabled["type"] == "webhook.disabled"
    assert disabled["data"]["webhook_id"] == gone_id
    assert "410" in disabled["data"]["reason"]
    endpoint = gateway.get(f"/v1/webhooks/{gone_id}", headers=tenant.headers).json()
    assert endpoint["enabled"] is False
    assert "410" in endpoint["disabled_reason"]
    # Nothing more reaches it: not the queued event, not a new one.
    assert publisher(tenant.tenant_id).queued_deliveries == 0
    time.sleep(2.5)
    assert [r.headers["webhook-id"] for r in receiver.received("/gone")] == [first_id]
    rows = log(gateway, tenant, gone_id)
    statuses = {row["event_id"]: row["status"] for row in rows}
    assert statuses == {first_id: "DEAD", second_id: "PENDING"}
    assert_status_body(gateway.post(f"/v1/webhooks/{gone_id}/test", headers=tenant.headers), 400, 9)

    receiver.script("/gone", Reply(200))
    reply = gateway.post(f"/v1/webhooks/{gone_id}/enable", headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["enabled"] is True
    assert reply.json()["disabled_reason"] == ""

    # The queued event resumes.
    _, resumed = receiver.wait_for("/gone", 2)
    assert resumed.headers["webhook-id"] == second_id


def test_test_event_and_resend(gateway: httpx.Client, tenant: Tenant, receiver: Receiver) -> None:
    created = create_webhook(gateway, tenant, receiver.url("/tested"), "lattice.created")
    webhook_id = created["webhook"]["id"]

    reply = gateway.post(f"/v1/webhooks/{webhook_id}/test", headers=tenant.headers)

    assert reply.status_code == 200, reply.text
    queued = reply.json()
    assert queued["status"] == "PENDING"
    assert queued["event_type"] == "webhook.test"
    assert queued["attempt"] == 0
    [request] = receiver.wait_for("/tested", 1)
    body = verified(created["secret"], request)
    assert body["type"] == "webhook.test"
    assert body["data"]["webhook_id"] == webhook_id
    assert request.headers["webhook-id"] == queued["event_id"]

    path = f"/v1/webhooks/{webhook_id}/deliveries/{queued['id']}/resend"
    reply = gateway.post(path, headers=tenant.headers)
    assert reply.status_code == 200, reply.text
    resent = reply.json()
    assert resent["id"] != queued["id"]
    assert resent["event_id"] == queued["event_id"]
    _, again = receiver.wait_for("/tested", 2)
    assert again.headers["webhook-id"] == queued["event_id"]
    assert again.body == request.body

    missing = f"/v1/webhooks/{webhook_id}/deliveries/{uuid.uuid4()}/resend"
    assert_status_body(gateway.post(missing, headers=tenant.headers), 404, NOT_FOUND)
    bad = f"/v1/webhooks/{webhook_id}/deliveries/nope/resend"
    assert_status_body(gateway.post(bad, headers=tenant.headers), 400, INVALID_ARGUMENT)


def test_the_log_pages_newest_first(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    webhook_id = create_webhook(gateway, tenant, receiver.url("/paged"))["webhook"]["id"]
    queued = [
        gateway.post(f"/v1/webhooks/{webhook_id}/test", headers=tenant.headers).json()["id"]
        for _ in range(5)
    ]
    seen: list[str] = []
    token = ""
    while True:
        reply = gateway.get(
            f"/v1/webhooks/{webhook_id}/deliveries",
            params={"page_size": 2, "page_token": token},
            headers=tenant.headers,
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()
        seen += [row["id"] for row in page["deliveries"]]
        token = page.get("next_page_token", "")
        if not token:
            break
    assert seen == queued[::-1]


def test_rotation_signs_with_both_secrets_during_the_overlap(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    created = create_webhook(gateway, tenant, receiver.url("/rotated"))
    webhook_id = created["webhook"]["id"]

    reply = gateway.post(f"/v1/webhooks/{webhook_id}/rotate-secret", headers=tenant.headers)

    assert reply.status_code == 200, reply.text
    rotated = reply.json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert len(base64.b64decode(rotated["secret"].removeprefix("whsec_"))) >= 24
    assert "previous_secret_expires_at" in rotated
    gateway.post(f"/v1/webhooks/{webhook_id}/test", headers=tenant.headers)
    [request] = receiver.wait_for("/rotated", 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    verified(created["secret"], request)
    verified(rotated["secret"], request)


def test_publish_event_takes_only_the_internal_token(
    stack: Stack, gateway: httpx.Client, tenant: Tenant, publisher: Callable[..., Any]
) -> None:
    key = gateway.post("/v1/api-keys", json={"name": "pub"}, headers=tenant.headers).json()["key"]
    refused = {
        "tenant token": (("authorization", f"Bearer {tenant.access_token}"),),
        "api key": (("x-api-key", key),),
        "tenant token and internal token": (
            ("authorization", f"Bearer {tenant.access_token}"),
            ("x-internal-token", stack.env["INTERNAL_TOKEN"]),
        ),
    }
    for name, metadata in refused.items():
        with pytest.raises(grpc.RpcError) as caught:
            publisher(tenant.tenant_id, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
    for metadata in ((), (("x-internal-token", "x" * 43),)):
        with pytest.raises(grpc.RpcError) as caught:
            publisher(tenant.tenant_id, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_publish_event_is_idempotent_and_checked(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver, publisher: Callable[..., Any]
) -> None:
    create_webhook(gateway, tenant, receiver.url("/once"))
    event_id = str(uuid.uuid4())

    assert publisher(tenant.tenant_id, event_id=event_id).queued_deliveries == 1
    assert publisher(tenant.tenant_id, event_id=event_id).queued_deliveries == 0

    receiver.wait_for("/once", 1)
    time.sleep(1.0)
    assert len(receiver.received("/once")) == 1
    bad = {
        "event type": {"event_type": "lattice.exploded"},
        "event id": {"event_id": "has spaces"},
        "tenant": {"tenant_id": "not-a-uuid"},
        "data": {"data": {"blob": "x" * (256 * 1024)}},
    }
    for name, change in bad.items():
        arguments: dict[str, Any] = {"tenant_id": tenant.tenant_id, **change}
        with pytest.raises(grpc.RpcError) as caught:
            publisher(**arguments)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
    with pytest.raises(grpc.RpcError) as caught:
        publisher(str(uuid.uuid4()))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_another_tenant_cannot_read_the_log(
    gateway: httpx.Client, tenant: Tenant, receiver: Receiver
) -> None:
    webhook_id = create_webhook(gateway, tenant, receiver.url("/mine"))["webhook"]["id"]
    other = register_and_login(gateway)

    reply = gateway.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=other.headers)

    assert_status_body(reply, 404, NOT_FOUND)


def test_deliveries_survive_a_killed_webhook_service(
    stack: Stack,
    gateway: httpx.Client,
    tenant: Tenant,
    receiver: Receiver,
    publisher: Callable[..., Any],
) -> None:
    # Slow answers keep the first attempts in flight when the service dies.
    receiver.script("/crash", Reply(200, delay_s=1.0))
    created = create_webhook(gateway, tenant, receiver.url("/crash"))
    published = {f"evt_{uuid.uuid4().hex}" for _ in range(5)}
    for event_id in published:
        publisher(tenant.tenant_id, event_id=event_id)
    receiver.wait_for("/crash", 1)

    stack.kill_service("webhook")
    try:
        receiver.script("/crash", Reply(200))
    finally:
        stack.start_service("webhook")

    deadline = time.monotonic() + 30
    while True:
        delivered = {request.headers["webhook-id"] for request in receiver.received("/crash")}
        if delivered >= published or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert delivered == published
    for request in receiver.received("/crash"):
        verified(created["secret"], request)
