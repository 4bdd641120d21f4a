"""Throughput and pool wait against DB_POOL_MAX: `python -m loadtest pool`.

One private devstack (as `rest` does); its lattice service is restarted with each
`--sizes` value of DB_POOL_MAX (DB_POOL_MIN the same, so the pool is full from the start and
no connect falls inside the measurement). At each size the same fixed load runs: `--concurrency`
gRPC calls in flight straight to the lattice service (loadtest/grpc_direct.py's client),
`--duration` seconds of GetLattice, then as long of ListLattices with 100 lattices a page (a
read that holds its connection longer). The service's own metrics are read before and after
each run: `catalytic_db_pool_wait_seconds` (the time a request waited for a connection: its
mean, and its p95 as the upper bound of the histogram bucket it falls in) and
`catalytic_db_pool_timeouts_total` (docs/monitoring/metrics.md).

The lattice service is one process with one event loop: connections beyond what its loop can
keep busy only wait in the pool themselves. The table shows where more stops helping.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from catalytic.lattice.v1 import lattice_service_pb2 as lattice_pb
from prometheus_client.parser import text_string_to_metric_families

from loadtest import rest
from loadtest.grpc_direct import STACK_ENV, Call, Fixture, drive_grpc, prepare
from loadtest.report import Result
from loadtest.stack import private_stack

WAIT = "catalytic_db_pool_wait_seconds"
TIMEOUTS = "catalytic_db_pool_timeouts_total"


@dataclass(frozen=True)
class PoolFigures:
    """The lattice service's pool metrics at one moment (cumulative)."""

    count: float
    total_s: float
    buckets: Mapping[float, float]  # upper bound -> cumulative count
    timeouts: float

    def since(self, before: PoolFigures) -> PoolFigures:
        return PoolFigures(
            self.count - before.count,
            self.total_s - before.total_s,
            {le: n - before.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.timeouts - before.timeouts,
        )

    @property
    def mean_ms(self) -> float:
        return 1000 * self.total_s / self.count if self.count else 0.0

    def quantile_bound_ms(self, q: float) -> float:
        """The upper bound of the bucket holding the q-quantile (what a histogram can say)."""
        wanted = q * self.count
        for le in sorted(self.buckets):
            if self.buckets[le] >= wanted:
                return 1000 * le
        return float("inf")


def read_pool(metrics_url: str) -> PoolFigures:
    text = httpx.get(metrics_url, timeout=10).text
    count = total = timeouts = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service") != "lattice":
                continue
            if sample.name == f"{WAIT}_count":
                count = sample.value
            elif sample.name == f"{WAIT}_sum":
                total = sample.value
            elif sample.name == f"{WAIT}_bucket":
                buckets[float(sample.labels["le"])] = sample.value
            elif sample.name == TIMEOUTS:
                timeouts = sample.value
    return PoolFigures(count, total, buckets, timeouts)


async def measure(
    stack: Any, fx: Fixture, loads: list[Call], sizes: list[int], args: argparse.Namespace
) -> list[tuple[int, str, Result, PoolFigures]]:
    """Each load at each pool size, in one event loop (grpc.aio keeps to the loop it starts in)."""
    rows = []
    target = stack.addr("lattice")
    for size in sizes:
        # Blocking, between runs: nothing is in flight while the service restarts.
        stack.restart_service("lattice", {"DB_POOL_MAX": str(size), "DB_POOL_MIN": str(size)})
        for call in loads:

            def run(seconds: float, name: str, c: Call = call) -> Any:
                return drive_grpc(
                    name,
                    target,
                    c,
                    fx.token,
                    channels=args.channels,
                    concurrency=args.concurrency,
                    duration=seconds,
                )

            await run(1.0, "warmup")
            before = read_pool(stack.metrics_url("lattice"))
            result = await run(args.duration, f"pool{size} {call.rpc}")
            pool = read_pool(stack.metrics_url("lattice")).since(before)
            rows.append((size, call.rpc, result, pool))
            slug = f"pool{size}-{call.rpc}"
            (args.out / f"{slug}.json").write_text(json.dumps(result.ghz(), indent=2) + "\n")
            print(f"DB_POOL_MAX={size} {call.rpc}: {result.rps:.0f} calls/s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest pool", description=__doc__)
    parser.add_argument("--sizes", default="1,2,4,10,20", help="DB_POOL_MAX values")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per RPC and size")
    parser.add_argument("--out", type=Path, default=Path("loadtest-reports/pool"))
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    if not all(1 <= size <= 90 for size in sizes) or not 0 < args.duration <= 120:
        parser.error("bounded: sizes 1..90 (PostgreSQL allows 100 connections), 0..120 s")

    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    log = (lambda line: None) if os.environ.get("LOADTEST_QUIET") else print
    with private_stack(STACK_ENV, log) as stack:
        with httpx.Client(base_url=stack.gateway_url, timeout=120, trust_env=False) as client:
            fx = prepare(client)
            auth = {"authorization": f"Bearer {fx.token}"}
            for number in range(100):
                client.post(
                    "/v1/lattices",
                    headers=auth,
                    json={
                        "name": f"p{number}",
                        "dimensions": 1,
                        "size": 2,
                        "constant": {"value": 1},
                    },
                ).raise_for_status()
        loads = [
            Call("GetLattice", "lattice", lattice_pb.GetLatticeRequest(id=fx.lattice_id), ""),
            Call("ListLattices", "lattice", lattice_pb.ListLatticesRequest(page_size=100), ""),
        ]
        rows = asyncio.run(measure(stack, fx, loads, sizes, args))
    print(
        f"\nmachine: {rest.machine()}; load average before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"{args.concurrency} gRPC calls in flight straight to lattice, {args.duration:g} s each")
    print(
        f"{'DB_POOL_MAX':>11} {'RPC':<13} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'wait mean ms':>12} {'wait p95 ≤ ms':>13} {'timeouts':>8} {'errors':>6}"
    )
    for size, rpc, r, pool in rows:
        print(
            f"{size:>11} {rpc:<13} {r.rps:>8.0f} {rest.ms(r.percentile_ns(50)):>7} "
            f"{rest.ms(r.percentile_ns(99)):>7} {pool.mean_ms:>12.3f} "
            f"{pool.quantile_bound_ms(0.95):>13g} {pool.timeouts:>8.0f} {r.error_count:>6}"
        )
    return 1 if any(r.error_count for _, _, r, _ in rows) else 0
