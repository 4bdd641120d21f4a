"""Prometheus metrics of the lattice service; labels are small closed sets, never ids.

The per-RPC counts and latencies come from the shared MetricsInterceptor; these add what only
the lattice service knows: compute outcomes by device, compute time, the compute pool, the
field cache, the GPU and the event outbox. Gauges of live state are read when scraped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.common.errors import DomainError
from services.common.live_metrics import LiveCollector
from services.common.status import status_code_for
from services.lattice.engine.backends import GPU_FAILURE_REASONS
from services.lattice.engine.compute import RouterStats

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
    " job to its result, field copies included, queue wait excluded), by operation and the"
    " device that ran it (cpu, gpu).",
    ["op", "device"],
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


@dataclass(frozen=True)
class Backlog:
    """The outbox's unpublished events, all tenants together (OutboxStore.backlog)."""

    pending: int
    oldest_age_s: float  # age of the oldest unpublished event; 0 when there is none


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
    COMPUTE_SECONDS.labels(op, observation.device).observe(observation.elapsed_ms / 1000)


class ComputeGauges(LiveCollector[RouterStats]):
    """The CPU pool, the GPU and its fallbacks, read from the live compute routers when scraped.

    One collector for the process, fed by every router a server registers (tests run several
    servers in one process); GPU memory is exported only while some router has a GPU, the GPU
    counters always (0 without one).
    """

    def metrics(self, snapshots: list[RouterStats]) -> Iterable[Metric]:
        pools = [snapshot.pool for snapshot in snapshots]
        yield GaugeMetricFamily(
            "catalytic_lattice_pool_queue_depth",
            "Compute jobs waiting for a CPU worker (each tenant within its share of"
            " COMPUTE_MAX_QUEUE).",
            value=sum(pool.waiting for pool in pools),
        )
        yield GaugeMetricFamily(
            "catalytic_lattice_pool_max_queue",
            "Compute jobs that may wait for a CPU worker at most (COMPUTE_MAX_QUEUE).",
            value=sum(pool.max_queue for pool in pools),
        )
        yield GaugeMetricFamily(
            "catalytic_lattice_pool_workers",
            "Live CPU worker processes (a killed or crashed one is being replaced otherwise).",
            value=sum(pool.workers for pool in pools),
        )
        yield GaugeMetricFamily(
            "catalytic_lattice_pool_busy_workers",
            "CPU workers running a job right now.",
            value=sum(pool.busy for pool in pools),
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
        fallbacks = CounterMetricFamily(
            "catalytic_lattice_gpu_fallbacks",
            "GPU runs retried on the CPU, by reason: declined, unsupported, insufficient_memory"
            " (routine: the CPU takes such work), out_of_memory or kernel_error (faults).",
            labels=["reason"],
        )
        for reason in GPU_FAILURE_REASONS:
            fallbacks.add_metric(
                [reason], sum(snapshot.gpu_fallbacks.get(reason, 0) for snapshot in snapshots)
            )
        yield fallbacks
        yield CounterMetricFamily(
            "catalytic_lattice_gpu_oom",
            "GPU runs that ran out of device memory (each then retried on the CPU).",
            value=sum(snapshot.gpu_fallbacks.get("out_of_memory", 0) for snapshot in snapshots),
        )
        with_gpu = [snapshot for snapshot in snapshots if snapshot.gpu_memory_bytes is not None]
        if with_gpu:
            yield GaugeMetricFamily(
                "catalytic_lattice_gpu_memory_bytes",
                "Bytes of GPU memory held by live arrays of the compute backend.",
                value=sum(snapshot.gpu_memory_bytes or 0 for snapshot in with_gpu),
            )
            yield GaugeMetricFamily(
                "catalytic_lattice_gpu_memory_total_bytes",
                "Bytes of memory of the GPU (the backend's pool is capped lower:"
                " GPU_MEMORY_LIMIT_BYTES, by default 80% of it).",
                value=sum(snapshot.gpu_memory_total_bytes or 0 for snapshot in with_gpu),
            )


class OutboxGauges(LiveCollector[Backlog | None]):
    """The outbox backlog as the relays last measured it (OutboxRelay.backlog). Every replica
    measures the same shared table: aggregate replicas with max, not sum."""

    def metrics(self, snapshots: list[Backlog | None]) -> Iterable[Metric]:
        measured = [backlog for backlog in snapshots if backlog is not None]
        pending = GaugeMetricFamily(
            "catalytic_lattice_outbox_pending",
            "Outbox events not yet accepted by the webhook service, all tenants together.",
        )
        oldest = GaugeMetricFamily(
            "catalytic_lattice_outbox_oldest_age_seconds",
            "Age of the oldest event not yet accepted by the webhook service (0 when none);"
            " measured every few seconds, aged in between.",
        )
        if measured:
            pending.add_metric([], max(backlog.pending for backlog in measured))
            oldest.add_metric([], max(backlog.oldest_age_s for backlog in measured))
        yield pending
        yield oldest


COMPUTE_GAUGES = ComputeGauges()
REGISTRY.register(COMPUTE_GAUGES)
OUTBOX_GAUGES = OutboxGauges()
REGISTRY.register(OUTBOX_GAUGES)
