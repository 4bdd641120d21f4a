"""The CPU worker pool and the Router: same results as the engine, no shared-memory leaks,
bounded queue, killable deadlines, lanes, and routing with its fallback to the CPU."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.lattice.engine import cpu_pool
from services.lattice.engine.analysis import analyze
from services.lattice.engine.backends import AnalysisOutcome
from services.lattice.engine.compute import CpuBackend
from services.lattice.engine.cpu_pool import (
    AnalyzeJob,
    CpuPool,
    CrashJob,
    Lane,
    PathJob,
    Share,
    SpinJob,
    TransformJob,
)
from services.lattice.engine.field import FIELD_DTYPE
from services.lattice.engine.fills import ConstantFill, Fill, RandomFill, ValuesFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, PathResult, find_path
from services.lattice.engine.transforms import (
    Denormalize,
    Flip,
    Normalize,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
    apply_transform,
)

SHM = Path("/dev/shm")
needs_dev_shm = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm to list segments")
MODULE = pytest.mark.asyncio(loop_scope="module")
pytestmark = [MODULE, pytest.mark.timeout(120)]

GRID = Grid.of(3, 12)
FIELD = make_field(GRID, RandomFill(seed=11, low=0.5, high=3.0, blocked_fraction=0.25))
TINY = np.ones(64, dtype=FIELD_DTYPE)  # for the test-hook jobs, which ignore their field


def segments(pool: CpuPool) -> list[str]:
    """This pool's shared-memory segments that exist right now and are not kept for reuse
    (a leak: none may outlive the job it served unless the pool keeps it)."""
    kept = set(pool.kept_segments())
    return sorted(
        p.name
        for p in SHM.iterdir()
        if p.name.startswith(pool.segment_prefix) and p.name not in kept
    )


def all_segments(pool: CpuPool) -> list[str]:
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(pool.segment_prefix))


def open_pair(field: np.ndarray, grid: Grid) -> tuple[tuple[int, ...], tuple[int, ...]]:
    open_vertices = np.flatnonzero(field.view(np.uint32) < 0x7F80_0000)
    return grid.coordinates_of(int(open_vertices[0])), grid.coordinates_of(int(open_vertices[-1]))


def assert_same_path(got: PathResult, want: PathResult) -> None:
    assert np.array_equal(got.vertices, want.vertices)
    assert (got.hops, got.cost, got.algorithm, got.method) == (
        want.hops,
        want.cost,
        want.algorithm,
        want.method,
    )
    assert (got.checksum_before, got.checksum_after) == (want.checksum_before, want.checksum_after)
    assert (got.extra_bytes, got.visited) == (want.extra_bytes, want.visited)


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a zombie burns nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


async def until_ready(pool: CpuPool, timeout_s: float = 60.0) -> None:
    """Waits until every worker is up and idle (after a kill, its successor warms up)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        stats = pool.stats()
        if stats.ready == pool.workers and stats.busy == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the pool did not recover: {pool.stats()}")


async def wait_until_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """True once `pid` no longer runs."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not running(pid):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[CpuPool]:
    """Two workers (one reserved for light jobs), test hooks allowed, kernels warmed up."""
    async with CpuPool(workers=2, light_workers=1, max_queue=16, test_hooks=True) as shared:
        yield shared


# Results equal the engine's own


TRANSFORMS: list[TransformOp] = [
    Xor(0xDEADBEEF),
    Rotate(0, 1, 1),
    Rotate(2, 0, 3),
    Rotate(1, 2, 2),
    Flip(0),
    Flip(2),
    Scale(-2.5),
    Offset(0.75),
    Normalize(),
    Denormalize(1.5, 0.25),
]


@pytest.mark.parametrize("op", TRANSFORMS, ids=repr)
@pytest.mark.parametrize("lane", list(Lane))
async def test_transform_matches_the_engine(pool: CpuPool, op: TransformOp, lane: Lane) -> None:
    before = FIELD.copy()
    outcome = await pool.run(TransformJob(GRID, op), FIELD, vertices=GRID.vertex_count, lane=lane)
    expected = FIELD.copy()
    inverse = apply_transform(GRID, expected, op)
    assert outcome.value == inverse
    assert outcome.field is not None
    assert outcome.field.tobytes() == expected.tobytes()
    assert FIELD.tobytes() == before.tobytes()  # the caller's field is never written
    assert outcome.elapsed_ms >= outcome.compute_ms > 0


@pytest.mark.parametrize(
    ("algorithm", "cost"),
    [
        (Algorithm.AUTO, Cost.UNIT),
        (Algorithm.BFS, Cost.UNIT),
        (Algorithm.DIJKSTRA, Cost.UNIT),
        (Algorithm.ASTAR, Cost.UNIT),
        (Algorithm.CATALYTIC, Cost.UNIT),
        (Algorithm.AUTO, Cost.FIELD),
        (Algorithm.DIJKSTRA, Cost.FIELD),
        (Algorithm.ASTAR, Cost.FIELD),
    ],
)
async def test_path_matches_the_engine(pool: CpuPool, algorithm: Algorithm, cost: Cost) -> None:
    backend = CpuBackend(pool)
    start, end = open_pair(FIELD, GRID)
    outcome = await backend.find_path(GRID, FIELD.tobytes(), start, end, algorithm, cost)
    assert outcome.device == "cpu"
    want = find_path(GRID, FIELD.copy(), start, end, algorithm=algorithm, cost=cost)
    assert_same_path(outcome.result, want)


async def test_path_errors_cross_the_process_boundary_intact(pool: CpuPool) -> None:
    backend = CpuBackend(pool)
    walled = np.ones(GRID.vertex_count, dtype=FIELD_DTYPE)
    walled.reshape(GRID.shape)[:, 5, :] = np.inf  # a wall between y < 5 and y > 5
    with pytest.raises(NotFound):
        await backend.find_path(GRID, walled, (0, 0, 0), (0, 11, 0))
    with pytest.raises(InvalidArgument) as caught:
        await backend.find_path(GRID, walled, (0, 5, 0), (0, 12, 0))
    assert {name for name, _ in caught.value.violations} == {"start", "end"}
    assert caught.value.field == "start"


async def test_domain_errors_from_workers_keep_their_type_and_fields(pool: CpuPool) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await pool.run(TransformJob(GRID, Rotate(0, 7, 1)), FIELD, vertices=GRID.vertex_count)
    assert caught.value.violations == [("rotate.axis_b", "must be an axis, 0 to 2")]
    huge = np.full(GRID.vertex_count, 3e38, dtype=FIELD_DTYPE)
    with pytest.raises(FailedPrecondition):
        await pool.run(TransformJob(GRID, Scale(4.0)), huge, vertices=GRID.vertex_count)


async def test_analysis_and_fills_match_the_engine(pool: CpuPool) -> None:
    backend = CpuBackend(pool)
    analysed = await backend.analyze(GRID, memoryview(FIELD.tobytes()))
    assert analysed == AnalysisOutcome(analyze(GRID, FIELD), "cpu", analysed.elapsed_ms)
    fills: list[Fill] = [
        RandomFill(seed=3, low=0.0, high=1.0, blocked_fraction=0.1),
        ConstantFill(2.0),
        ValuesFill(FIELD.tobytes()),
    ]
    for fill in fills:
        made = await backend.make_field(GRID, fill)
        assert made.device == "cpu"
        assert made.field.tobytes() == make_field(GRID, fill).tobytes()


# Shared memory is always released


@needs_dev_shm
async def test_no_segment_outlives_a_batch(pool: CpuPool) -> None:
    backend = CpuBackend(pool)
    start, end = open_pair(FIELD, GRID)
    await asyncio.gather(
        *(backend.transform(GRID, FIELD, Xor(k)) for k in range(6)),
        *(backend.find_path(GRID, FIELD, start, end) for _ in range(3)),
        backend.analyze(GRID, FIELD),
        backend.make_field(GRID, RandomFill(seed=1, low=0, high=1, blocked_fraction=0)),
        return_exceptions=False,
    )
    with pytest.raises(InvalidArgument):
        await pool.run(TransformJob(GRID, Flip(9)), FIELD, vertices=GRID.vertex_count)
    assert segments(pool) == []


@needs_dev_shm
async def test_a_crashed_worker_leaks_nothing_and_is_replaced(pool: CpuPool) -> None:
    with pytest.raises(Unavailable):
        await pool.run(CrashJob(), FIELD, vertices=GRID.vertex_count)
    assert segments(pool) == []
    outcome = await pool.run(TransformJob(GRID, Xor(5)), FIELD, vertices=GRID.vertex_count)
    assert outcome.field is not None
    assert outcome.field.view(np.uint32).tolist() == (FIELD.view(np.uint32) ^ 5).tolist()


@needs_dev_shm
async def test_a_worker_killed_from_outside_is_replaced(pool: CpuPool) -> None:
    await until_ready(pool)
    victim = pool.worker_pids()[-1]
    os.kill(victim, signal.SIGKILL)
    # The pool notices at EOF on the worker's pipe, once its last thread has gone. (A job
    # handed to a worker in that window fails with Unavailable, which callers may retry.)
    for _ in range(100):
        if victim not in pool.worker_pids():
            break
        await asyncio.sleep(0.05)
    assert victim not in pool.worker_pids()
    for _ in range(3):
        outcome = await pool.run(AnalyzeJob(GRID), FIELD, vertices=GRID.vertex_count)
        assert outcome.value == analyze(GRID, FIELD)
    assert victim not in pool.worker_pids()
    assert segments(pool) == []


# Deadlines and cancellation kill the worker


@needs_dev_shm
async def test_a_deadline_stops_the_job_promptly_and_the_pool_goes_on(pool: CpuPool) -> None:
    await until_ready(pool)
    busy_before = set(pool.worker_pids())
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await pool.run(SpinJob(30), FIELD, vertices=GRID.vertex_count, deadline_s=0.5)
    assert time.monotonic() - started < 0.5 + 2
    assert segments(pool) == []
    killed = busy_before - set(pool.worker_pids())
    assert len(killed) == 1
    assert await wait_until_gone(killed.pop())  # no core keeps burning for the lost caller
    outcome = await pool.run(TransformJob(GRID, Flip(1)), FIELD, vertices=GRID.vertex_count)
    expected = FIELD.copy()
    apply_transform(GRID, expected, Flip(1))
    assert outcome.field is not None
    assert outcome.field.tobytes() == expected.tobytes()


@needs_dev_shm
async def test_a_deadline_kills_a_real_numba_kernel(pool: CpuPool) -> None:
    # Components of 2**24 vertices take far longer than 50 ms, and numba never yields.
    big = Grid.of(4, 64)
    field = np.ones(big.vertex_count, dtype=FIELD_DTYPE)
    field[12345] = np.inf
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await CpuBackend(pool).analyze(big, field, deadline_s=0.05)
    assert time.monotonic() - started < 0.05 + 2
    assert segments(pool) == []


@needs_dev_shm
async def test_cancelling_the_caller_kills_the_job(pool: CpuPool) -> None:
    await until_ready(pool)
    before = set(pool.worker_pids())
    task = asyncio.ensure_future(pool.run(SpinJob(30), FIELD, vertices=GRID.vertex_count))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert segments(pool) == []
    killed = before - set(pool.worker_pids())
    assert len(killed) == 1
    assert await wait_until_gone(killed.pop())


async def test_a_deadline_already_past_never_reaches_a_worker(pool: CpuPool) -> None:
    with pytest.raises(DeadlineExceeded):
        await pool.run(SpinJob(30), FIELD, vertices=GRID.vertex_count, deadline_s=0)


# Queue bound and lanes (own pools: they need workers they can keep busy)


async def test_a_full_queue_refuses_at_once() -> None:
    async with CpuPool(
        workers=1, light_workers=0, max_queue=1, warm_up=False, test_hooks=True
    ) as small:
        running = asyncio.ensure_future(small.run(SpinJob(30), TINY, vertices=64))
        waiting = asyncio.ensure_future(small.run(SpinJob(0), TINY, vertices=64))
        await asyncio.sleep(0.3)
        assert small.stats().waiting == 1
        started = time.monotonic()
        with pytest.raises(ResourceExhausted) as caught:
            await small.run(SpinJob(0), TINY, vertices=64)
        assert time.monotonic() - started < 0.5
        assert caught.value.retry_after_s == 1
        assert caught.value.message == "compute queue is full"
        for task in (running, waiting):
            task.cancel()
        await asyncio.gather(running, waiting, return_exceptions=True)


async def test_light_jobs_do_not_wait_behind_heavy_ones() -> None:
    async with CpuPool(workers=2, light_workers=1, warm_up=False, test_hooks=True) as lanes:
        heavy = [
            asyncio.ensure_future(lanes.run(SpinJob(2), TINY, vertices=64, lane=Lane.HEAVY))
            for _ in range(2)
        ]
        await asyncio.sleep(0.3)
        # The reserved worker is idle, yet heavy work may not take it.
        assert lanes.stats().waiting == 1
        started = time.monotonic()
        light = await lanes.run(SpinJob(0.1), TINY, vertices=64, lane=Lane.LIGHT)
        assert time.monotonic() - started < 1.0
        assert isinstance(light.value, int)
        await asyncio.gather(*heavy)


async def test_light_jobs_spill_onto_idle_heavy_workers() -> None:
    async with CpuPool(workers=2, light_workers=1, warm_up=False, test_hooks=True) as lanes:
        pids = await asyncio.gather(
            *(lanes.run(SpinJob(0.5), TINY, vertices=64, lane=Lane.LIGHT) for _ in range(2))
        )
        assert len({outcome.value for outcome in pids}) == 2


async def test_a_flooding_tenant_is_refused_and_another_tenant_never_waits_for_it() -> None:
    """Fair compute on real workers: one tenant's burst of long jobs fills its share of
    the queue and no more; another tenant's short jobs all start at once on the worker the
    flood may not take."""
    async with CpuPool(
        workers=2, light_workers=1, max_queue=4, warm_up=False, test_hooks=True
    ) as pool:
        flood_share, light_share = Share("flood"), Share("light", max_running=1, max_waiting=2)

        async def flood_job() -> str:
            try:
                await pool.run(SpinJob(30), TINY, vertices=64, share=flood_share)
            except ResourceExhausted as refused:
                return f"refused, retry after {refused.retry_after_s}"
            return "ran"

        flood = [asyncio.ensure_future(flood_job()) for _ in range(10)]
        # Alone, it runs one job (all workers but one) and queues max_queue of them.
        deadline = time.monotonic() + 30
        while sum(task.done() for task in flood) < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert [task.result() for task in flood if task.done()] == ["refused, retry after 1"] * 5
        assert (pool.stats().busy, pool.stats().waiting) == (1, 4)
        for _ in range(5):
            started = time.monotonic()
            outcome = await pool.run(
                SpinJob(0.05), TINY, vertices=64, lane=Lane.HEAVY, share=light_share
            )
            assert isinstance(outcome.value, int)
            assert time.monotonic() - started < 5  # never behind a 30 s job
        # While the light tenant computes, the queue is split: the flood is over its share.
        light = asyncio.ensure_future(
            pool.run(SpinJob(1), TINY, vertices=64, lane=Lane.HEAVY, share=light_share)
        )
        while pool.stats().tenants < 2 or pool.stats().busy < 2:  # noqa: ASYNC110 - polls the pool
            await asyncio.sleep(0.01)
        assert await flood_job() == "refused, retry after 1"
        assert pool.stats().refusals["share"] == 6
        await light
        for task in flood:
            task.cancel()
        await asyncio.gather(*flood, return_exceptions=True)


@needs_dev_shm
async def test_close_stops_running_jobs_after_the_grace_period() -> None:
    pool = CpuPool(workers=1, light_workers=0, warm_up=False, test_hooks=True)
    await pool.start()
    pids = pool.worker_pids()
    running = asyncio.ensure_future(pool.run(SpinJob(30), TINY, vertices=64))
    await asyncio.sleep(0.3)
    await pool.close(grace_s=0.2)
    with pytest.raises(Unavailable):
        await running
    assert all_segments(pool) == []
    assert all([await wait_until_gone(pid) for pid in pids])
    with pytest.raises(Unavailable):
        await pool.run(SpinJob(0), TINY, vertices=64)


async def test_workers_run_at_a_lower_cpu_priority_than_the_service() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    async with CpuPool(workers=2, light_workers=1, warm_up=False, nice=7) as niced:
        pids = niced.worker_pids()
        assert len(pids) == 2
        assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [min(own + 7, 19)] * 2
    with pytest.raises(ValueError, match="nice"):
        CpuPool(workers=1, light_workers=0, nice=20)


async def test_test_hooks_are_refused_by_default() -> None:
    async with CpuPool(workers=1, light_workers=0, warm_up=False) as plain:
        with pytest.raises(ValueError, match="test hook"):
            await plain.run(CrashJob(), TINY, vertices=64)


async def test_the_pool_refuses_fork_and_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        CpuPool(workers=0)
    with pytest.raises(ValueError, match="light_workers"):
        CpuPool(workers=2, light_workers=2)
    with pytest.raises(ValueError, match="start_method"):
        CpuPool(workers=1, start_method="fork")  # type: ignore[arg-type]


# Segments are kept for reuse, and a read-only field already in one is not copied again


@needs_dev_shm
async def test_a_read_only_field_is_copied_once_for_many_read_jobs() -> None:
    async with CpuPool(workers=1, light_workers=0, warm_up=False) as pool:
        field = FIELD.copy()
        field.flags.writeable = False  # as the field cache holds them
        start, end = open_pair(FIELD, GRID)
        want = find_path(GRID, FIELD, start, end)
        copies: list[int] = []
        real_copy = cpu_pool.copy_into

        def counting(segment: object, source: np.ndarray) -> None:
            copies.append(source.nbytes)
            real_copy(segment, source)  # type: ignore[arg-type]

        cpu_pool.copy_into = counting  # type: ignore[assignment]
        try:
            for algorithm in (Algorithm.CATALYTIC, Algorithm.BFS, Algorithm.AUTO):
                job = PathJob(GRID, start, end, algorithm, Cost.UNIT)
                got = await pool.run(job, field, vertices=GRID.vertex_count)
                assert got.value.hops == want.hops
            assert (await pool.run(AnalyzeJob(GRID), field, vertices=GRID.vertex_count)).value
            assert copies == [FIELD.nbytes]
            # A writable array may change behind the segment's back: always copied.
            writable = FIELD.copy()
            await pool.run(AnalyzeJob(GRID), writable, vertices=GRID.vertex_count)
            await pool.run(AnalyzeJob(GRID), writable, vertices=GRID.vertex_count)
            assert len(copies) == 3
            # A transform works on the copy in the segment; the next read copies again.
            out = await pool.run(TransformJob(GRID, Xor(3)), field, vertices=GRID.vertex_count)
            assert out.field is not None
            assert out.field.tobytes() == (FIELD.view(np.uint32) ^ 3).tobytes()
            got = await pool.run(
                PathJob(GRID, start, end, Algorithm.BFS, Cost.UNIT),
                field,
                vertices=GRID.vertex_count,
            )
            assert got.value.hops == want.hops
            assert field.tobytes() == FIELD.tobytes()
        finally:
            cpu_pool.copy_into = real_copy  # type: ignore[assignment]
        assert pool.kept_segments()
        assert segments(pool) == []
    assert all_segments(pool) == []


@needs_dev_shm
async def test_kept_segments_stay_within_their_byte_budget() -> None:
    budget = 3 * FIELD.nbytes
    async with CpuPool(
        workers=2, light_workers=0, warm_up=False, keep_segment_bytes=budget
    ) as pool:
        fields = [np.full(GRID.vertex_count, float(k + 1), dtype=FIELD_DTYPE) for k in range(6)]
        for field in fields:
            field.flags.writeable = False
        for _ in range(2):
            await asyncio.gather(
                *(pool.run(AnalyzeJob(GRID), f, vertices=GRID.vertex_count) for f in fields)
            )
        assert 1 <= len(pool.kept_segments()) <= 3
        assert segments(pool) == []
    assert all_segments(pool) == []
