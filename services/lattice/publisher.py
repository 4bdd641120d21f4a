"""The relay's outbound client: WebhookService.PublishEvent over gRPC, with quick retries."""

from __future__ import annotations

import grpc
from catalytic.webhook.v1 import webhook_service_pb2 as webhook_pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as webhook_grpc
from google.protobuf import struct_pb2
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from services.common.interceptors.request_context import REQUEST_ID_KEY
from services.common.internal_auth import InternalToken
from services.common.timestamps import to_timestamp
from services.lattice.outbox import PendingEvent, PublishError

# Codes worth another try within the same pass: the service restarting, overloaded or slow.
# Anything else (UNAUTHENTICATED: a wrong INTERNAL_TOKEN, UNIMPLEMENTED, INVALID_ARGUMENT) will
# not change in a second; the outbox retries it later with a longer backoff.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
    }
)


def _transient(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in TRANSIENT


def publish_request(event: PendingEvent) -> webhook_pb.PublishEventRequest:
    data = struct_pb2.Struct()
    data.update(event.data)
    return webhook_pb.PublishEventRequest(
        event_id=event.id,
        tenant_id=event.tenant_id,
        event_type=event.type,
        data=data,
        occurred_at=to_timestamp(event.occurred_at),
    )


class WebhookPublisher:
    """EventPublisher on a channel to the webhook service.

    Each event gets `attempts` calls at most, `timeout_s` each, with exponential backoff and
    full jitter between them (tenacity); the outbox takes over after that.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        token: InternalToken | None,
        *,
        timeout_s: float = 5.0,
        attempts: int = 3,
        initial_wait_s: float = 0.1,
        max_wait_s: float = 2.0,
    ) -> None:
        self._stub = webhook_grpc.WebhookServiceStub(channel)
        self._token = token
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._initial_wait_s = initial_wait_s
        self._max_wait_s = max_wait_s

    async def publish(self, event: PendingEvent) -> None:
        request = publish_request(event)
        metadata: tuple[tuple[str, str], ...] = ((REQUEST_ID_KEY, f"outbox-{event.id}"),)
        if self._token is not None:
            metadata += self._token.metadata()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=self._initial_wait_s, max=self._max_wait_s),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._stub.PublishEvent(
                        request, metadata=metadata, timeout=self._timeout_s
                    )
        except grpc.aio.AioRpcError as error:
            raise PublishError(
                error.code().name, error.details() or "", transient=error.code() in TRANSIENT
            ) from None
