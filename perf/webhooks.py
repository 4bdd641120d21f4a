"""Webhook deliveries against PublishEvent of a tenant without endpoints, in the same run.

The figure is the stack's CPU per published event ÷ its CPU per delivered event (published,
fanned out, claimed, sent over HTTP, its result written). The reference is the webhook
service's own cheapest write: the same gRPC server, process, PostgreSQL and publishing driver,
without the delivery pipeline, which is therefore what the ratio guards (ADR 40's work). CPU
rather than deliveries/s: the service batches its writes, so its throughput on a shared
2-CPU machine swings by half between rounds, while what each delivery costs does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from dataclasses import dataclass, field

import grpc
import httpx
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from loadtest.webhooks import answer_each
from perf.cpu import settle, stack_cpu_s
from perf.model import Context, Direction, Measurement


class DeliveriesMissing(RuntimeError):
    """Not every event reached every endpoint in time: there is no figure to judge."""


@dataclass
class Receiver:
    """Notes the first arrival of each expected event (by `webhook-id`). Answers 200 as soon
    as a request's body has arrived."""

    pending: set[str] = field(default_factory=set)
    # When each expected event became complete (time.monotonic()), in order.
    completed: list[float] = field(default_factory=list)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    # Open connections and their handlers, closed and awaited at the end.
    _connections: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = field(
        default_factory=dict
    )

    def expect(self, event_ids: list[str]) -> None:
        self.pending = set(event_ids)
        self.completed = []
        self.all_in.clear()

    def steady_rate(self) -> float:
        """Events/s between the 10th and the 90th percentile of completions. The ramp-up and
        the tail are left out: a straggler waits for the worker's next poll (up to 0.5 s),
        which would make the figure the poll timer's rather than the pipeline's."""
        n = len(self.completed)
        low, high = n // 10, n - 1 - n // 10
        return (high - low) / (self.completed[high] - self.completed[low])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections[writer] = asyncio.current_task()
        await answer_each(reader, writer, self._arrived)

    def _arrived(self, event_id: str) -> None:
        # A redelivery (at least once) is not counted again.
        if event_id in self.pending:
            self.pending.remove(event_id)
            self.completed.append(time.monotonic())
            if not self.pending:
                self.all_in.set()

    async def close(self) -> None:
        """Closes every connection (the worker keeps them open) and awaits the handlers."""
        for writer in self._connections:
            writer.close()
        await asyncio.gather(
            *(task for task in self._connections.values() if task), return_exceptions=True
        )


def register(gateway: httpx.Client, endpoint_url: str | None) -> str:
    """A fresh tenant with an endpoint at the URL (None: a tenant whose events go nowhere)."""
    unique = uuid.uuid4().hex[:12]
    email, password = f"perf-{unique}@example.com", f"perf passphrase {unique} staple"
    reply = gateway.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "tenant_name": f"perf-{unique}"},
    )
    reply.raise_for_status()
    tenant_id: str = reply.json()["tenant"]["id"]
    reply = gateway.post("/v1/auth/login", json={"email": email, "password": password})
    reply.raise_for_status()
    headers = {"authorization": f"Bearer {reply.json()['access_token']}"}
    if endpoint_url is not None:
        reply = gateway.post(
            "/v1/webhooks", json={"url": endpoint_url, "event_types": ["*"]}, headers=headers
        )
        reply.raise_for_status()
    return tenant_id


def events(tenant_id: str, count: int) -> list[pb.PublishEventRequest]:
    return [
        pb.PublishEventRequest(
            event_id=f"evt_{uuid.uuid4().hex}",
            tenant_id=tenant_id,
            event_type="lattice.created",
            data=struct_pb2.Struct(fields={"sequence": struct_pb2.Value(number_value=n)}),
        )
        for n in range(count)
    ]


async def publish(
    stub: pb_grpc.WebhookServiceAsyncStub,
    token: str,
    batch: list[pb.PublishEventRequest],
    publishers: int,
) -> float:
    """Publishes the batch with `publishers` calls in flight; returns when it started."""
    queue = iter(batch)
    metadata = (("x-internal-token", token),)

    async def publisher() -> None:
        for request in queue:
            await stub.PublishEvent(request, metadata=metadata, timeout=30)

    started = time.monotonic()
    await asyncio.gather(*(publisher() for _ in range(publishers)))
    return started


@dataclass
class Round:
    """One round of one side: events, seconds (deliveries: at the steady rate), CPU."""

    events: int
    seconds: float
    cpu_s: float = 0.0

    @property
    def cpu_per_event_ms(self) -> float:
        return self.cpu_s / self.events * 1e3


@dataclass(frozen=True)
class DeliveriesVsPublish:
    """CPU per published event ÷ CPU per delivered event, from `repeats` rounds of `events`
    events each way."""

    name: str
    events: int = 1000
    publishers: int = 64
    repeats: int = 11
    timeout_s: float = 60.0
    direction: Direction = Direction.HIGHER
    needs_stack: bool = True

    @property
    def ratio(self) -> str:
        return (
            "stack CPU per event published to a tenant without endpoints ÷ per event published"
            f" and delivered to one endpoint, {self.events} events a round, {self.publishers}"
            f" PublishEvent calls in flight, median of {self.repeats} rounds"
        )

    def measure(self, context: Context) -> Measurement:
        stack = context.stack()
        return asyncio.run(
            self._measure(
                stack.gateway_url,
                stack.addr("webhook"),
                stack.env["INTERNAL_TOKEN"],
                context.work_factor,
            )
        )

    async def _all_in(self, receiver: Receiver, events: int) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), self.timeout_s)
        if not receiver.all_in.is_set():
            raise DeliveriesMissing(
                f"{self.name}: {len(receiver.pending)} of {events} events not delivered within"
                f" {self.timeout_s:g} s"
            )

    async def _measure(self, gateway_url: str, addr: str, token: str, work: int) -> Measurement:
        receiver = Receiver()
        server = await asyncio.start_server(receiver.serve, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        with httpx.Client(base_url=gateway_url, timeout=30, trust_env=False) as gateway:
            silent = await asyncio.to_thread(register, gateway, None)
            delivered = await asyncio.to_thread(register, gateway, f"http://127.0.0.1:{port}/perf")
        rounds: list[tuple[Round, Round]] = []
        async with server, grpc.aio.insecure_channel(addr) as channel:
            stub = pb_grpc.WebhookServiceStub(channel)
            try:
                # The first round, of `publishers` events, warms up the channel, the worker's
                # connections to the receiver and the caches; it is not counted.
                for count in [self.publishers] + [self.events] * self.repeats:
                    cpu_before = stack_cpu_s()
                    started = await publish(stub, token, events(silent, count), self.publishers)
                    published = Round(count, time.monotonic() - started)
                    await asyncio.to_thread(settle)
                    published.cpu_s = stack_cpu_s() - cpu_before
                    # A planted regression: each counted event is `work` events delivered.
                    batch = events(delivered, count * work)
                    receiver.expect([e.event_id for e in batch])
                    cpu_before = stack_cpu_s()
                    await publish(stub, token, batch, self.publishers)
                    await self._all_in(receiver, len(batch))
                    # Result writes are batched after the last arrival: they count too.
                    await asyncio.to_thread(settle)
                    delivered_round = Round(count, len(batch) / receiver.steady_rate())
                    delivered_round.cpu_s = stack_cpu_s() - cpu_before
                    rounds.append((published, delivered_round))
            finally:
                # The worker keeps its connections open: close them before the server.
                await receiver.close()
        rounds = rounds[1:]
        return Measurement.median_of(
            tuple(p.cpu_per_event_ms / d.cpu_per_event_ms for p, d in rounds),
            {
                "publish_cpu_ms": statistics.median(p.cpu_per_event_ms for p, _ in rounds),
                "delivery_cpu_ms": statistics.median(d.cpu_per_event_ms for _, d in rounds),
                "publishes_per_s": statistics.median(p.events / p.seconds for p, _ in rounds),
                "deliveries_per_s": statistics.median(d.events / d.seconds for _, d in rounds),
            },
        )
