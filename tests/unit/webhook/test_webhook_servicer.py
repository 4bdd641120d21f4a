"""WebhookService over a real in-process server (the service's own factory, port 0)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.config import ServiceConfig
from services.webhook.endpoints import Endpoints
from services.webhook.server import start_server

from .support import OTHER_TENANT, TENANT, FakeStore, FixedResolver, Tokens

Metadata = tuple[tuple[str, str], ...]
RESOLVER = FixedResolver(
    {"hooks.example.com": ["93.184.215.14"], "intranet.example.com": ["192.168.1.10"]}
)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "keys")


@pytest.fixture
async def stub(store: FakeStore, tokens: Tokens) -> AsyncIterator[pb_grpc.WebhookServiceAsyncStub]:
    config = ServiceConfig(
        service_name="webhook",
        grpc_port=0,
        metrics_port=0,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        redis_url="redis://127.0.0.1:1/0",
    )
    endpoints = Endpoints(store, RESOLVER, allowed=[ipaddress.ip_network("127.0.0.0/8")])
    running = await start_server(config, endpoints, tokens.verifier())
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as chan:
            yield pb_grpc.WebhookServiceStub(chan)
    finally:
        await running.stop(0)


@pytest.fixture
def auth(tokens: Tokens) -> Metadata:
    return tokens.metadata(TENANT)


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


async def test_every_rpc_needs_a_token(stub: pb_grpc.WebhookServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListWebhooks(pb.ListWebhooksRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_create_get_list_delete(
    stub: pb_grpc.WebhookServiceAsyncStub, auth: Metadata
) -> None:
    created = await stub.CreateWebhook(
        pb.CreateWebhookRequest(
            url="https://hooks.example.com/in",
            event_types=["lattice.created", "*", "lattice.created"],
            description="ci",
        ),
        metadata=auth,
    )
    webhook = created.webhook
    assert created.secret.startswith("whsec_")
    assert list(webhook.event_types) == ["lattice.created", "*"]
    assert webhook.enabled
    assert webhook.disabled_reason == ""
    fetched = await stub.GetWebhook(pb.GetWebhookRequest(id=webhook.id), metadata=auth)
    assert fetched == webhook
    listed = await stub.ListWebhooks(pb.ListWebhooksRequest(page_size=10), metadata=auth)
    assert [item.id for item in listed.webhooks] == [webhook.id]
    await stub.DeleteWebhook(pb.DeleteWebhookRequest(id=webhook.id), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetWebhook(pb.GetWebhookRequest(id=webhook.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_allow_listed_loopback_may_use_http(
    stub: pb_grpc.WebhookServiceAsyncStub, auth: Metadata
) -> None:
    request = pb.CreateWebhookRequest(url="http://127.0.0.1:9000/hook", event_types=["*"])
    created = await stub.CreateWebhook(request, metadata=auth)
    assert created.webhook.url == "http://127.0.0.1:9000/hook"


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (pb.CreateWebhookRequest(url="https://intranet.example.com/", event_types=["*"]), ["url"]),
        (pb.CreateWebhookRequest(url="https://169.254.169.254/", event_types=["*"]), ["url"]),
        (pb.CreateWebhookRequest(url="http://hooks.example.com/", event_types=["*"]), ["url"]),
        (pb.CreateWebhookRequest(url="https://nowhere.example.com/", event_types=["*"]), ["url"]),
        (pb.CreateWebhookRequest(url="https://hooks.example.com/"), ["event_types"]),
        (
            pb.CreateWebhookRequest(url="https://hooks.example.com/", event_types=["*", "nope"]),
            ["event_types[1]"],
        ),
        (
            pb.CreateWebhookRequest(
                url="https://hooks.example.com/", event_types=["*"], description="x" * 501
            ),
            ["description"],
        ),
    ],
)
async def test_invalid_creates(
    stub: pb_grpc.WebhookServiceAsyncStub,
    auth: Metadata,
    request_: pb.CreateWebhookRequest,
    fields: list[str],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateWebhook(request_, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == fields


async def test_ids_and_tenancy(
    stub: pb_grpc.WebhookServiceAsyncStub, tokens: Tokens, auth: Metadata
) -> None:
    created = await stub.CreateWebhook(
        pb.CreateWebhookRequest(url="https://hooks.example.com/", event_types=["*"]), metadata=auth
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.DeleteWebhook(pb.DeleteWebhookRequest(id="nope"), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["id"]
    other = tokens.metadata(OTHER_TENANT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetWebhook(pb.GetWebhookRequest(id=created.webhook.id), metadata=other)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_later_rpcs_are_unimplemented_not_internal(
    stub: pb_grpc.WebhookServiceAsyncStub, auth: Metadata
) -> None:
    calls = (
        stub.RotateWebhookSecret(pb.RotateWebhookSecretRequest(id="x"), metadata=auth),
        stub.EnableWebhook(pb.EnableWebhookRequest(id="x"), metadata=auth),
        stub.TestWebhook(pb.TestWebhookRequest(id="x"), metadata=auth),
        stub.ListDeliveries(pb.ListDeliveriesRequest(id="x"), metadata=auth),
        stub.ResendDelivery(pb.ResendDeliveryRequest(id="x", delivery_id="y"), metadata=auth),
        stub.PublishEvent(pb.PublishEventRequest(event_id="e"), metadata=auth),
    )
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
