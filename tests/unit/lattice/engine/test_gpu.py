"""The CuPy backend against the CPU engine, on a real device: XOR/ROTATE/FLIP (and SCALE/OFFSET)
bit-identical, the random fill bit-identical, path costs equal, fallbacks and deadlines.

Skipped, never failed, where cupy does not import or sees no device."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pytest
import pytest_asyncio

from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from services.lattice.engine.backends import GpuFailure, Work
from services.lattice.engine.compute import CpuBackend, Router
from services.lattice.engine.cpu_pool import CpuPool
from services.lattice.engine.field import FIELD_DTYPE
from services.lattice.engine.fills import RandomFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.gpu import GpuBackend, load_cupy
from services.lattice.engine.paths import Algorithm, Cost, find_path
from services.lattice.engine.transforms import (
    Flip,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
    apply_transform,
)

pytestmark = [
    pytest.mark.skipif(load_cupy() is None, reason="needs cupy and a CUDA device"),
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(300),
]

Field = npt.NDArray[np.float32]
OPEN = 0x7F80_0000
# Bit patterns every field may hold: signed zeros, infinities, NaNs with payloads, subnormals,
# the float32 extremes.
SPECIAL_BITS = [
    0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0xFFC0_0001,
    0x7F80_0001, 0xFFBF_FFFF, 0x0000_0001, 0x8000_0001, 0x0080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,
]  # fmt: skip


def noisy_field(grid: Grid, seed: int) -> Field:
    """Random values of both signs and many magnitudes, with every special pattern sprinkled in."""
    rng = np.random.default_rng(seed)
    field = rng.standard_normal(grid.vertex_count) * 10.0 ** rng.integers(-3, 4, grid.vertex_count)
    field = field.astype(FIELD_DTYPE)
    spots = rng.choice(grid.vertex_count, size=min(grid.vertex_count, 4 * len(SPECIAL_BITS)))
    field.view(np.uint32)[spots] = np.resize(np.array(SPECIAL_BITS, np.uint32), spots.size)
    return field


@pytest.fixture(scope="module")
def gpu() -> GpuBackend:
    backend = GpuBackend.probe()
    assert backend is not None  # cupy imports and sees a device (the skip above says so)
    return backend


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[CpuPool]:
    async with CpuPool(workers=2, light_workers=1) as shared:
        yield shared


GRIDS = [Grid.of(1, 97), Grid.of(2, 33), Grid.of(3, 20), Grid.of(4, 9), Grid.of(5, 6)]


def exact_ops(grid: Grid) -> list[TransformOp]:
    ops: list[TransformOp] = [Xor(0), Xor(0xFFFF_FFFF), Xor(0x8000_0000), Xor(0x1234_5678)]
    ops += [Flip(axis) for axis in range(grid.dimensions)]
    ops += [
        Rotate(a, b, k)
        for a, b in itertools.permutations(range(grid.dimensions), 2)
        for k in (-1, 0, 1, 2, 3, 5)
    ]
    return ops


@pytest.mark.parametrize("grid", GRIDS, ids=str)
async def test_xor_rotate_flip_are_bit_identical_to_the_cpu(gpu: GpuBackend, grid: Grid) -> None:
    field = noisy_field(grid, grid.vertex_count)
    for op in exact_ops(grid):
        outcome = await gpu.transform(grid, field, op)
        expected = field.copy()
        inverse = apply_transform(grid, expected, op)
        assert outcome.device == "gpu"
        assert outcome.inverse == inverse, op
        assert outcome.field.view(np.uint32).tolist() == expected.view(np.uint32).tolist(), op


@pytest.mark.parametrize("grid", GRIDS, ids=str)
async def test_scale_and_offset_are_bit_identical_to_the_cpu(gpu: GpuBackend, grid: Grid) -> None:
    field = noisy_field(grid, 7 * grid.vertex_count)
    field[np.isfinite(field) & (np.abs(field) > 1e30)] = 1.0  # clear of the overflow refusal
    ops: list[TransformOp] = [Scale(2.0), Scale(-0.3), Scale(1e-20), Offset(0.0)]
    ops += [Offset(1.5), Offset(-2.25), Offset(1e-40)]
    for op in ops:
        outcome = await gpu.transform(grid, field, op)
        expected = field.copy()
        inverse = apply_transform(grid, expected, op)
        assert outcome.inverse == inverse, op
        assert outcome.field.view(np.uint32).tolist() == expected.view(np.uint32).tolist(), op


async def test_overflow_is_refused_as_on_the_cpu(gpu: GpuBackend) -> None:
    grid = Grid.of(2, 10)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field[3] = 3e38
    for op in (Scale(4.0), Offset(1e38)):
        with pytest.raises(FailedPrecondition):
            apply_transform(grid, field.copy(), op)
        with pytest.raises(FailedPrecondition):
            await gpu.transform(grid, field, op)
    with pytest.raises(InvalidArgument):
        await gpu.transform(grid, field, Rotate(0, 0, 1))


@pytest.mark.parametrize(
    "fill",
    [
        RandomFill(seed=0, low=0.0, high=1.0, blocked_fraction=0.0),
        RandomFill(seed=7, low=0.5, high=3.0, blocked_fraction=0.25),
        RandomFill(seed=2**64 - 1, low=1e-3, high=1e30, blocked_fraction=0.999),
        RandomFill(seed=123456789, low=1.0, high=1.0000001, blocked_fraction=0.5),
    ],
    ids=repr,
)
async def test_random_fill_is_bit_identical_to_the_cpu(gpu: GpuBackend, fill: RandomFill) -> None:
    grid = Grid.of(3, 70)  # beyond one CPU chunk (2**18 vertices)
    outcome = await gpu.make_field(grid, fill)
    assert outcome.device == "gpu"
    assert outcome.field.tobytes() == make_field(grid, fill).tobytes()


def path_is_valid(grid: Grid, field: Field, path: np.ndarray, s: int, t: int) -> bool:
    steps = np.abs(np.diff(path.astype(np.int64)))
    return (
        int(path[0]) == s
        and int(path[-1]) == t
        and bool((field.view(np.uint32)[path] < OPEN).all())
        and all(
            int(step) in grid.strides
            and sum(
                a != b
                for a, b in zip(
                    grid.coordinates_of(int(u)), grid.coordinates_of(int(v)), strict=True
                )
            )
            == 1
            for step, u, v in zip(steps, path[:-1], path[1:], strict=True)
        )
    )


@pytest.mark.parametrize("grid", [Grid.of(2, 60), Grid.of(3, 30), Grid.of(5, 7)], ids=str)
@pytest.mark.parametrize("blocked", [0.1, 0.3])
@pytest.mark.parametrize("cost", list(Cost))
async def test_path_costs_equal_the_cpus(
    gpu: GpuBackend, grid: Grid, blocked: float, cost: Cost
) -> None:
    field = make_field(
        grid, RandomFill(seed=grid.vertex_count, low=0.0, high=2.0, blocked_fraction=blocked)
    )
    open_vertices = np.flatnonzero(field.view(np.uint32) < OPEN)
    rng = np.random.default_rng(5)
    algorithm = Algorithm.BFS if cost is Cost.UNIT else Algorithm.DIJKSTRA
    for _ in range(5):
        s, t = (int(v) for v in rng.choice(open_vertices, 2, replace=False))
        start, end = grid.coordinates_of(s), grid.coordinates_of(t)
        try:
            want = find_path(grid, field.copy(), start, end, algorithm=algorithm, cost=cost)
        except NotFound:
            with pytest.raises(NotFound):
                await gpu.find_path(grid, field, start, end, algorithm, cost)
            continue
        got = (await gpu.find_path(grid, field, start, end, algorithm, cost)).result
        assert path_is_valid(grid, field, got.vertices, s, t)
        assert got.algorithm is want.algorithm
        assert got.checksum_before == got.checksum_after == want.checksum_before
        if cost is Cost.UNIT:
            assert (got.hops, got.cost) == (want.hops, want.cost)
        else:
            # float32 accumulation on the device: the chosen path may differ in the last bits.
            assert got.cost == pytest.approx(want.cost, rel=1e-5)
            assert got.cost == sum(float(field[v]) for v in got.vertices[1:])
        if np.array_equal(got.vertices, want.vertices):
            assert got.cost == want.cost


async def test_trivial_and_declined_paths(gpu: GpuBackend) -> None:
    grid = Grid.of(2, 10)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field[0] = np.inf
    same = await gpu.find_path(grid, field, (3, 3), (3, 3), Algorithm.BFS, Cost.UNIT)
    assert same.result.vertices.tolist() == [33]
    with pytest.raises(GpuFailure):
        await gpu.find_path(grid, field, (0, 0), (3, 3), Algorithm.BFS, Cost.UNIT)
    with pytest.raises(InvalidArgument):
        await gpu.find_path(grid, field, (0, 10), (3, 3), Algorithm.BFS, Cost.UNIT)


async def test_router_uses_the_gpu_and_falls_back_when_it_cannot(
    gpu: GpuBackend, pool: CpuPool
) -> None:
    grid = Grid.of(3, 40)
    field = make_field(grid, RandomFill(seed=1, low=0.0, high=1.0, blocked_fraction=0.2))
    routed = Router(CpuBackend(pool), gpu, mode="gpu")
    outcome = await routed.transform(grid, field, Xor(77))
    assert outcome.device == "gpu"
    assert routed.gpu_memory_in_use_bytes() is not None
    starved = GpuBackend(load_cupy(), memory_limit_bytes=1024)  # nothing fits: the CPU runs it
    try:
        routed = Router(CpuBackend(pool), starved, mode="gpu")
        assert routed.choose(Work("transform", grid.vertex_count, op=Xor(77))) == "cpu"
        fallback = await routed.transform(grid, field, Xor(77))
        assert fallback.device == "cpu"
        assert fallback.field.tobytes() == outcome.field.tobytes()
        with pytest.raises(GpuFailure):  # asked directly, it declines rather than fails
            await starved.transform(grid, field, Xor(77))
    finally:
        gpu._pool.set_limit(size=gpu.memory_limit_bytes)  # CuPy's pool is shared: restore it


async def test_a_deadline_stops_a_gpu_search_between_rounds(gpu: GpuBackend) -> None:
    grid = Grid.of(3, 100)
    field = make_field(grid, RandomFill(seed=3, low=0.0, high=1.0, blocked_fraction=0.3))
    open_vertices = np.flatnonzero(field.view(np.uint32) < OPEN)
    start = grid.coordinates_of(int(open_vertices[0]))
    end = grid.coordinates_of(int(open_vertices[-1]))
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await gpu.find_path(
            grid, field, start, end, Algorithm.DIJKSTRA, Cost.FIELD, deadline_s=0.001
        )
    assert time.monotonic() - began < 2
    outcome = await gpu.transform(grid, field, Flip(0))  # the device is free again
    assert outcome.device == "gpu"
