"""The main RPCs straight to each service's gRPC port, beside the same calls through Envoy.

`python -m loadtest grpc` starts a private devstack (as `rest` does), registers a tenant, logs in
and creates what the calls need (a 10³ lattice, one webhook endpoint), then drives each RPC for
`--duration` seconds three ways, one after the other:

- `grpc`: a `grpc.aio` client on the service's own port (`auth` 50051, `lattice` 50052,
  `webhook` 50053 in `make up`), `authorization: Bearer <access token>` metadata, as an internal
  client with a tenant's credentials calls it;
- `envoy-grpc`: the same gRPC client through the gateway's port (Envoy proxies native gRPC);
- `rest`: the REST route through the gateway, with loadtest/rest.py's HTTP/1.1 client.

`--concurrency` calls are in flight at once (closed loop: each worker sends the next call when
its answer is in), spread over `--channels` HTTP/2 connections. Each run writes a ghz-format
JSON report (`<way>-<RPC>.json`; gRPC status names in `statusCodeDistribution`, HTTP codes for
`rest`), and a table compares the three rates per RPC. The client shares the machine's cores
with the stack, as in `rest`: the figures are what this machine serves to itself.

Internal-only RPCs (`PublishEvent`) take `x-internal-token` instead of a tenant token and are
not routed by the gateway; `python -m loadtest webhooks` drives that one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from catalytic.auth.v1 import auth_service_pb2 as auth_pb
from catalytic.auth.v1 import auth_service_pb2_grpc as auth_grpc
from catalytic.lattice.v1 import lattice_service_pb2 as lattice_pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as lattice_grpc
from catalytic.webhook.v1 import webhook_service_pb2 as webhook_pb
from catalytic.webhook.v1 import webhook_service_pb2_grpc as webhook_grpc

from loadtest import cpu, pgstats, rest
from loadtest.report import Result
from loadtest.stack import private_stack

STACK_ENV = {**rest.STACK_ENV, "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8"}
WAYS = ("grpc", "envoy-grpc", "rest")
STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "auth": auth_grpc.AuthServiceStub,
    "lattice": lattice_grpc.LatticeServiceStub,
    "webhook": webhook_grpc.WebhookServiceStub,
}


@dataclass(frozen=True)
class Call:
    """One RPC: where it lives, its request, and its REST route (path; body for a POST)."""

    rpc: str
    service: str
    request: Any
    rest_path: str
    rest_body: bytes | None = None
    authenticated: bool = True
    # Calls in flight, when fewer than --concurrency suit it (Login hashes a password).
    max_concurrency: int = 0


@dataclass(frozen=True)
class Fixture:
    """What the calls act on: the tenant's credentials and resources."""

    email: str
    password: str
    token: str
    lattice_id: str


def calls(fx: Fixture) -> list[Call]:
    """The RPCs driven, in order; `--only` picks some by name."""
    path_q = "start=0&start=0&start=0&end=9&end=9&end=9"
    login = {"email": fx.email, "password": fx.password}
    return [
        Call("GetJwks", "auth", auth_pb.GetJwksRequest(), "/.well-known/jwks.json", None, False),
        Call("GetCurrentUser", "auth", auth_pb.GetCurrentUserRequest(), "/v1/users/me"),
        Call(
            "GetLattice",
            "lattice",
            lattice_pb.GetLatticeRequest(id=fx.lattice_id),
            f"/v1/lattices/{fx.lattice_id}",
        ),
        Call(
            "ListLattices",
            "lattice",
            lattice_pb.ListLatticesRequest(page_size=20),
            "/v1/lattices?page_size=20",
        ),
        Call(
            "FindPath",
            "lattice",
            lattice_pb.FindPathRequest(id=fx.lattice_id, start=[0, 0, 0], end=[9, 9, 9]),
            f"/v1/lattices/{fx.lattice_id}/path?{path_q}",
            # The compute queue refuses a tenant past a few jobs waiting (ADR 42): a closed loop
            # of 64 would measure refusals.
            max_concurrency=4,
        ),
        Call(
            "ListWebhooks",
            "webhook",
            webhook_pb.ListWebhooksRequest(page_size=20),
            "/v1/webhooks?page_size=20",
        ),
        Call(
            "Login",
            "auth",
            auth_pb.LoginRequest(**login),
            "/v1/auth/login",
            json.dumps(login).encode(),
            authenticated=False,
            max_concurrency=4,
        ),
    ]


async def drive_grpc(
    name: str,
    target: str,
    call: Call,
    token: str,
    *,
    channels: int,
    concurrency: int,
    duration: float,
) -> Result:
    """`concurrency` workers over `channels` channels, calls back to back until the deadline."""
    opened = [grpc.aio.insecure_channel(target) for _ in range(channels)]
    try:
        await asyncio.gather(*(channel.channel_ready() for channel in opened))
        methods = [getattr(STUBS[call.service](channel), call.rpc) for channel in opened]
        metadata = (("authorization", f"Bearer {token}"),) if call.authenticated else ()
        result = Result(name, time.time(), ok="OK")
        deadline = time.perf_counter() + duration

        async def worker(method: Any) -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter_ns()
                try:
                    await method(call.request, metadata=metadata, timeout=30)
                    code = "OK"
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    if not result.first_failure:
                        result.first_failure = f"{code} {exc.details()}"
                result.latencies_ns.append(time.perf_counter_ns() - t0)
                result.statuses[code] += 1

        t_start = time.perf_counter()
        await asyncio.gather(*(worker(methods[i % channels]) for i in range(concurrency)))
        result.total_s = time.perf_counter() - t_start
        return result
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))


def prepare(client: httpx.Client) -> Fixture:
    unique = uuid.uuid4().hex[:12]
    email, password = f"grpc-{unique}@example.com", f"grpc passphrase {unique} staple"
    reply = client.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "tenant_name": f"grpc-{unique}"},
    )
    reply.raise_for_status()
    reply = client.post("/v1/auth/login", json={"email": email, "password": password})
    reply.raise_for_status()
    token = reply.json()["access_token"]
    lattice_id = rest.create_lattice(client, token, 10, 0.0)
    auth = {"authorization": f"Bearer {token}"}
    for number in range(3):
        client.post(
            "/v1/lattices",
            headers=auth,
            json={"name": f"more-{number}", "dimensions": 2, "size": 4, "constant": {"value": 1}},
        ).raise_for_status()
    client.post(
        "/v1/webhooks",
        headers=auth,
        # Subscribed to test events only: the run's lattice events are not delivered anywhere.
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["webhook.test"]},
    ).raise_for_status()
    return Fixture(email, password, token, lattice_id)


def runner(
    way: str, call: Call, stack: Any, fx: Fixture, args: argparse.Namespace
) -> Callable[[str, float], Awaitable[Result]]:
    """A function (name, seconds) -> the run of `call` the `way` says."""
    concurrency = min(args.concurrency, call.max_concurrency or args.concurrency)
    token = fx.token if call.authenticated else ""
    if way == "rest":
        return lambda name, seconds: rest.drive(
            name,
            stack.gateway_url,
            call.rest_path,
            token or None,
            concurrency,
            seconds,
            body=call.rest_body,
        )
    target = (
        stack.addr(call.service) if way == "grpc" else stack.gateway_url.removeprefix("http://")
    )
    return lambda name, seconds: drive_grpc(
        name,
        target,
        call,
        token,
        channels=min(args.channels, concurrency),
        concurrency=concurrency,
        duration=seconds,
    )


async def run_all(
    args: argparse.Namespace,
    stack: Any,
    fx: Fixture,
    cpu_rows: dict[str, dict[str, float]],
) -> list[Result]:
    results: list[Result] = []
    for call in calls(fx):
        if args.only and call.rpc not in args.only:
            continue
        for way in WAYS:
            name = f"{way} {call.rpc}"
            run = runner(way, call, stack, fx, args)
            await run(f"warmup {name}", min(1.0, args.duration))
            results.append(await rest.measured(cpu_rows, run(name, args.duration)))
    return results


def print_table(results: Sequence[Result]) -> None:
    by_rpc: dict[str, dict[str, Result]] = {}
    for r in results:
        way, rpc = r.name.split(" ", 1)
        by_rpc.setdefault(rpc, {})[way] = r
    head = f"{'RPC':<16}"
    for way in WAYS:
        head += f" | {way + ' rps':>15} {'p50 ms':>7} {'p99 ms':>7}"
    print(head + f" | {'errors':>6} | {'rest/grpc':>9}")
    for rpc, ways in by_rpc.items():
        line = f"{rpc:<16}"
        errors = 0
        for way in WAYS:
            r = ways.get(way)
            if r is None:
                line += f" | {'-':>15} {'-':>7} {'-':>7}"
                continue
            errors += r.error_count
            line += (
                f" | {r.rps:>15.0f} {rest.ms(r.percentile_ns(50)):>7} "
                f"{rest.ms(r.percentile_ns(99)):>7}"
            )
        grpc_r, rest_r = ways.get("grpc"), ways.get("rest")
        ratio = f"{rest_r.rps / grpc_r.rps:.0%}" if grpc_r and rest_r and grpc_r.rps else "-"
        print(line + f" | {errors:>6} | {ratio:>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest grpc", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--channels", type=int, default=4, help="HTTP/2 connections")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per RPC and way")
    parser.add_argument("--only", nargs="*", default=[], help="RPC names, e.g. GetLattice")
    parser.add_argument("--out", type=Path, default=Path("loadtest-reports/grpc"))
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="load pg_stat_statements and print the query times of the whole run",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 1024 or not 0 < args.duration <= 300:
        parser.error("bounded: 1..1024 calls in flight, 0..300 s")
    if not 1 <= args.channels <= 64:
        parser.error("bounded: 1..64 channels")

    args.out.mkdir(parents=True, exist_ok=True)
    statements: list[pgstats.Statement] = []
    log = (lambda line: None) if os.environ.get("LOADTEST_QUIET") else print
    settings = pgstats.SETTINGS if args.pg_stats else None
    # The REST and Envoy-gRPC ways go through the gateway: its backstop is lifted (stack.py).
    with private_stack(STACK_ENV, log, postgres_settings=settings) as stack:
        with httpx.Client(base_url=stack.gateway_url, timeout=120, trust_env=False) as client:
            fx = prepare(client)
        if args.pg_stats:
            pgstats.enable(stack.database_admin_url)
            pgstats.reset(stack.database_admin_url)
        cpu_rows: dict[str, dict[str, float]] = {}
        results = asyncio.run(run_all(args, stack, fx, cpu_rows))
        if args.pg_stats:
            statements = pgstats.read(stack.database_admin_url)
    for r in results:
        slug = r.name.replace(" ", "-")
        (args.out / f"{slug}.json").write_text(json.dumps(r.ghz(), indent=2) + "\n")
    print(f"\nmachine: {rest.machine()}; load average {os.getloadavg()[0]:.2f} (1 min)")
    print(
        f"{args.concurrency} calls in flight ({args.channels} channels for gRPC, one HTTP/1.1 "
        f"connection per call for REST), {args.duration:g} s per RPC and way"
    )
    print_table(results)
    cpu_lines = cpu.format_table(cpu_rows)
    if cpu_lines:
        print()
        print("\n".join(cpu_lines))
    for r in results:
        if r.first_failure:
            print(f"{r.name}: first failure: {r.first_failure}")
    if statements:
        print("\nPostgreSQL statements of the services (pg_stat_statements, the whole run):")
        print("\n".join(pgstats.format_table(statements)))
        print(
            f"all {sum(s.calls for s in statements)} statement calls: p95 <="
            f" {pgstats.overall_p95_bound_ms(statements):.3f} ms (bound, pgstats.py)"
        )
    print(f"\nreports: {args.out}/")
    return 1 if any(r.error_count for r in results) else 0
