"""Delivery behaviours that need settings of their own, on in-process webhook servers.

Each test runs the service's real factory (worker included) on a scratch copy of the schema
(tests/unit/webhook/harness.py), with real receivers on 127.0.0.1, real DNS seams and real TLS.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from devstack import Stack
from tests.e2e.helpers import Tenant, register_and_login
from tests.unit.webhook.harness import (
    Scratch,
    webhook_server,
)
from tests.unit.webhook.receiver import Receiver, Reply, running_receiver, self_signed
from tests.unit.webhook.support import FixedResolver

pytestmark = pytest.mark.integration

PUBLIC_ADDRESS = "93.184.215.14"
FAILED, DEAD, SUCCEEDED = pb.Delivery.FAILED, pb.Delivery.DEAD, pb.Delivery.SUCCEEDED


@pytest.fixture
def tenant(gateway: httpx.Client) -> Tenant:
    return register_and_login(gateway)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


async def wait_for(receiver: Receiver, path: str, count: int, within: float = 15.0) -> list[Any]:
    return await asyncio.to_thread(receiver.wait_for, path, count, within)


def closed_port() -> int:
    """A port nothing listens on (bound once by us, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_https_connects_to_the_checked_address_with_the_name_for_tls(
    stack: Stack, scratch: Scratch, tenant: Tenant, tmp_path: Path
) -> None:
    """DNS is answered once, by the guard; the connection goes to that address, while TLS
    verifies the certificate for the name (SNI) and Host keeps the name."""
    server_tls, ca = self_signed(tmp_path, ["hooks.example.test"])
    resolver = FixedResolver({"hooks.example.test": ["127.0.0.1"]})
    trust = ssl.create_default_context(cafile=str(ca))
    with running_receiver(server_tls) as receiver:
        async with webhook_server(
            stack, scratch, tenant, resolver=resolver, ssl_context=trust
        ) as hub:
            url = receiver.url("/tls", scheme="https", host="hooks.example.test")
            created = await hub.create(url)
            await hub.publish(size=3)

            [request] = await wait_for(receiver, "/tls", 1)

    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    body = Verifier(created.secret).verify(request.body, request.headers)
    assert body["data"] == {"size": 3}
    assert resolver.asked.count("hooks.example.test") >= 2  # at registration and at connect


async def test_a_name_that_turns_into_loopback_is_refused_at_connect_time(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    """DNS rebinding: public when registered, 127.0.0.1 when sent; no allow list."""
    resolver = FixedResolver({"rebind.example.test": [PUBLIC_ADDRESS]})
    async with webhook_server(
        stack, scratch, tenant, resolver=resolver, WEBHOOK_ALLOW_CIDRS=""
    ) as hub:
        url = receiver.url("/rebind", scheme="https", host="rebind.example.test")
        created = await hub.create(url)
        resolver.answers["rebind.example.test"] = ["127.0.0.1"]

        await hub.publish()
        rows = await hub.wait_for_log(
            created.webhook.id, lambda rows: any(row.status == FAILED for row in rows)
        )

    failed = next(row for row in rows if row.status == FAILED)
    assert "127.0.0.1" in failed.error
    assert "loopback" in failed.error
    assert failed.response_status == 0
    assert receiver.received("/rebind") == []


async def test_plain_http_outside_the_allow_list_is_refused_at_connect_time(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    resolver = FixedResolver({"plain.example.test": ["127.0.0.1"]})
    async with webhook_server(
        stack, scratch, tenant, resolver=resolver, WEBHOOK_ALLOW_CIDRS="127.0.0.0/8"
    ) as hub:
        created = await hub.create(receiver.url("/plain", host="plain.example.test"))
        # Allowed when registered; now the operator's list no longer covers where it goes.
        resolver.answers["plain.example.test"] = [PUBLIC_ADDRESS]
        await hub.publish()
        rows = await hub.wait_for_log(
            created.webhook.id, lambda rows: any(row.status == FAILED for row in rows)
        )

    assert any("use https" in row.error for row in rows)
    assert receiver.received("/plain") == []


async def test_failures_are_logged_with_a_clear_reason_and_retried(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver, tmp_path: Path
) -> None:
    server_tls, _ = self_signed(tmp_path, ["127.0.0.1"])
    resolver = FixedResolver({"gone.example.test": ["127.0.0.1"]})
    receiver.script("/slow", Reply(200, delay_s=3))
    with running_receiver(server_tls) as untrusted:
        async with webhook_server(
            stack,
            scratch,
            tenant,
            resolver=resolver,
            WEBHOOK_TIMEOUT_S="1",
            WEBHOOK_RETRY_SCHEDULE_S="0,0.2,0.2",
        ) as hub:
            cases = {
                "timeout": receiver.url("/slow"),
                "connection refused": f"http://127.0.0.1:{closed_port()}/refused",
                "DNS": receiver.url("/dns", host="gone.example.test"),
                "TLS error": untrusted.url("/tls", scheme="https"),
            }
            hooks = {reason: await hub.create(url) for reason, url in cases.items()}
            del resolver.answers["gone.example.test"]

            await hub.publish()
            logs = {
                reason: await hub.wait_for_log(
                    created.webhook.id,
                    lambda rows: [row.status for row in rows] == [DEAD, FAILED, FAILED],
                )
                for reason, created in hooks.items()
            }

    for reason, rows in logs.items():
        assert [row.attempt for row in rows] == [3, 2, 1], reason
        assert all(row.error.startswith(reason) for row in rows), (reason, rows)
        assert all(row.response_status == 0 for row in rows), reason
        assert len({row.id for row in rows}) == 1
    assert "certificate" in logs["TLS error"][0].error


async def test_rotation_overlap_ends(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    async with webhook_server(stack, scratch, tenant, WEBHOOK_SECRET_OVERLAP_S="1.5") as hub:
        created = await hub.create(receiver.url("/rotate"))
        webhook_id = created.webhook.id
        rotated = await hub.stub.RotateWebhookSecret(
            pb.RotateWebhookSecretRequest(id=webhook_id), metadata=hub.auth
        )
        started = time.time()
        await hub.stub.TestWebhook(pb.TestWebhookRequest(id=webhook_id), metadata=hub.auth)
        [during] = await wait_for(receiver, "/rotate", 1)
        assert time.time() - started < 1.5, "too slow to see the overlap"
        await asyncio.sleep(max(0.0, 1.6 - (time.time() - started)))
        await hub.stub.TestWebhook(pb.TestWebhookRequest(id=webhook_id), metadata=hub.auth)
        _, after = await wait_for(receiver, "/rotate", 2)

    assert abs(rotated.previous_secret_expires_at.ToDatetime().timestamp() - started) < 5
    Verifier(created.secret).verify(during.body, during.headers)
    Verifier(rotated.secret).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Verifier(rotated.secret).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Verifier(created.secret).verify(after.body, after.headers)


async def test_an_endpoint_failing_for_long_enough_is_disabled(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/down", Reply(500))
    before = counter("catalytic_webhook_endpoints_disabled_total", reason="failing")
    async with webhook_server(
        stack,
        scratch,
        tenant,
        WEBHOOK_DISABLE_AFTER_S="1",
        WEBHOOK_RETRY_SCHEDULE_S="0,0.4,0.4,0.4,0.4,0.4,0.4,0.4",
    ) as hub:
        down = await hub.create(receiver.url("/down"), "lattice.created")
        watcher = await hub.create(receiver.url("/watcher"), "webhook.disabled")

        await hub.publish()
        [notice] = await wait_for(receiver, "/watcher", 1)
        endpoint = await hub.stub.GetWebhook(
            pb.GetWebhookRequest(id=down.webhook.id), metadata=hub.auth
        )
        rows = await hub.log(down.webhook.id)

    body = Verifier(watcher.secret).verify(notice.body, notice.headers)
    assert body["type"] == "webhook.disabled"
    assert body["data"]["webhook_id"] == down.webhook.id
    assert not endpoint.enabled
    assert "failed" in endpoint.disabled_reason
    assert rows[0].status == DEAD
    assert 3 <= rows[0].attempt < 8, "disabled by time, before the schedule ran out"
    assert counter("catalytic_webhook_endpoints_disabled_total", reason="failing") == before + 1


async def test_an_ordered_endpoint_gets_events_one_at_a_time_in_order(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    # The first event fails once: the others must wait for it, not overtake it.
    receiver.script("/ordered", Reply(503, b"busy"), Reply(200, delay_s=0.05))
    async with webhook_server(stack, scratch, tenant, WEBHOOK_RETRY_SCHEDULE_S="0,0.3") as hub:
        created = await hub.create(receiver.url("/ordered"), ordered=True)
        assert created.webhook.ordered
        published = [f"evt_{index}_{time.time_ns()}" for index in range(6)]
        for event_id in published:
            await hub.publish(event_id=event_id)

        requests = await wait_for(receiver, "/ordered", 7)

    order = [request.headers["webhook-id"] for request in requests]
    assert order == [published[0], *published]
    for earlier, later in itertools.pairwise(requests[1:]):
        assert later.at >= earlier.at + 0.05, "one at a time: each waits for the last answer"


async def test_the_endpoint_rate_limit_spreads_attempts(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    async with webhook_server(stack, scratch, tenant, WEBHOOK_ENDPOINT_RATE_PER_S="2") as hub:
        created = await hub.create(receiver.url("/limited"))
        for _ in range(6):
            await hub.publish()
        requests = await wait_for(receiver, "/limited", 6)
        rows = await hub.wait_for_log(
            created.webhook.id, lambda rows: all(row.status == SUCCEEDED for row in rows)
        )

    # A burst of 2, then one every 0.5 s.
    assert requests[-1].at - requests[0].at >= 1.5
    assert all(row.status == SUCCEEDED and row.attempt == 1 for row in rows), rows


async def test_shutdown_releases_unfinished_deliveries_for_the_next_worker(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/drain", Reply(200, delay_s=3), Reply(200))
    async with webhook_server(stack, scratch, tenant, SHUTDOWN_GRACE_S="0.3") as hub:
        created = await hub.create(receiver.url("/drain"))
        await hub.publish(event_id="evt_drained")
        await wait_for(receiver, "/drain", 1)
    # Cut off after the grace: released at once, not left to its lease.
    [(locked_until, status)] = scratch.query("SELECT locked_until, status FROM webhook_deliveries")
    assert (locked_until, status) == (None, "PENDING")

    async with webhook_server(stack, scratch, tenant, WEBHOOK_LEASE_S="30") as hub:
        _, again = await wait_for(receiver, "/drain", 2, within=5)
        rows = await hub.wait_for_log(created.webhook.id, lambda rows: rows[0].status == SUCCEEDED)
    assert again.headers["webhook-id"] == "evt_drained"
    assert rows[0].attempt == 1


async def test_metrics_count_outcomes_and_watch_the_queue(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/counted", Reply(500), Reply(200))
    succeeded = counter("catalytic_webhook_deliveries_total", outcome="succeeded")
    failed = counter("catalytic_webhook_deliveries_total", outcome="failed")
    attempts = counter("catalytic_webhook_attempt_duration_seconds_count")
    async with webhook_server(stack, scratch, tenant) as hub:
        created = await hub.create(receiver.url("/counted"))
        await hub.publish()
        await hub.wait_for_log(created.webhook.id, lambda rows: rows[0].status == SUCCEEDED)
        # The worker counts right after it has recorded the attempt.
        await asyncio.sleep(0.2)

    assert counter("catalytic_webhook_deliveries_total", outcome="succeeded") == succeeded + 1
    assert counter("catalytic_webhook_deliveries_total", outcome="failed") == failed + 1
    assert counter("catalytic_webhook_attempt_duration_seconds_count") == attempts + 2
    assert REGISTRY.get_sample_value("catalytic_webhook_queue_depth") is not None
    assert REGISTRY.get_sample_value("catalytic_webhook_oldest_pending_age_seconds") is not None


async def test_payload_bytes_are_signed_and_sent_exactly_as_stored(
    stack: Stack, scratch: Scratch, tenant: Tenant, receiver: Receiver
) -> None:
    receiver.script("/exact", Reply(500), Reply(200))
    async with webhook_server(stack, scratch, tenant) as hub:
        created = await hub.create(receiver.url("/exact"))
        await hub.publish(
            event_id="evt_exact", text="naïve ☃", whole=7.0, part=0.25, nested={"a": [1, None]}
        )
        first, second = await wait_for(receiver, "/exact", 2)

    [(stored,)] = scratch.query("SELECT payload FROM webhook_events WHERE id = 'evt_exact'")
    assert first.body == second.body == bytes(stored)
    assert json.loads(first.body)["data"] == {
        "text": "naïve ☃",
        "whole": 7,
        "part": 0.25,
        "nested": {"a": [1, None]},
    }
    for request in (first, second):
        Verifier(created.secret).verify(request.body, request.headers)
