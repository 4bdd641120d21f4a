"""Webhook delivery throughput on loopback: `python -m loadtest webhooks [--events N]`.

Starts a throw-away local stack through devstack (its own PostgreSQL, Redis, auth, lattice,
webhook and gateway on free ports, the same processes as `make up`; the binaries come from
`make system-deps`) with the per-endpoint rate limit lifted (WEBHOOK_ENDPOINT_RATE_PER_S=0), a
higher WEBHOOK_WORKER_CONCURRENCY and DB_POOL_MAX. It registers one tenant and one endpoint
pointing at an HTTP receiver on 127.0.0.1 in this process (asyncio, HTTP/1.1 keep-alive,
answering 200 as soon as a request's body has arrived), publishes N events through gRPC
PublishEvent with the stack's INTERNAL_TOKEN, `--publishers` calls in flight at a time (as
many publishing services would), and waits (bounded by --timeout) until every event has
arrived.

It reports deliveries per second (events / time from the first publish to the last first
arrival) and the p50/p99/max publish-to-delivery latency (from just before each PublishEvent
call to the event's first arrival at the receiver), with the machine it ran on and the CPU time
each process used. Exit status 1 when an event is missing or the rate is below --target
(500/s).

The publisher and the receiver share the machine with the stack: on the 2-core reference
machine their CPU time is taken from it, so they are kept lean (one asyncio loop, no thread per
connection); the report shows what they used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from devstack import Stack, StackPorts
from gateway.render import DEFAULT_DESCRIPTOR
from loadtest.stack import LOAD_GATEWAY_RATE_LIMIT_PER_S

PATH = "/bench"
_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}"
    )


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children (Linux /proc; else 0)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS


def postgres_cpu_seconds(stack: Stack) -> float:
    """CPU time of the stack's PostgreSQL backends (children of its postmaster), Linux only."""
    postgres = getattr(stack, "postgres", None)
    pid_file = Path(postgres.data_dir, "postmaster.pid") if postgres else None
    if pid_file is None or not pid_file.exists():
        return 0.0
    try:
        master = int(pid_file.read_text().split()[0])
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except (OSError, ValueError, IndexError):
        return 0.0
    return cpu_seconds(master) + sum(cpu_seconds(int(child)) for child in children)


@dataclass
class Arrivals:
    """First arrival (time.monotonic()) of each webhook-id, and the request count."""

    first: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    all_in: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0
    # Open connections and their handlers, closed and awaited at the end.
    connections: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = field(default_factory=dict)


async def answer_each(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    on_request: Callable[[str], None],
) -> None:
    """One keep-alive connection of a webhook receiver: read each request whole, answer 200,
    and call `on_request` with its `webhook-id` ("" when it has none), until the peer closes."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, event_id = 0, ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    event_id = value.strip().decode("ascii")
            await reader.readexactly(length)
            writer.write(_ANSWER)
            on_request(event_id)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def receive(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, arrivals: Arrivals
) -> None:
    """One keep-alive connection: each request noted in `arrivals`, answered 200."""
    arrivals.connections[writer] = asyncio.current_task()

    def note(event_id: str) -> None:
        arrivals.requests += 1
        if event_id and event_id not in arrivals.first:
            arrivals.first[event_id] = time.monotonic()
            if len(arrivals.first) >= arrivals.expected:
                arrivals.all_in.set()

    await answer_each(reader, writer, note)


def register(gateway: httpx.Client, url: str | None) -> str:
    """A new tenant, with an endpoint at `url` subscribed to everything (none without)."""
    unique = uuid.uuid4().hex[:12]
    email, password = f"bench-{unique}@example.com", f"bench passphrase {unique} staple"
    reply = gateway.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "tenant_name": f"bench-{unique}"},
    )
    reply.raise_for_status()
    tenant_id: str = reply.json()["tenant"]["id"]
    reply = gateway.post("/v1/auth/login", json={"email": email, "password": password})
    reply.raise_for_status()
    headers = {"authorization": f"Bearer {reply.json()['access_token']}"}
    if url is not None:
        reply = gateway.post(
            "/v1/webhooks", json={"url": url, "event_types": ["*"]}, headers=headers
        )
        reply.raise_for_status()
    return tenant_id


def event_requests(tenant_id: str, events: int) -> list[pb.PublishEventRequest]:
    requests = []
    for sequence in range(events):
        data = struct_pb2.Struct()
        data.update({"lattice_id": f"l-{sequence}", "sequence": sequence})
        requests.append(
            pb.PublishEventRequest(
                event_id=f"evt_{uuid.uuid4().hex}",
                tenant_id=tenant_id,
                event_type="lattice.created",
                data=data,
            )
        )
    return requests


async def publish(
    stack: Stack,
    channel: grpc.aio.Channel,
    requests: list[pb.PublishEventRequest],
    publishers: int,
    published: dict[str, float],
) -> None:
    """PublishEvent for each request, `publishers` calls in flight; when each began."""
    metadata = (("x-internal-token", stack.env["INTERNAL_TOKEN"]),)
    stub = pb_grpc.WebhookServiceStub(channel)
    queue: Iterator[pb.PublishEventRequest] = iter(requests)

    async def publisher() -> None:
        for request in queue:
            published[request.event_id] = time.monotonic()
            await stub.PublishEvent(request, metadata=metadata, timeout=30)

    await asyncio.gather(*(publisher() for _ in range(publishers)))


@dataclass
class Run:
    """What one run measured."""

    published: dict[str, float]
    arrivals: Arrivals
    started: float
    publish_s: float


async def drive(stack: Stack, gateway_url: str, events: int, publishers: int, wait_s: float) -> Run:
    """Receiver up, endpoint registered, N events published, arrivals awaited (`wait_s` at
    most from the first publication)."""
    arrivals = Arrivals(expected=events)
    server = await asyncio.start_server(
        lambda reader, writer: receive(reader, writer, arrivals), "127.0.0.1", 0, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    with httpx.Client(base_url=gateway_url, timeout=10, trust_env=False) as gateway:
        tenant_id = await asyncio.to_thread(register, gateway, f"http://127.0.0.1:{port}{PATH}")
    published: dict[str, float] = {}
    async with server, grpc.aio.insecure_channel(stack.addr("webhook")) as channel:
        started = time.monotonic()
        await publish(stack, channel, event_requests(tenant_id, events), publishers, published)
        publish_s = time.monotonic() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrivals.all_in.wait(), started + wait_s - time.monotonic())
        for writer in arrivals.connections:
            writer.close()
        await asyncio.gather(
            *(task for task in arrivals.connections.values() if task), return_exceptions=True
        )
    return Run(published, arrivals, started, publish_s)


def make_stack(concurrency: int, pool_max: int) -> tuple[Stack, Path]:
    """A throw-away stack for webhook load (not started) and its run directory."""
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-loadtest-"))
    run_dir.chmod(0o755)  # the unprivileged PostgreSQL user must enter it when run as root
    stack = Stack(
        run_dir=run_dir,
        ports=StackPorts.free(),
        fast_postgres=True,
        descriptor=Path(os.environ.get("GATEWAY_DESCRIPTOR") or DEFAULT_DESCRIPTOR),
        gateway_rate_limit_per_s=LOAD_GATEWAY_RATE_LIMIT_PER_S,
        extra_env={
            "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
            "WEBHOOK_ENDPOINT_RATE_PER_S": "0",
            "WEBHOOK_WORKER_CONCURRENCY": str(concurrency),
            "DB_POOL_MAX": str(pool_max),
            "RATE_LIMIT_MULTIPLIER": "100",
            "LOG_LEVEL": "WARNING",
        },
        log=lambda line: print(f"[stack] {line}", file=sys.stderr, flush=True),
    )
    return stack, run_dir


def run(
    events: int, concurrency: int, pool_max: int, publishers: int, timeout: float, target: float
) -> int:
    stack, run_dir = make_stack(concurrency, pool_max)
    stack.start()
    ok = False
    try:
        load_before = load_average()
        webhook_pid = stack.services.children["webhook"].pid or 0
        cpu_before = (
            cpu_seconds(webhook_pid),
            postgres_cpu_seconds(stack),
            cpu_seconds(os.getpid()),
        )
        result = asyncio.run(drive(stack, stack.gateway_url, events, publishers, timeout))
        cpu_used = [
            after - before
            for after, before in zip(
                (cpu_seconds(webhook_pid), postgres_cpu_seconds(stack), cpu_seconds(os.getpid())),
                cpu_before,
                strict=True,
            )
        ]
        first = result.arrivals.first
        published = result.published
        latencies = [first[key] - published[key] for key in first if key in published]
        delivered = sum(1 for key in first if key in published)
        elapsed = (max(first.values()) - result.started) if first else float("nan")
        rate = delivered / elapsed if first else 0.0
        ok = delivered == events and rate >= target
        per_event = " / ".join(f"{seconds / events * 1000:.2f}" for seconds in cpu_used)
        rows = [
            ("machine", machine()),
            ("load average before", f"{load_before} (1, 5, 15 min)"),
            ("events published", f"{events} (in {result.publish_s:.2f} s, {publishers} in flight)"),
            ("delivered (distinct)", f"{delivered} ({result.arrivals.requests} requests)"),
            ("worker concurrency / DB_POOL_MAX", f"{concurrency} / {pool_max}"),
            ("first publish -> last delivery", f"{elapsed:.2f} s"),
            ("deliveries/s", f"{rate:.0f} (target >= {target:.0f}: {'PASS' if ok else 'FAIL'})"),
        ]
        if latencies:
            rows += [
                ("latency p50", f"{percentile(latencies, 0.50) * 1000:.0f} ms"),
                ("latency p99", f"{percentile(latencies, 0.99) * 1000:.0f} ms"),
                ("latency max", f"{max(latencies) * 1000:.0f} ms"),
            ]
        rows.append(("CPU ms/event webhook / postgres / driver", per_event))
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
    finally:
        stack.stop()
        if ok:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"[stack] logs kept in {run_dir}/logs", file=sys.stderr)
    return 0 if ok else 1


# The event-cost target: the webhook service's CPU for one event before any HTTP send.
TARGET_SUBSCRIBED_MS = 1.0


async def measure_event_cost(stack: Stack, events: int, publishers: int) -> dict[str, float]:
    """Webhook CPU ms per PublishEvent: to a tenant with an endpoint (queued, never sent: the
    stack has no worker) and to one without."""
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as gateway:
        # Port 9 (discard): never contacted, the worker is off.
        subscribed = await asyncio.to_thread(register, gateway, "http://127.0.0.1:9/hook")
        unsubscribed = await asyncio.to_thread(register, gateway, None)
    pid = stack.services.children["webhook"].pid or 0
    costs: dict[str, float] = {}
    async with grpc.aio.insecure_channel(stack.addr("webhook")) as channel:
        # A warm-up of each kind: connections, prepared statements, the subscription record.
        for tenant in (subscribed, unsubscribed):
            await publish(stack, channel, event_requests(tenant, publishers), publishers, {})
        for name, tenant in (("subscribed", subscribed), ("unsubscribed", unsubscribed)):
            before = cpu_seconds(pid)
            await publish(stack, channel, event_requests(tenant, events), publishers, {})
            costs[name] = (cpu_seconds(pid) - before) / events * 1000
    return costs


def event_cost(events: int, publishers: int) -> int:
    """`--event-cost`: prints the webhook service's CPU per event before any send."""
    stack, run_dir = make_stack(0, publishers // 2 + 8)
    stack.start()
    try:
        print(f"machine: {machine()}; load average before {load_average()} (1, 5, 15 min)")
        costs = asyncio.run(measure_event_cost(stack, events, publishers))
    finally:
        stack.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    ok = costs["subscribed"] <= TARGET_SUBSCRIBED_MS
    print(f"{events} PublishEvent calls of each kind, {publishers} in flight, no delivery worker")
    print(
        f"webhook CPU ms per event with a subscriber, before the send: {costs['subscribed']:.3f}"
        f" (target <= {TARGET_SUBSCRIBED_MS:g}: {'PASS' if ok else 'FAIL'})"
    )
    print(
        f"webhook CPU ms per event that reaches it with no subscriber: {costs['unsubscribed']:.3f}"
        " (the lattice service sends none once the webhook service has recorded the tenant's"
        " subscriptions: ADR 69; `loadtest rest` judges that)"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest webhooks", description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="events to publish (5000)")
    parser.add_argument(
        "--concurrency", type=int, default=128, help="WEBHOOK_WORKER_CONCURRENCY (128)"
    )
    parser.add_argument("--pool-max", type=int, default=0, help="DB_POOL_MAX (concurrency/2+8)")
    parser.add_argument(
        "--publishers", type=int, default=64, help="PublishEvent calls in flight (64)"
    )
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait (90)")
    parser.add_argument("--target", type=float, default=500.0, help="deliveries/s (500)")
    parser.add_argument(
        "--event-cost",
        action="store_true",
        help="instead: the webhook service's CPU per event before any send (no worker)",
    )
    args = parser.parse_args(argv)
    if args.event_cost:
        return event_cost(args.events, args.publishers)
    pool_max = args.pool_max or args.concurrency // 2 + 8
    return run(args.events, args.concurrency, pool_max, args.publishers, args.timeout, args.target)


if __name__ == "__main__":
    raise SystemExit(main())
