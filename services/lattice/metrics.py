"""Prometheus metrics of the lattice service; labels are small closed sets, never ids.

The per-RPC counts and latencies come from the shared MetricsInterceptor; these add what only
the lattice service knows: compute outcomes by device, compute time, the compute queue, the
field cache, GPU memory and the event outbox.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.errors import DomainError
from services.common.status import status_code_for
from services.lattice.engine.cpu_pool import PoolStats

OPERATIONS = Counter(
    "catalytic_lattice_operations_total",
    "Lattice computations by operation (fill, transform, path, analysis), algorithm (the"
    " transform op, the path algorithm that ran, the fill kind), device (cpu, gpu; none when"
    " nothing ran) and outcome (ok or the gRPC code, lower case).",
    ["op", "algorithm", "device", "outcome"],
)
COMPUTE_SECONDS = Histogram(
    "catalytic_lattice_compute_seconds",
    "Engine time of successful computations (the outcome's elapsed_ms: from a device taking the"
    " job to its result, field copies included, queue wait excluded), by operation.",
    ["op"],
    buckets=(
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        120,
    ),
)
CACHE_HITS = Counter(
    "catalytic_lattice_cache_hits_total", "Field reads answered from the in-process field cache."
)
CACHE_MISSES = Counter(
    "catalytic_lattice_cache_misses_total",
    "Field reads the in-process cache could not answer (the field came from PostgreSQL).",
)
CACHE_BYTES = Gauge("catalytic_lattice_cache_bytes", "Bytes of fields held by the field cache.")
OUTBOX_PUBLISHED = Counter(
    "catalytic_lattice_outbox_published_total",
    "Outbox events the webhook service accepted (PublishEvent succeeded).",
)
OUTBOX_FAILURES = Counter(
    "catalytic_lattice_outbox_publish_failures_total",
    "PublishEvent calls that failed after their retries, by gRPC code; the event stays in the"
    " outbox and is retried with backoff.",
    ["code"],
)


@dataclass
class Observation:
    """What an observed computation reports about itself before it ends."""

    algorithm: str
    device: str = "none"
    elapsed_ms: float = 0.0


def outcome_of(exc: BaseException) -> str:
    """`ok`-style outcome label of a failure: the gRPC code it maps to, lower case."""
    if isinstance(exc, DomainError):
        return str(status_code_for(exc).name).lower()
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal"


@asynccontextmanager
async def observed(op: str, algorithm: str) -> AsyncIterator[Observation]:
    """Counts the computation inside the block by outcome and times it when it succeeds."""
    observation = Observation(algorithm=algorithm)
    try:
        yield observation
    except BaseException as exc:
        OPERATIONS.labels(op, observation.algorithm, observation.device, outcome_of(exc)).inc()
        raise
    OPERATIONS.labels(op, observation.algorithm, observation.device, "ok").inc()
    COMPUTE_SECONDS.labels(op).observe(observation.elapsed_ms / 1000)


class ComputeGauges(Collector):
    """Queue depth and GPU memory, read from the live compute backends when scraped.

    One collector for the process, fed by every backend a server registers (tests run several
    servers in one process); GPU memory is exported only while some backend has a GPU.
    """

    def __init__(self) -> None:
        self._sources: dict[int, tuple[Callable[[], PoolStats], Callable[[], int | None]]] = {}
        self._lock = threading.Lock()

    def add(self, pool: Callable[[], PoolStats], gpu_bytes: Callable[[], int | None]) -> int:
        with self._lock:
            token = max(self._sources, default=0) + 1
            self._sources[token] = (pool, gpu_bytes)
        return token

    def remove(self, token: int) -> None:
        with self._lock:
            self._sources.pop(token, None)

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sources = list(self._sources.values())
        pools = [stats() for stats, _ in sources]
        yield GaugeMetricFamily(
            "catalytic_lattice_pool_queue_depth",
            "Compute jobs waiting for a CPU worker (each tenant within its share of"
            " COMPUTE_MAX_QUEUE).",
            value=sum(pool.waiting for pool in pools),
        )
        yield GaugeMetricFamily(
            "catalytic_lattice_pool_tenants",
            "Tenants with compute jobs running or waiting in the CPU pool (they split the queue).",
            value=sum(pool.tenants for pool in pools),
        )
        refusals = CounterMetricFamily(
            "catalytic_lattice_pool_refusals",
            "Compute jobs refused because their tenant's queue was full, by reason: share (its"
            " fair share of the queue) or plan (its plan's own cap on waiting jobs).",
            labels=["reason"],
        )
        for reason in ("share", "plan"):
            refusals.add_metric([reason], sum(pool.refusals.get(reason, 0) for pool in pools))
        yield refusals
        gpu = [used for _, gpu_bytes in sources if (used := gpu_bytes()) is not None]
        if gpu:
            yield GaugeMetricFamily(
                "catalytic_lattice_gpu_memory_bytes",
                "Bytes of GPU memory held by live arrays of the compute backend.",
                value=sum(gpu),
            )


COMPUTE_GAUGES = ComputeGauges()
REGISTRY.register(COMPUTE_GAUGES)
