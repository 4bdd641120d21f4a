"""WebhookService gRPC servicer: proto in, domain call, proto out."""

from __future__ import annotations

import grpc
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc

from services.common.context import current_principal
from services.common.errors import Unimplemented
from services.common.timestamps import to_timestamp
from services.webhook.endpoints import Endpoints, WebhookRecord

Context = grpc.aio.ServicerContext[object, object]
NOT_YET = "not available in this release"


def webhook_message(record: WebhookRecord) -> pb.Webhook:
    return pb.Webhook(
        id=record.id,
        url=record.url,
        event_types=list(record.event_types),
        description=record.description,
        enabled=record.enabled,
        disabled_reason=record.disabled_reason,
        created_at=to_timestamp(record.created_at),
    )


class WebhookServicer(pb_grpc.WebhookServiceServicer):
    """Thin adapter over Endpoints."""

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints

    async def CreateWebhook(
        self, request: pb.CreateWebhookRequest, context: Context
    ) -> pb.CreateWebhookResponse:
        record, secret = await self._endpoints.create(
            current_principal(),
            url=request.url,
            event_types=list(request.event_types),
            description=request.description,
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
        raise Unimplemented(f"RotateWebhookSecret is {NOT_YET}")

    async def EnableWebhook(self, request: pb.EnableWebhookRequest, context: Context) -> pb.Webhook:
        raise Unimplemented(f"EnableWebhook is {NOT_YET}")

    async def TestWebhook(self, request: pb.TestWebhookRequest, context: Context) -> pb.Delivery:
        raise Unimplemented(f"TestWebhook is {NOT_YET}")

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Context
    ) -> pb.ListDeliveriesResponse:
        raise Unimplemented(f"ListDeliveries is {NOT_YET}")

    async def ResendDelivery(
        self, request: pb.ResendDeliveryRequest, context: Context
    ) -> pb.Delivery:
        raise Unimplemented(f"ResendDelivery is {NOT_YET}")

    async def PublishEvent(
        self, request: pb.PublishEventRequest, context: Context
    ) -> pb.PublishEventResponse:
        raise Unimplemented(f"PublishEvent is {NOT_YET}")
