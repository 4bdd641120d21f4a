"""Compute backends behind one interface, and the Router that picks CPU or GPU for each call.

The lattice service calls a `ComputeBackend`; in production that is a `Router` over the CPU
worker pool (cpu_pool.py) and, where a device is present, the CuPy backend (gpu.py).

Routing (`Router.choose`), in order:

1. COMPUTE_DEVICE=cpu, no usable GPU, or an op the GPU backend does not implement -> CPU.
2. The GPU must have the op's memory need (`GpuDevice.memory_need`, times `memory_headroom`)
   free, counting the CuPy pool's cap -> else CPU.
3. COMPUTE_DEVICE=gpu -> GPU. COMPUTE_DEVICE=auto -> GPU only from the op kind's vertex
   threshold up (`CostModel`): below it, a kernel launch per BFS level and two PCIe copies of the
   field cost more than the CPU spends on the whole job.

A GPU run that fails (out of memory, a CUDA or compile error, anything but a domain error or a
deadline) is retried on the CPU within the same deadline; the outcome's `device` says which ran,
and the Router counts the fallback by reason (`Router.stats`, read by the service's metrics).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from services.common.config import ConfigError, env_int, env_str
from services.common.errors import DeadlineExceeded
from services.lattice.engine.backends import (
    GPU_FAILURE_REASONS,
    AnalysisOutcome,
    ComputeBackend,
    Device,
    FieldLike,
    FieldOutcome,
    GpuDevice,
    GpuFailure,
    PathOutcome,
    TransformOutcome,
    Work,
)
from services.lattice.engine.cpu_pool import (
    AnalyzeJob,
    CpuPool,
    FillJob,
    Lane,
    PathJob,
    PoolStats,
    Share,
    TransformJob,
)
from services.lattice.engine.fair_queue import UNATTRIBUTED
from services.lattice.engine.fills import Fill, RandomFill, check_fill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost
from services.lattice.engine.transforms import TransformOp, validate

logger = logging.getLogger(__name__)

DeviceMode = Literal["auto", "cpu", "gpu"]
DEVICE_MODES: tuple[DeviceMode, ...] = ("auto", "cpu", "gpu")
_DEVICE_MODE_BY_NAME: dict[str, DeviceMode] = {mode: mode for mode in DEVICE_MODES}

# How much lower than the service's own the workers' CPU priority is (ADR 50).
DEFAULT_WORKER_NICE = 10
# Lattices up to this many vertices are LIGHT work: every op on them is short (a 256 KiB field).
LIGHT_VERTICES = 1 << 16

_T = TypeVar("_T")
_DECLINED = frozenset(GPU_FAILURE_REASONS[:3])


@dataclass(frozen=True)
class CostModel:
    """From how many vertices the GPU pays off, per kind of work (COMPUTE_DEVICE=auto).

    Starting points until measured on a device (docs/performance.md): below these the CPU wins
    because the field crosses PCIe twice (~25 GB/s, as fast as a CPU pass over it) and every BFS
    level or relaxation round costs a kernel launch plus a 4-byte read-back (~20 us).
    """

    transform_vertices: int = 1 << 22  # memory-bound: only the big permutations gain
    fill_vertices: int = 1 << 20  # a hash per vertex: compute-bound, the GPU's strength
    bfs_vertices: int = 1 << 18
    shortest_path_vertices: int = 1 << 20
    memory_headroom: float = 1.25

    def threshold(self, work: Work) -> int:
        if work.kind == "transform":
            return self.transform_vertices
        if work.kind == "fill":
            return self.fill_vertices
        if work.kind == "path" and work.cost is Cost.UNIT:
            return self.bfs_vertices
        if work.kind == "path":
            return self.shortest_path_vertices
        return sys.maxsize


@dataclass(frozen=True)
class ComputeConfig:
    """Compute settings, read once at start-up (docs/operations/configuration.md)."""

    device: DeviceMode = "auto"  # COMPUTE_DEVICE
    workers: int = 1  # COMPUTE_WORKERS, default: the CPUs this process may run on
    light_workers: int = 0  # COMPUTE_LIGHT_WORKERS, default 1 when workers >= 2
    max_queue: int = 2  # COMPUTE_MAX_QUEUE, default 2 x workers
    light_vertices: int = LIGHT_VERTICES  # COMPUTE_LIGHT_VERTICES
    gpu_memory_limit_bytes: int | None = None  # GPU_MEMORY_LIMIT_BYTES, default 80% of device
    worker_nice: int = DEFAULT_WORKER_NICE  # COMPUTE_WORKER_NICE: workers' CPU priority below ours

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ComputeConfig:
        device = env_str("COMPUTE_DEVICE", "auto", environ=environ).strip().lower()
        if device not in DEVICE_MODES:
            raise ConfigError(
                f"environment variable COMPUTE_DEVICE={device!r} must be auto|cpu|gpu"
            )
        workers = env_int("COMPUTE_WORKERS", _available_cpus(), environ=environ)
        if workers < 1:
            raise ConfigError("environment variable COMPUTE_WORKERS must be at least 1")
        light = env_int("COMPUTE_LIGHT_WORKERS", 1 if workers >= 2 else 0, environ=environ)
        if not 0 <= light < workers:
            raise ConfigError(
                "environment variable COMPUTE_LIGHT_WORKERS must be 0 to COMPUTE_WORKERS - 1"
            )
        max_queue = env_int("COMPUTE_MAX_QUEUE", 2 * workers, environ=environ)
        if max_queue < 0:
            raise ConfigError("environment variable COMPUTE_MAX_QUEUE must be at least 0")
        light_vertices = env_int("COMPUTE_LIGHT_VERTICES", LIGHT_VERTICES, environ=environ)
        nice = env_int("COMPUTE_WORKER_NICE", DEFAULT_WORKER_NICE, environ=environ)
        if not 0 <= nice <= 19:
            raise ConfigError("environment variable COMPUTE_WORKER_NICE must be 0 to 19")
        limit = env_int("GPU_MEMORY_LIMIT_BYTES", 0, environ=environ)
        if limit < 0:
            raise ConfigError("environment variable GPU_MEMORY_LIMIT_BYTES must be at least 0")
        return cls(
            device=_DEVICE_MODE_BY_NAME[device],
            workers=workers,
            light_workers=light,
            max_queue=max_queue,
            light_vertices=light_vertices,
            gpu_memory_limit_bytes=limit or None,
            worker_nice=nice,
        )


def _available_cpus() -> int:
    # A container's CPU set, not the host's count, where the platform says.
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class CpuBackend:
    """The engine on the CPU worker pool; small lattices go to the pool's light lane."""

    def __init__(self, pool: CpuPool, *, light_vertices: int = LIGHT_VERTICES) -> None:
        self.pool = pool
        self.light_vertices = light_vertices

    def lane(self, work: Work) -> Lane:
        closed_form = (
            work.kind == "path"
            and work.algorithm is Algorithm.AUTO
            and work.cost is Cost.UNIT
            and work.blocked_count == 0
        )
        return Lane.LIGHT if work.vertices <= self.light_vertices or closed_form else Lane.HEAVY

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome:
        vertices = grid.vertex_count
        if not isinstance(fill, RandomFill):
            # A constant or a copy of the caller's bytes: memory speed, not worth a worker.
            started = time.perf_counter()
            field = await asyncio.to_thread(make_field, grid, fill)
            return FieldOutcome(field, "cpu", (time.perf_counter() - started) * 1000)
        lane = self.lane(Work("fill", vertices, fill=fill))
        outcome = await self.pool.run(
            FillJob(grid, fill),
            None,
            vertices=vertices,
            lane=lane,
            deadline_s=deadline_s,
            share=share,
        )
        assert outcome.field is not None
        return FieldOutcome(outcome.field, "cpu", outcome.elapsed_ms)

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        vertices = grid.vertex_count
        outcome = await self.pool.run(
            TransformJob(grid, op),
            field,
            vertices=vertices,
            lane=self.lane(Work("transform", vertices, op=op)),
            deadline_s=deadline_s,
            share=share,
        )
        assert outcome.field is not None
        return TransformOutcome(outcome.field, outcome.value, "cpu", outcome.elapsed_ms)

    async def find_path(
        self,
        grid: Grid,
        field: FieldLike,
        start: Sequence[int],
        end: Sequence[int],
        algorithm: Algorithm = Algorithm.AUTO,
        cost: Cost = Cost.UNIT,
        *,
        blocked_count: int | None = None,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> PathOutcome:
        vertices = grid.vertex_count
        work = Work("path", vertices, algorithm=algorithm, cost=cost, blocked_count=blocked_count)
        job = PathJob(grid, tuple(start), tuple(end), algorithm, cost, blocked_count)
        outcome = await self.pool.run(
            job,
            field,
            vertices=vertices,
            lane=self.lane(work),
            deadline_s=deadline_s,
            share=share,
        )
        return PathOutcome(outcome.value, "cpu", outcome.elapsed_ms)

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome:
        vertices = grid.vertex_count
        outcome = await self.pool.run(
            AnalyzeJob(grid),
            field,
            vertices=vertices,
            lane=self.lane(Work("analysis", vertices)),
            deadline_s=deadline_s,
            share=share,
        )
        return AnalysisOutcome(outcome.value, "cpu", outcome.elapsed_ms)

    async def close(self) -> None:
        await self.pool.close()


@dataclass(frozen=True)
class RouterStats:
    """A snapshot for metrics: the CPU pool's, GPU memory (None without a GPU) and the GPU
    runs retried on the CPU so far, by GpuFailure reason (every reason, 0 until it happens)."""

    pool: PoolStats
    gpu_memory_bytes: int | None
    gpu_memory_total_bytes: int | None
    gpu_fallbacks: dict[str, int]


class Router:
    """A ComputeBackend that sends each call to the GPU or the CPU (see the module docstring)."""

    def __init__(
        self,
        cpu: CpuBackend,
        gpu: GpuDevice | None = None,
        *,
        mode: DeviceMode = "auto",
        model: CostModel | None = None,
    ) -> None:
        if mode not in DEVICE_MODES:
            raise ValueError(f"mode must be one of {DEVICE_MODES}")
        self.cpu = cpu
        self.gpu = gpu
        self.mode = mode
        self.model = model or CostModel()
        self._on_gpu: set[str] = set()  # tenants with a job on the GPU or waiting for it
        self._fallbacks = dict.fromkeys(GPU_FAILURE_REASONS, 0)
        if mode == "gpu" and gpu is None:
            logger.warning("COMPUTE_DEVICE=gpu but no usable GPU was found; running on the CPU")

    def choose(self, work: Work) -> Device:
        """The device this work should run on; pure apart from reading GPU free memory."""
        gpu = self.gpu
        if self.mode == "cpu" or gpu is None or not gpu.supports(work):
            return "cpu"
        if self.mode == "auto" and work.vertices < self.model.threshold(work):
            return "cpu"
        if gpu.memory_need(work) * self.model.memory_headroom > gpu.free_bytes():
            return "cpu"
        return "gpu"

    def gpu_memory_in_use_bytes(self) -> int | None:
        """Bytes of GPU memory in use by this process's arrays, None without a GPU (metrics)."""
        return None if self.gpu is None else self.gpu.memory_in_use_bytes()

    def stats(self) -> RouterStats:
        """What the metrics read when scraped; only reads counters and the devices' state."""
        gpu = self.gpu
        return RouterStats(
            pool=self.cpu.pool.stats(),
            gpu_memory_bytes=None if gpu is None else gpu.memory_in_use_bytes(),
            gpu_memory_total_bytes=None if gpu is None else gpu.memory_total_bytes(),
            gpu_fallbacks=dict(self._fallbacks),
        )

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome:
        check_fill(grid, fill)
        work = Work("fill", grid.vertex_count, fill=fill)
        return await self._route(
            work,
            deadline_s,
            share,
            lambda backend, left: backend.make_field(grid, fill, deadline_s=left, share=share),
        )

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        validate(grid, op)
        work = Work("transform", grid.vertex_count, op=op)
        return await self._route(
            work,
            deadline_s,
            share,
            lambda backend, left: backend.transform(grid, field, op, deadline_s=left, share=share),
        )

    async def find_path(
        self,
        grid: Grid,
        field: FieldLike,
        start: Sequence[int],
        end: Sequence[int],
        algorithm: Algorithm = Algorithm.AUTO,
        cost: Cost = Cost.UNIT,
        *,
        blocked_count: int | None = None,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> PathOutcome:
        work = Work(
            "path", grid.vertex_count, algorithm=algorithm, cost=cost, blocked_count=blocked_count
        )
        return await self._route(
            work,
            deadline_s,
            share,
            lambda backend, left: backend.find_path(
                grid,
                field,
                start,
                end,
                algorithm,
                cost,
                blocked_count=blocked_count,
                deadline_s=left,
                share=share,
            ),
        )

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome:
        work = Work("analysis", grid.vertex_count)
        return await self._route(
            work,
            deadline_s,
            share,
            lambda backend, left: backend.analyze(grid, field, deadline_s=left, share=share),
        )

    async def close(self) -> None:
        await self.cpu.close()
        if self.gpu is not None:
            await self.gpu.close()

    async def _route(
        self,
        work: Work,
        deadline_s: float | None,
        share: Share | None,
        call: Callable[[ComputeBackend, float | None], Awaitable[_T]],
    ) -> _T:
        deadline = None if deadline_s is None else time.monotonic() + deadline_s
        # The GPU runs one job at a time, first come first served: one job per tenant there
        # (running or waiting for it) keeps a tenant's burst from queueing ahead of the others;
        # the rest of the burst goes to the CPU pool, whose queue is fair.
        tenant = None if share is None or share.tenant == UNATTRIBUTED else share.tenant
        if self.gpu is not None and tenant not in self._on_gpu and self.choose(work) == "gpu":
            if tenant is not None:
                self._on_gpu.add(tenant)
            try:
                return await call(self.gpu, _remaining(deadline))
            except GpuFailure as failure:
                self._fallbacks[failure.reason] = self._fallbacks.get(failure.reason, 0) + 1
                level = logging.INFO if failure.reason in _DECLINED else logging.WARNING
                logger.log(
                    level,
                    "GPU %s of %d vertices: %s; running it on the CPU",
                    work.kind,
                    work.vertices,
                    failure,
                )
            finally:
                if tenant is not None:
                    self._on_gpu.discard(tenant)
        return await call(self.cpu, _remaining(deadline))


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the computation did not finish before the deadline")
    return left


async def open_compute(config: ComputeConfig) -> Router:
    """Starts the CPU pool (workers warmed up) and, unless COMPUTE_DEVICE=cpu, probes the GPU."""
    pool = CpuPool(
        workers=config.workers,
        light_workers=config.light_workers,
        max_queue=config.max_queue,
        nice=config.worker_nice,
    )
    await pool.start()
    gpu: GpuDevice | None = None
    if config.device != "cpu":
        from services.lattice.engine.gpu import GpuBackend

        # Compiling the kernels takes seconds: not on the event loop.
        gpu = await asyncio.to_thread(
            GpuBackend.probe, memory_limit_bytes=config.gpu_memory_limit_bytes
        )
    return Router(CpuBackend(pool, light_vertices=config.light_vertices), gpu, mode=config.device)
