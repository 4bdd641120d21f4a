"""WebhookService gRPC servicer: proto in, domain call, proto out."""

from __future__ import annotations

from datetime import UTC

import grpc
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from services.common.context import current_principal
from services.common.timestamps import to_timestamp
from services.webhook.deliveries import Deliveries, DeliveryRecord
from services.webhook.endpoints import Endpoints, WebhookRecord

Context = grpc.aio.ServicerContext[object, object]

JsonValue = None | bool | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def webhook_message(record: WebhookRecord) -> pb.Webhook:
    return pb.Webhook(
        id=record.id,
        url=record.url,
        event_types=list(record.event_types),
        description=record.description,
        enabled=record.enabled,
        disabled_reason=record.disabled_reason,
        created_at=to_timestamp(record.created_at),
        ordered=record.ordered,
    )


def delivery_message(record: DeliveryRecord) -> pb.Delivery:
    return pb.Delivery(
        id=record.id,
        event_id=record.event_id,
        event_type=record.event_type,
        status=pb.Delivery.Status.Value(record.status.value),
        attempt=record.attempt,
        response_status=record.response_status,
        error=record.error,
        next_attempt_at=to_timestamp(record.next_attempt_at),
        created_at=to_timestamp(record.created_at),
        response_body=record.response_body,
        attempted_at=to_timestamp(record.attempted_at),
    )


def _plain(value: struct_pb2.Value) -> JsonValue:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_data(value.struct_value)
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def struct_data(data: struct_pb2.Struct) -> dict[str, JsonValue]:
    """A Struct as plain Python values (numbers stay doubles; the domain tidies them)."""
    return {key: _plain(value) for key, value in data.fields.items()}


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    """Thin adapter over Endpoints and Deliveries."""

    def __init__(self, endpoints: Endpoints, deliveries: Deliveries) -> None:
        self._endpoints = endpoints
        self._deliveries = deliveries

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: Context
    ) -> pb.CreateWebhookResponse:
        record, secret = await self._endpoints.create(
            current_principal(),
            url=request.url,
            event_types=list(request.event_types),
            description=request.description,
            ordered=request.ordered,
        )
        return pb.CreateWebhookResponse(webhook=webhook_message(record), secret=secret)

    async def GetWebhook(self, request: pb.GetWebhookRequest, context: Context) -> pb.Webhook:
        return webhook_message(await self._endpoints.get(current_principal(), request.id))

    async def ListWebhooks(
        self, request: pb.ListWebhooksRequest, context: Context
    ) -> pb.ListWebhooksResponse:
        page = await self._endpoints.list_page(
            current_principal(), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListWebhooksResponse(
            webhooks=[webhook_message(record) for record in page.webhooks],
            next_page_token=page.next_page_token,
        )

    async def DeleteWebhook(
        self, request: pb.DeleteWebhookRequest, context: Context
    ) -> pb.DeleteWebhookResponse:
        await self._endpoints.delete(current_principal(), request.id)
        return pb.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: Context
    ) -> pb.RotateWebhookSecretResponse:
        rotated = await self._endpoints.rotate_secret(current_principal(), request.id)
        return pb.RotateWebhookSecretResponse(
            secret=rotated.secret,
            previous_secret_expires_at=to_timestamp(rotated.previous_expires_at),
        )

    async def EnableWebhook(self, request: pb.EnableWebhookRequest, context: Context) -> pb.Webhook:
        return webhook_message(await self._endpoints.enable(current_principal(), request.id))

    async def TestWebhook(self, request: pb.TestWebhookRequest, context: Context) -> pb.Delivery:
        return delivery_message(await self._deliveries.test(current_principal(), request.id))

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Context
    ) -> pb.ListDeliveriesResponse:
        page = await self._deliveries.list_page(
            current_principal(),
            request.id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListDeliveriesResponse(
            deliveries=[delivery_message(record) for record in page.deliveries],
            next_page_token=page.next_page_token,
        )

    async def ResendDelivery(
        self, request: pb.ResendDeliveryRequest, context: Context
    ) -> pb.Delivery:
        record = await self._deliveries.resend(current_principal(), request.id, request.delivery_id)
        return delivery_message(record)

    async def PublishEvent(
        self, request: pb.PublishEventRequest, context: Context
    ) -> pb.PublishEventResponse:
        # Only the internal token reaches this handler (AuthInterceptor's internal_methods).
        queued = await self._deliveries.publish(
            event_id=request.event_id,
            tenant_id=request.tenant_id,
            event_type=request.event_type,
            data=struct_data(request.data),
            occurred_at=request.occurred_at.ToDatetime(tzinfo=UTC)
            if request.HasField("occurred_at")
            else None,
        )
        return pb.PublishEventResponse(queued_deliveries=queued)
