"""Benchmark 6: what the compute pool costs on top of the engine (shared-memory copies and IPC).

The service never runs the engine on its event loop: it awaits a `Router` over the CPU worker
pool, which copies the field into a shared-memory segment, sends the job to a worker process,
waits for the reply and (for transforms) copies the field back out. This times the same calls
directly in-process and through `Router.find_path`/`Router.transform` (COMPUTE_DEVICE=cpu), and
reports the worker's own compute time (`CpuPool.run`'s `compute_ms`, which includes mapping the
segment and faulting its pages in), so operators can see where a request's time goes. The
overhead is shown both against the direct call and against the worker's compute time: the
second is the copies and IPC alone, whatever the compute's noise between runs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.lattice import Lattice, require
from bench.report import Progress, Stats, ms, ms_pair, table
from services.lattice.engine.compute import CpuBackend, Router
from services.lattice.engine.cpu_pool import CpuPool, Lane, PathJob, TransformJob
from services.lattice.engine.fills import ConstantFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, find_path
from services.lattice.engine.transforms import Xor, apply_transform


@dataclass(frozen=True)
class _PathCase:
    label: str
    grid: Grid
    field: Any
    start: tuple[int, ...]
    end: tuple[int, ...]
    cost: Cost
    blocked_count: int


def run(
    lattice: Lattice,
    transform_shape: tuple[int, int],
    workers: int,
    repeats: int,
    progress: Progress,
) -> dict[str, Any]:
    return asyncio.run(_run(lattice, transform_shape, workers, repeats, progress))


async def _run(
    lattice: Lattice,
    transform_shape: tuple[int, int],
    workers: int,
    repeats: int,
    progress: Progress,
) -> dict[str, Any]:
    grid, size, d = lattice.grid, lattice.grid.size, lattice.grid.dimensions
    unblocked = make_field(grid, ConstantFill(1.0))
    shape = f"{size}^{d}"
    start, end = lattice.coordinates(lattice.corner[0]), lattice.coordinates(lattice.corner[1])
    cases = [
        _PathCase(f"find_path AUTO UNIT, {shape} blocked, corner", grid, lattice.field,
                  start, end, Cost.UNIT, lattice.blocked_count),
        _PathCase(f"find_path AUTO FIELD, {shape} blocked, corner", grid, lattice.field,
                  start, end, Cost.FIELD, lattice.blocked_count),
        _PathCase(f"find_path AUTO UNIT, {shape} unblocked, blocked_count=0 (light lane)", grid,
                  unblocked, (0,) * d, (size - 1,) * d, Cost.UNIT, 0),
    ]  # fmt: skip
    pool = CpuPool(workers=workers)
    began = time.perf_counter()
    await pool.start()
    start_s = time.perf_counter() - began
    progress(f"pool: {workers} workers started and warmed up in {start_s:.2f} s")
    router = Router(CpuBackend(pool), None, mode="cpu")
    rows: list[dict[str, Any]] = []
    cells: list[list[str]] = []
    try:
        for case in cases:
            direct, via, elapsed, compute = Stats(), Stats(), Stats(), Stats()
            for _ in range(repeats):
                t0 = time.perf_counter()
                expected = find_path(
                    case.grid, case.field, case.start, case.end,
                    cost=case.cost, blocked_count=case.blocked_count,
                )  # fmt: skip
                direct.add(time.perf_counter() - t0)
                t0 = time.perf_counter()
                outcome = await router.find_path(
                    case.grid, case.field, case.start, case.end, Algorithm.AUTO, case.cost,
                    blocked_count=case.blocked_count,
                )  # fmt: skip
                via.add(time.perf_counter() - t0)
                elapsed.add(outcome.elapsed_ms / 1000)
                require(
                    outcome.result.hops == expected.hops
                    and abs(outcome.result.cost - expected.cost) <= 1e-9 * max(1.0, expected.cost),
                    f"pool: {case.label}: the pool's answer differs from the direct call",
                )
                job = PathJob(
                    case.grid, case.start, case.end, Algorithm.AUTO, case.cost, case.blocked_count
                )
                lane = Lane.LIGHT if case.blocked_count == 0 else Lane.HEAVY
                raw = await pool.run(job, case.field, vertices=case.grid.vertex_count, lane=lane)
                compute.add(raw.compute_ms / 1000)
            rows.append(_row(case.label, direct, via, elapsed, compute))
            cells.append(_cells(case.label, direct, via, elapsed, compute))
            progress(f"pool: {case.label}: direct {ms(direct.min)} ms, via pool {ms(via.min)} ms")
        # A transform copies the field in and out again: the worst case for the pool.
        t_dims, t_size = transform_shape
        t_grid = Grid.of(t_dims, t_size)
        t_field = make_field(t_grid, ConstantFill(1.0))
        label = f"transform XOR, {t_size}^{t_dims} ({t_field.nbytes / 2**20:.0f} MiB field)"
        direct, via, elapsed, compute = Stats(), Stats(), Stats(), Stats()
        scratch = t_field.copy()
        for _ in range(repeats):
            t0 = time.perf_counter()
            apply_transform(t_grid, scratch, Xor(0x5A5A_5A5A))
            direct.add(time.perf_counter() - t0)
            t0 = time.perf_counter()
            outcome_t = await router.transform(t_grid, t_field, Xor(0x5A5A_5A5A))
            via.add(time.perf_counter() - t0)
            elapsed.add(outcome_t.elapsed_ms / 1000)
            require(
                np.array_equal(
                    outcome_t.field.view(np.uint32), t_field.view(np.uint32) ^ np.uint32(0x5A5A5A5A)
                ),
                "pool: the pool's XOR differs from numpy's",
            )
            raw_t = await pool.run(
                TransformJob(t_grid, Xor(0x5A5A_5A5A)), t_field, vertices=t_grid.vertex_count
            )
            compute.add(raw_t.compute_ms / 1000)
        rows.append(_row(label, direct, via, elapsed, compute))
        cells.append(_cells(label, direct, via, elapsed, compute))
        progress(f"pool: {label}: direct {ms(direct.min)} ms, via pool {ms(via.min)} ms")
    finally:
        await router.close()
    columns = [
        "call",
        "n",
        "direct ms (min / med)",
        "via Router ms (min / med)",
        "outcome.elapsed_ms (min)",
        "in-worker compute ms (min)",
        "overhead vs direct ms (min - min)",
        "overhead vs in-worker compute ms (min - min)",
    ]
    title = (
        f"CpuPool with {workers} workers (forkserver; start and warm-up {start_s:.2f} s),"
        " Router mode=cpu; direct = the engine function in this process"
    )
    return {
        "workers": workers,
        "start_s": start_s,
        "rows": rows,
        "tables": [f"**{title}**\n\n" + table(columns, cells)],
    }


def _row(label: str, direct: Stats, via: Stats, elapsed: Stats, compute: Stats) -> dict[str, Any]:
    return {
        "call": label,
        "direct": direct.to_json(),
        "via_router": via.to_json(),
        "outcome_elapsed": elapsed.to_json(),
        "worker_compute": compute.to_json(),
        "overhead_vs_direct_s": via.min - direct.min,
        "overhead_vs_worker_compute_s": via.min - compute.min,
    }


def _cells(label: str, direct: Stats, via: Stats, elapsed: Stats, compute: Stats) -> list[str]:
    return [
        label,
        str(len(direct.samples)),
        ms_pair(direct),
        ms_pair(via),
        ms(elapsed.min),
        ms(compute.min),
        ms(via.min - direct.min),
        ms(via.min - compute.min),
    ]
