"""Routing: the cost model, COMPUTE_DEVICE, the GPU's memory check, fallback to the CPU, and
the compute configuration. The GPU here is a test double; the CPU is the real worker pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest
import pytest_asyncio

from services.common.config import ConfigError
from services.common.errors import DeadlineExceeded, InvalidArgument
from services.lattice.engine.analysis import analyze
from services.lattice.engine.backends import (
    GPU_FAILURE_REASONS,
    AnalysisOutcome,
    FieldLike,
    FieldOutcome,
    GpuFailure,
    PathOutcome,
    TransformOutcome,
    Work,
)
from services.lattice.engine.compute import (
    ComputeConfig,
    CostModel,
    CpuBackend,
    Router,
    open_compute,
)
from services.lattice.engine.cpu_pool import CpuPool
from services.lattice.engine.fair_queue import Share
from services.lattice.engine.field import FIELD_DTYPE, checksum
from services.lattice.engine.fills import Fill, RandomFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.gpu import load_cupy
from services.lattice.engine.paths import Algorithm, Cost, find_path
from services.lattice.engine.transforms import Flip, Rotate, TransformOp, Xor, apply_transform

MODULE = pytest.mark.asyncio(loop_scope="module")
pytestmark = pytest.mark.timeout(120)

GRID = Grid.of(3, 12)
FIELD = make_field(GRID, RandomFill(seed=11, low=0.5, high=3.0, blocked_fraction=0.25))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[CpuPool]:
    async with CpuPool(workers=2, light_workers=1) as shared:
        yield shared


def open_pair(field: np.ndarray, grid: Grid) -> tuple[tuple[int, ...], tuple[int, ...]]:
    open_vertices = np.flatnonzero(field.view(np.uint32) < 0x7F80_0000)
    return grid.coordinates_of(int(open_vertices[0])), grid.coordinates_of(int(open_vertices[-1]))


class FakeGpu:
    """A GpuDevice for routing tests: records calls, fails on demand (no GPU here)."""

    def __init__(self, *, free: int = 1 << 40, failure: GpuFailure | None = None) -> None:
        self.free = free
        self.failure = failure
        self.calls: list[str] = []

    def supports(self, work: Work) -> bool:
        return work.kind != "analysis"

    def memory_need(self, work: Work) -> int:
        return 4 * work.vertices

    def free_bytes(self) -> int:
        return self.free

    def memory_in_use_bytes(self) -> int:
        return 123

    def memory_total_bytes(self) -> int:
        return 1 << 30

    def _ran(self, name: str) -> None:
        self.calls.append(name)
        if self.failure is not None:
            raise self.failure

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome:
        self._ran("make_field")
        return FieldOutcome(make_field(grid, fill), "gpu", 1.0)

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        self._ran("transform")
        out = (
            np.frombuffer(field, dtype=FIELD_DTYPE).copy()
            if not isinstance(field, np.ndarray)
            else field.copy()
        )
        return TransformOutcome(out, apply_transform(grid, out, op), "gpu", 1.0)

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
        self._ran("find_path")
        raise AssertionError("not used")

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome:
        raise AssertionError("analysis is never routed to the GPU")

    async def close(self) -> None:
        self.calls.append("close")


SMALL = Work("transform", 1000, op=Xor(1))
BIG = Work("transform", 1 << 24, op=Xor(1))


def router(gpu: FakeGpu | None, mode: str = "auto") -> Router:
    # choose() never touches the pool; an unstarted one is enough.
    return Router(CpuBackend(CpuPool(workers=1)), gpu, mode=mode)  # type: ignore[arg-type]


def test_without_a_gpu_everything_runs_on_the_cpu() -> None:
    for mode in ("auto", "cpu", "gpu"):
        chosen = router(None, mode)
        assert {chosen.choose(w) for w in (SMALL, BIG, Work("analysis", 1 << 24))} == {"cpu"}
        assert chosen.gpu_memory_in_use_bytes() is None
        stats = chosen.stats()
        assert (stats.gpu_memory_bytes, stats.gpu_memory_total_bytes) == (None, None)
        assert set(stats.gpu_fallbacks.values()) == {0}


def test_auto_sends_only_large_work_to_the_gpu() -> None:
    chosen = router(FakeGpu())
    model = CostModel()
    assert chosen.choose(SMALL) == "cpu"
    assert chosen.choose(BIG) == "gpu"
    assert chosen.choose(Work("transform", model.transform_vertices - 1, op=Xor(1))) == "cpu"
    assert chosen.choose(Work("transform", model.transform_vertices, op=Xor(1))) == "gpu"
    assert chosen.choose(Work("path", model.bfs_vertices, cost=Cost.UNIT)) == "gpu"
    assert chosen.choose(Work("analysis", 1 << 24)) == "cpu"  # not a GPU op
    assert chosen.gpu_memory_in_use_bytes() == 123


def test_compute_device_cpu_and_gpu_override_the_cost_model() -> None:
    assert router(FakeGpu(), "cpu").choose(BIG) == "cpu"
    assert router(FakeGpu(), "gpu").choose(SMALL) == "gpu"
    mode = ComputeConfig.from_env({"COMPUTE_DEVICE": "cpu"}).device
    assert router(FakeGpu(), mode).choose(BIG) == "cpu"


def test_work_that_does_not_fit_the_gpu_memory_stays_on_the_cpu() -> None:
    need = 4 * BIG.vertices
    assert router(FakeGpu(free=need)).choose(BIG) == "cpu"  # no headroom left
    assert router(FakeGpu(free=2 * need)).choose(BIG) == "gpu"
    assert router(FakeGpu(free=0), "gpu").choose(SMALL) == "cpu"


@MODULE
@pytest.mark.parametrize("reason", ["out_of_memory", "kernel_error", "declined"])
async def test_a_failing_gpu_falls_back_to_the_cpu(pool: CpuPool, reason: str) -> None:
    gpu = FakeGpu(failure=GpuFailure(reason, "simulated"))
    routed = Router(CpuBackend(pool), gpu, mode="gpu")
    outcome = await routed.transform(GRID, FIELD, Xor(9))
    assert gpu.calls == ["transform"]
    assert outcome.device == "cpu"
    assert outcome.field.tobytes() == (FIELD.view(np.uint32) ^ 9).tobytes()
    made = await routed.make_field(GRID, RandomFill(seed=1, low=0, high=1, blocked_fraction=0))
    assert made.device == "cpu"
    # Both runs counted as fallbacks, by reason, for the metrics; every reason is there.
    stats = routed.stats()
    assert stats.gpu_fallbacks == {
        known: 2 if known == reason else 0 for known in GPU_FAILURE_REASONS
    }
    assert (stats.gpu_memory_bytes, stats.gpu_memory_total_bytes) == (123, 1 << 30)


@MODULE
async def test_a_working_gpu_result_says_gpu(pool: CpuPool) -> None:
    routed = Router(CpuBackend(pool), FakeGpu(), mode="gpu")
    outcome = await routed.transform(GRID, FIELD, Rotate(0, 1, 1))
    assert outcome.device == "gpu"


@MODULE
async def test_the_router_validates_before_using_any_device(pool: CpuPool) -> None:
    gpu = FakeGpu()
    routed = Router(CpuBackend(pool), gpu, mode="gpu")
    with pytest.raises(InvalidArgument):
        await routed.transform(GRID, FIELD, Flip(3))
    with pytest.raises(InvalidArgument):
        await routed.make_field(GRID, RandomFill(seed=1, low=2, high=1, blocked_fraction=0))
    assert gpu.calls == []


@MODULE
async def test_the_router_runs_everything_on_the_cpu_with_identical_results(
    pool: CpuPool,
) -> None:
    routed = Router(CpuBackend(pool), None)
    start, end = open_pair(FIELD, GRID)
    path = await routed.find_path(GRID, FIELD, start, end, Algorithm.AUTO, Cost.FIELD)
    assert path.device == "cpu"
    want = find_path(GRID, FIELD.copy(), start, end, algorithm=Algorithm.AUTO, cost=Cost.FIELD)
    assert np.array_equal(path.result.vertices, want.vertices)
    assert (path.result.cost, path.result.algorithm) == (want.cost, want.algorithm)
    analysis = await routed.analyze(GRID, FIELD)
    assert (analysis.device, analysis.analysis) == ("cpu", analyze(GRID, FIELD))
    with pytest.raises(DeadlineExceeded):
        await routed.analyze(GRID, FIELD, deadline_s=-1)


# Configuration


def test_config_defaults_and_overrides() -> None:
    defaults = ComputeConfig.from_env({})
    assert defaults.device == "auto"
    assert defaults.workers >= 1
    assert defaults.max_queue == 2 * defaults.workers
    assert defaults.gpu_memory_limit_bytes is None
    assert defaults.worker_nice == 10
    set_ = ComputeConfig.from_env(
        {
            "COMPUTE_DEVICE": "GPU",
            "COMPUTE_WORKERS": "4",
            "COMPUTE_LIGHT_WORKERS": "2",
            "COMPUTE_MAX_QUEUE": "3",
            "GPU_MEMORY_LIMIT_BYTES": "1000000",
            "COMPUTE_WORKER_NICE": "0",
        }
    )
    assert (set_.device, set_.workers, set_.light_workers, set_.max_queue) == ("gpu", 4, 2, 3)
    assert set_.gpu_memory_limit_bytes == 1_000_000
    assert set_.worker_nice == 0
    for bad in (
        {"COMPUTE_DEVICE": "tpu"},
        {"COMPUTE_WORKERS": "0"},
        {"COMPUTE_WORKERS": "2", "COMPUTE_LIGHT_WORKERS": "2"},
        {"COMPUTE_MAX_QUEUE": "-1"},
        {"COMPUTE_WORKERS": "many"},
        {"COMPUTE_WORKER_NICE": "-1"},
        {"COMPUTE_WORKER_NICE": "20"},
    ):
        with pytest.raises(ConfigError):
            ComputeConfig.from_env(bad)


@MODULE
@pytest.mark.skipif(load_cupy() is not None, reason="a GPU is present here")
async def test_open_compute_without_cupy_routes_to_the_cpu() -> None:
    routed = await open_compute(ComputeConfig(device="auto", workers=1, max_queue=2))
    try:
        assert routed.gpu is None  # no cupy (or no device) in this environment
        made = await routed.make_field(
            GRID, RandomFill(seed=5, low=0, high=2, blocked_fraction=0.3)
        )
        assert made.device == "cpu"
        assert checksum(made.field) == checksum(
            make_field(GRID, RandomFill(seed=5, low=0, high=2, blocked_fraction=0.3))
        )
    finally:
        await routed.close()


class HeldGpu(FakeGpu):
    """A FakeGpu whose transforms wait until released, to hold the device busy."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        self.entered.set()
        await self.release.wait()
        return await super().transform(grid, field, op, deadline_s=deadline_s, share=share)


@MODULE
async def test_a_tenant_has_one_job_at_a_time_on_the_gpu_the_rest_on_the_cpu(
    pool: CpuPool,
) -> None:
    gpu = HeldGpu()
    routed = Router(CpuBackend(pool), gpu, mode="gpu")
    op = Rotate(0, 1, 1)
    first = asyncio.ensure_future(routed.transform(GRID, FIELD, op, share=Share("a")))
    await asyncio.wait_for(gpu.entered.wait(), 5)
    # The device is busy with a's job: a's next one does not queue behind it there.
    second = await asyncio.wait_for(routed.transform(GRID, FIELD, op, share=Share("a")), 30)
    assert second.device == "cpu"
    other = asyncio.ensure_future(routed.transform(GRID, FIELD, op, share=Share("b")))
    gpu.release.set()
    assert (await first).device == "gpu"
    assert (await other).device == "gpu"
    assert (await routed.transform(GRID, FIELD, op, share=Share("a"))).device == "gpu"
