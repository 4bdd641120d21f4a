"""Webhook delivery throughput on loopback: `python -m loadtest.webhooks [--events N]`.

Starts a throw-away local stack through devstack (its own PostgreSQL, Redis, auth, lattice,
webhook and gateway on free ports, the same processes as `make up`; the binaries come from
`make system-deps`) with the per-endpoint rate limit lifted (WEBHOOK_ENDPOINT_RATE_PER_S=0), a
higher WEBHOOK_WORKER_CONCURRENCY and DB_POOL_MAX. It registers one tenant and one endpoint
pointing at a stdlib HTTP receiver on 127.0.0.1 (tests/unit/webhook/receiver.py, answering
200 at once), publishes N events through gRPC PublishEvent with the stack's INTERNAL_TOKEN,
and waits (bounded by --timeout) until every event has arrived.

It reports deliveries per second (events / time from the first publish to the last first
arrival) and the p50/p99/max publish-to-delivery latency (from just before each PublishEvent
call to the event's first arrival at the receiver), with the machine it ran on. Exit status 1
when an event is missing or the rate is below --target (500/s).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import httpx
from catalytic.webhook.v1 import webhook_service_pb2 as pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2

from devstack import Stack, StackPorts
from gateway.render import DEFAULT_DESCRIPTOR
from tests.unit.webhook.receiver import running_receiver

PATH = "/bench"


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


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def register(gateway: httpx.Client, url: str) -> str:
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
    reply = gateway.post("/v1/webhooks", json={"url": url, "event_types": ["*"]}, headers=headers)
    reply.raise_for_status()
    return tenant_id


def run(events: int, concurrency: int, pool_max: int, timeout: float, target: float) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-loadtest-"))
    run_dir.chmod(0o755)  # the unprivileged PostgreSQL user must enter it when run as root
    stack = Stack(
        run_dir=run_dir,
        ports=StackPorts.free(),
        fast_postgres=True,
        descriptor=Path(os.environ.get("GATEWAY_DESCRIPTOR") or DEFAULT_DESCRIPTOR),
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
    stack.start()
    ok = False
    try:
        with (
            running_receiver() as receiver,
            httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as gateway,
            grpc.insecure_channel(stack.addr("webhook")) as channel,
        ):
            tenant_id = register(gateway, receiver.url(PATH))
            stub = pb_grpc.WebhookServiceStub(channel)
            metadata = (("x-internal-token", stack.env["INTERNAL_TOKEN"]),)
            published: dict[str, float] = {}
            in_flight = []
            started = time.monotonic()
            for sequence in range(events):
                event_id = f"evt_{uuid.uuid4().hex}"
                data = struct_pb2.Struct()
                data.update({"lattice_id": f"l-{sequence}", "sequence": sequence})
                published[event_id] = time.monotonic()
                in_flight.append(
                    stub.PublishEvent.future(
                        pb.PublishEventRequest(
                            event_id=event_id,
                            tenant_id=tenant_id,
                            event_type="lattice.created",
                            data=data,
                        ),
                        metadata=metadata,
                        timeout=30,
                    )
                )
                if len(in_flight) >= 64:  # a bounded number of publishes in flight
                    in_flight.pop(0).result()
            for future in in_flight:
                future.result()
            published_s = time.monotonic() - started

            deadline = started + timeout
            first: dict[str, float] = {}
            while True:
                for request in receiver.received(PATH):
                    event_id = request.headers.get("webhook-id", "")
                    if event_id in published and event_id not in first:
                        first[event_id] = request.at
                if len(first) == events or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            received = len(receiver.received(PATH))

        latencies = [first[key] - published[key] for key in first]
        elapsed = (max(first.values()) - started) if first else float("nan")
        rate = len(first) / elapsed if first else 0.0
        ok = len(first) == events and rate >= target
        rows = [
            ("machine", machine()),
            ("events published", f"{events} (in {published_s:.2f} s)"),
            ("delivered (distinct)", f"{len(first)} ({received} requests)"),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.webhooks", description=__doc__)
    parser.add_argument("--events", type=int, default=2000, help="events to publish (2000)")
    parser.add_argument(
        "--concurrency", type=int, default=128, help="WEBHOOK_WORKER_CONCURRENCY (128)"
    )
    parser.add_argument("--pool-max", type=int, default=0, help="DB_POOL_MAX (concurrency/2+8)")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait (90)")
    parser.add_argument("--target", type=float, default=500.0, help="deliveries/s (500)")
    args = parser.parse_args(argv)
    pool_max = args.pool_max or args.concurrency // 2 + 8
    return run(args.events, args.concurrency, pool_max, args.timeout, args.target)


if __name__ == "__main__":
    raise SystemExit(main())
