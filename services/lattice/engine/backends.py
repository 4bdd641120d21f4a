"""The contract between the lattice service and its compute backends: what a backend is
asked (`ComputeBackend`, `Work`), what it answers (the outcomes), how a GPU run says the CPU
should take over (`GpuFailure`, `GPU_FAILURE_REASONS`), and the field types it accepts
(`FieldLike`). The Router and the CPU backend (compute.py), the CPU pool (cpu_pool.py) and the
GPU backend (gpu.py) import this module and never each other for these types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from services.lattice.engine.analysis import Analysis
from services.lattice.engine.fair_queue import Share
from services.lattice.engine.field import Field
from services.lattice.engine.fills import Fill
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, PathResult
from services.lattice.engine.transforms import TransformOp

Device = Literal["cpu", "gpu"]
WorkKind = Literal["fill", "transform", "path", "analysis"]
# A field as a backend accepts it: the array, or its float32 bytes (the cache's and the store's).
FieldLike = Field | bytes | bytearray | memoryview

# Every GpuFailure reason (a metrics label: keep the set closed). The first three are routine
# (the CPU handles such inputs), the last two faults.
GPU_FAILURE_REASONS = (
    "declined",
    "unsupported",
    "insufficient_memory",
    "out_of_memory",
    "kernel_error",
)


@dataclass(frozen=True)
class FieldOutcome:
    """A new field, where it was made, and how long that took."""

    field: Field
    device: Device
    elapsed_ms: float


@dataclass(frozen=True)
class TransformOutcome:
    """The transformed field (a new array; the caller's input is never written), the op that
    undoes the transform, the device that ran it and its time."""

    field: Field
    inverse: TransformOp
    device: Device
    elapsed_ms: float


@dataclass(frozen=True)
class PathOutcome:
    """The engine's PathResult, the device that found it and its time."""

    result: PathResult
    device: Device
    elapsed_ms: float


@dataclass(frozen=True)
class AnalysisOutcome:
    """The engine's Analysis, the device that ran it and its time."""

    analysis: Analysis
    device: Device
    elapsed_ms: float


class ComputeBackend(Protocol):
    """What the lattice service calls. Every method is a coroutine that never blocks the event
    loop; `deadline_s` is the time left (gRPC's `context.time_remaining()`), None for none;
    `share` the tenant the work is for and its plan's compute caps (fair_queue.Share; None:
    unattributed, as tests and tools that call the engine directly are).

    `elapsed_ms` counts from when a device (a worker process or the GPU) took the job until its
    result was back, copies of the field included and time spent waiting in a queue excluded.
    Errors: the engine's domain errors (InvalidArgument, NotFound, FailedPrecondition),
    DeadlineExceeded, ResourceExhausted (the tenant's share of the queue is full),
    Unavailable (a worker died; retry).
    """

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome: ...

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome: ...

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
    ) -> PathOutcome: ...

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome: ...


@dataclass(frozen=True)
class Work:
    """What the Router needs to know about a call to route it."""

    kind: WorkKind
    vertices: int
    op: TransformOp | None = None
    fill: Fill | None = None
    algorithm: Algorithm = Algorithm.AUTO
    cost: Cost = Cost.UNIT
    blocked_count: int | None = None


class GpuFailure(Exception):
    """A GPU run failed in a way the CPU can cover: out of memory, a CUDA or compile error, or
    an input the GPU kernels decline. `reason` is a short label for logs and metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class GpuDevice(ComputeBackend, Protocol):
    """The GPU backend as the Router sees it (gpu.GpuBackend). Its compute methods raise
    GpuFailure for anything the CPU should retry."""

    def supports(self, work: Work) -> bool:
        """Whether the GPU kernels implement this work at all."""
        ...

    def memory_need(self, work: Work) -> int:
        """Device bytes the work allocates at its peak."""
        ...

    def free_bytes(self) -> int:
        """Device bytes a job may allocate now: free memory, within the pool's cap."""
        ...

    def memory_in_use_bytes(self) -> int:
        """Bytes the CuPy memory pool holds for live arrays (for metrics)."""
        ...

    def memory_total_bytes(self) -> int:
        """The device's memory, all of it (for metrics; the pool's cap is lower)."""
        ...

    async def close(self) -> None: ...
