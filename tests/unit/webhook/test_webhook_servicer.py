"""WebhookService over a real in-process server (the service's own factory, port 0)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc

from services.common.internal_auth import InternalToken
from services.webhook.deliveries import Deliveries
from services.webhook.endpoints import Endpoints
from services.webhook.policy import RetryPolicy
from services.webhook.server import start_server
from tests.support.grpc_calls import isolated_config, violations
from tests.support.identity import Tokens

from .support import OTHER_TENANT, TENANT, FakeDeliveryStore, FakeStore, FixedResolver

Metadata = tuple[tuple[str, str], ...]
RESOLVER = FixedResolver(
    {"hooks.example.com": ["93.184.215.14"], "intranet.example.com": ["192.168.1.10"]}
)
INTERNAL = InternalToken("unit-test-internal-token-0123456789abcdef")


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "keys")


@pytest.fixture
def deliveries(store: FakeStore) -> FakeDeliveryStore:
    return FakeDeliveryStore(store)


@pytest.fixture
async def stub(
    store: FakeStore, deliveries: FakeDeliveryStore, tokens: Tokens
) -> AsyncIterator[pb_grpc.WebhookServiceAsyncStub]:
    config = isolated_config("webhook")
    endpoints = Endpoints(store, RESOLVER, allowed=[ipaddress.ip_network("127.0.0.0/8")])
    policy = RetryPolicy([0, 5], jitter=0.1, retry_after_max_s=60, disable_after_s=3600)
    running = await start_server(
        config,
        endpoints,
        Deliveries(deliveries, policy),
        tokens.verifier(),
        internal_token=INTERNAL,
    )
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as chan:
            yield pb_grpc.WebhookServiceStub(chan)
    finally:
        await running.stop(0)


@pytest.fixture
def auth(tokens: Tokens) -> Metadata:
    return tokens.metadata(TENANT)


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


async def create(
    stub: pb_grpc.WebhookServiceAsyncStub, auth: Metadata, **fields: object
) -> pb.Webhook:
    request = pb.CreateWebhookRequest(
        **{"url": "https://hooks.example.com/", "event_types": ["*"], **fields}
    )
    created = await stub.CreateWebhook(request, metadata=auth)
    return created.webhook


async def test_ordered_is_kept(stub: pb_grpc.WebhookServiceAsyncStub, auth: Metadata) -> None:
    webhook = await create(stub, auth, ordered=True)
    assert webhook.ordered
    fetched = await stub.GetWebhook(pb.GetWebhookRequest(id=webhook.id), metadata=auth)
    assert fetched.ordered


async def test_rotate_enable_test_resend_and_the_log(
    stub: pb_grpc.WebhookServiceAsyncStub, store: FakeStore, auth: Metadata
) -> None:
    webhook = await create(stub, auth)

    rotated = await stub.RotateWebhookSecret(
        pb.RotateWebhookSecretRequest(id=webhook.id), metadata=auth
    )
    assert rotated.secret.startswith("whsec_")
    assert rotated.HasField("previous_secret_expires_at")
    tested = await stub.TestWebhook(pb.TestWebhookRequest(id=webhook.id), metadata=auth)
    assert tested.status == pb.Delivery.PENDING
    assert tested.event_type == "webhook.test"
    assert tested.attempt == 0
    resent = await stub.ResendDelivery(
        pb.ResendDeliveryRequest(id=webhook.id, delivery_id=tested.id), metadata=auth
    )
    assert resent.event_id == tested.event_id
    assert resent.id != tested.id
    listed = await stub.ListDeliveries(
        pb.ListDeliveriesRequest(id=webhook.id, page_size=1), metadata=auth
    )
    assert [row.id for row in listed.deliveries] == [resent.id]
    following = await stub.ListDeliveries(
        pb.ListDeliveriesRequest(id=webhook.id, page_token=listed.next_page_token), metadata=auth
    )
    assert [row.id for row in following.deliveries] == [tested.id]
    assert following.next_page_token == ""

    store.disable(webhook.id, "the endpoint answered 410 Gone")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.TestWebhook(pb.TestWebhookRequest(id=webhook.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    enabled = await stub.EnableWebhook(pb.EnableWebhookRequest(id=webhook.id), metadata=auth)
    assert enabled.enabled
    assert enabled.disabled_reason == ""


async def test_another_tenants_ids_are_not_found(
    stub: pb_grpc.WebhookServiceAsyncStub, tokens: Tokens, auth: Metadata
) -> None:
    webhook = await create(stub, auth)
    tested = await stub.TestWebhook(pb.TestWebhookRequest(id=webhook.id), metadata=auth)
    other = tokens.metadata(OTHER_TENANT)
    mine = await create(stub, other)
    calls = (
        stub.RotateWebhookSecret(pb.RotateWebhookSecretRequest(id=webhook.id), metadata=other),
        stub.EnableWebhook(pb.EnableWebhookRequest(id=webhook.id), metadata=other),
        stub.TestWebhook(pb.TestWebhookRequest(id=webhook.id), metadata=other),
        stub.ListDeliveries(pb.ListDeliveriesRequest(id=webhook.id), metadata=other),
        stub.ResendDelivery(
            pb.ResendDeliveryRequest(id=webhook.id, delivery_id=tested.id), metadata=other
        ),
        stub.ResendDelivery(
            pb.ResendDeliveryRequest(id=mine.id, delivery_id=tested.id), metadata=other
        ),
    )
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_ids_are_invalid_arguments(
    stub: pb_grpc.WebhookServiceAsyncStub, auth: Metadata
) -> None:
    webhook = await create(stub, auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ResendDelivery(
            pb.ResendDeliveryRequest(id=webhook.id, delivery_id="nope"), metadata=auth
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["delivery_id"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListDeliveries(pb.ListDeliveriesRequest(id="nope"), metadata=auth)
    assert violations(caught.value) == ["id"]


def publish_request(**fields: object) -> pb.PublishEventRequest:
    request = pb.PublishEventRequest(
        event_id="evt_1", tenant_id=TENANT, event_type="lattice.created"
    )
    for name, value in fields.items():
        setattr(request, name, value)
    request.data.update({"lattice_id": "l", "size": 3})
    return request


async def test_publish_event_needs_the_internal_token(
    stub: pb_grpc.WebhookServiceAsyncStub, tokens: Tokens, auth: Metadata
) -> None:
    internal = INTERNAL.metadata()
    cases = {
        grpc.StatusCode.UNAUTHENTICATED: [(), (("x-internal-token", "y" * 43),)],
        grpc.StatusCode.PERMISSION_DENIED: [
            auth,
            (("x-api-key", "cat_aaaaaaaaaaaa_" + "b" * 43),),
            (*auth, *internal),
        ],
        grpc.StatusCode.INVALID_ARGUMENT: [(*internal, *internal)],
    }
    for code, attempts in cases.items():
        for metadata in attempts:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PublishEvent(publish_request(), metadata=metadata)
            assert caught.value.code() == code, metadata
    # And the internal token is no credential for the tenant methods.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListWebhooks(pb.ListWebhooksRequest(), metadata=internal)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_publish_event_queues_once_per_event_id(
    stub: pb_grpc.WebhookServiceAsyncStub, deliveries: FakeDeliveryStore, auth: Metadata
) -> None:
    await create(stub, auth)
    await create(stub, auth, event_types=["path.computed"])
    internal = INTERNAL.metadata()

    first = await stub.PublishEvent(publish_request(), metadata=internal)
    again = await stub.PublishEvent(publish_request(), metadata=internal)

    assert (first.queued_deliveries, again.queued_deliveries) == (1, 0)
    [(tenant_id, event)] = deliveries.events.values()
    assert tenant_id == TENANT
    assert event.body.startswith(b'{"type":"lattice.created","timestamp":"')
    assert event.body.endswith(b'"data":{"lattice_id":"l","size":3}}')


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": "a b"}, "event_id"),
        ({"event_type": "lattice.exploded"}, "event_type"),
        ({"tenant_id": "tenant"}, "tenant_id"),
    ],
)
async def test_publish_event_checks_its_request(
    stub: pb_grpc.WebhookServiceAsyncStub, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishEvent(publish_request(**fields), metadata=INTERNAL.metadata())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == [field]


async def test_publish_event_for_an_unknown_tenant(stub: pb_grpc.WebhookServiceAsyncStub) -> None:
    request = publish_request(tenant_id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishEvent(request, metadata=INTERNAL.metadata())
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
