"""A stand-in WebhookService that only records PublishEvent calls, on a real gRPC server.

For the relay's tests: it checks the internal token like the real service, can be told to fail
the next calls with given codes, and can be stopped and started again on the same port.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from catalytic.webhook.v1 import webhook_service_pb2 as webhook_pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as webhook_grpc
from google.protobuf import json_format

TOKEN = "relay-test-internal-token-0123456789abcdef"


@dataclass(frozen=True)
class Published:
    event_id: str
    tenant_id: str
    event_type: str
    data: dict[str, Any]


@dataclass
class FakeWebhook(webhook_grpc.WebhookServiceServicer):
    token: str = TOKEN
    published: list[Published] = field(default_factory=list)
    # Outcomes of the next calls, in order (OK: accept it); then every call is accepted.
    failures: list[grpc.StatusCode] = field(default_factory=list)
    calls: int = 0
    server: grpc.aio.Server | None = None
    port: int = 0

    async def PublishEvent(
        self, request: webhook_pb.PublishEventRequest, context: Any
    ) -> webhook_pb.PublishEventResponse:
        self.calls += 1
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("x-internal-token") != self.token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "x-internal-token is not valid")
        if self.failures:
            code = self.failures.pop(0)
            if code != grpc.StatusCode.OK:
                await context.abort(code, "failing on purpose")
        self.published.append(
            Published(
                request.event_id,
                request.tenant_id,
                request.event_type,
                json_format.MessageToDict(request.data),
            )
        )
        return webhook_pb.PublishEventResponse(queued_deliveries=0)

    def counts(self) -> Counter[str]:
        return Counter(event.event_id for event in self.published)

    async def start(self) -> str:
        """Serves on 127.0.0.1 (the same port again after a stop); returns host:port."""
        server = grpc.aio.server()
        webhook_grpc.add_WebhookServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self.server = server
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None
