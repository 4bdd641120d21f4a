"""Optimal paths on an implicit lattice: closed form, bidirectional BFS, Dijkstra, A*, catalytic.

Paths run through open vertices only (field.py says which are blocked). UNIT cost counts hops;
FIELD cost charges field[v] for entering v, so a path's cost is the float64 sum of the field over
vertices[1:]. Every algorithm returns an optimal path. No adjacency is ever built: neighbours come
from index arithmetic in the numba kernels of path_kernels.py and catalytic.py.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from services.common.errors import InvalidArgument, NotFound
from services.lattice.engine import path_kernels as kernels
from services.lattice.engine.catalytic import catalytic_path
from services.lattice.engine.field import FIELD_DTYPE, OPEN_LIMIT, Field, checksum
from services.lattice.engine.geometry import Grid

U32Array = npt.NDArray[np.uint32]

# AUTO for FIELD cost tries A* first when its bound, (cheapest open value) * manhattan, is a
# fair share of the true cost: when the cheapest open value is at least ASTAR_MIN_MAX_RATIO of
# the dearest. Measured on 100^3 lattices, 20% blocked: A* then settles 5-50x fewer vertices
# than Dijkstra between random pairs (3-4x faster), but about as many corner to corner, where
# each settle costs it 2-3x more. So A* may settle V / ASTAR_BUDGET_DIVISOR vertices; when that
# runs out Dijkstra takes over, which bounds the loss at about 15% of Dijkstra's time (small
# lattices get at least ASTAR_MIN_BUDGET).
ASTAR_MIN_MAX_RATIO = 0.25
ASTAR_BUDGET_DIVISOR = 16
# AUTO for UNIT cost on a blocked lattice: A* with the Manhattan bound settles a thin tube around
# a straight line when obstacles are sparse (about 1 ms against 22 ms for bidirectional BFS on
# 100^3, 20% blocked); where obstacles force detours it gives up after V / 32 settles and the
# bidirectional BFS answers, a bounded overhead.
ASTAR_UNIT_BUDGET_DIVISOR = 32
ASTAR_MIN_BUDGET = 1024
# Dijkstra's distances for Dinitz's buckets (path_kernels.dinitz): 8 bytes a vertex, spent where
# the lattice has at most 2^23 vertices (64 MiB); larger ones keep the calendar queue, whose
# memory is the frontier's.
DIST_DTYPE = np.dtype(np.float64)
DINITZ_MAX_DIST_BYTES = 64 * 1024 * 1024


class Algorithm(enum.Enum):
    """The path algorithms a caller may ask for; AUTO picks the fastest exact one."""

    AUTO = "AUTO"
    BFS = "BFS"
    DIJKSTRA = "DIJKSTRA"
    ASTAR = "ASTAR"
    CATALYTIC = "CATALYTIC"


class Cost(enum.Enum):
    """UNIT: every hop costs 1. FIELD: entering vertex v costs field[v]."""

    UNIT = "UNIT"
    FIELD = "FIELD"


@dataclass(frozen=True)
class PathResult:
    """An optimal path and how it was found."""

    vertices: U32Array  # vertex indices, start first, end last, consecutive ones adjacent
    hops: int
    cost: float  # hops for UNIT; the float64 sum of field[v] over vertices[1:] for FIELD
    algorithm: Algorithm  # the algorithm that ran (AUTO resolved)
    # "closed_form", "bidirectional_bfs", "dijkstra", "astar", "astar_then_dijkstra" or
    # "astar_then_bidirectional_bfs" (AUTO: a budgeted A* ran out), or "catalytic_bfs"
    method: str
    checksum_before: str  # of the field's bytes, before the search ...
    checksum_after: str  # ... and after it; equal, or the call raises
    # Working memory the search allocated (sum of its arrays' nbytes): beyond the field, and not
    # counting the returned vertices.
    extra_bytes: int
    visited: int  # vertices expanded or settled, over every search run (0 for the closed form)


def find_path(
    grid: Grid,
    field: Field,
    start: Sequence[int],
    end: Sequence[int],
    *,
    algorithm: Algorithm = Algorithm.AUTO,
    cost: Cost = Cost.UNIT,
    blocked_count: int | None = None,
) -> PathResult:
    """An optimal path from start to end (coordinates) through open vertices.

    blocked_count, when the caller knows it exactly (the service keeps it with the lattice), lets
    AUTO skip scanning the field for blocked vertices. AUTO: the closed form when nothing is
    blocked and the cost is UNIT (or FIELD with one value everywhere); else for UNIT a budgeted
    A* (see ASTAR_UNIT_BUDGET_DIVISOR), then bidirectional BFS if it gives up; for FIELD, a
    budgeted A* first when the heuristic is strong (see ASTAR_MIN_MAX_RATIO), else or after
    that Dijkstra.

    Raises InvalidArgument naming `start`/`end` (wrong length, out of range, blocked) or
    `algorithm` (BFS/CATALYTIC with FIELD cost), NotFound when end is not reachable, and
    FieldNotRestoredError (an internal fault) should CATALYTIC ever fail to restore the field.
    """
    bits = _field_bits(grid, field, writable=algorithm is Algorithm.CATALYTIC)
    s, t = _endpoints(grid, bits, start, end, algorithm, cost)
    unit = cost is Cost.UNIT
    if algorithm is Algorithm.CATALYTIC:
        return _catalytic(grid, field, s, t, start, end)
    before = checksum(field)
    if s == t:
        run = _Run(np.array([s], np.uint32), 0.0, "closed_form", 0, 0)
    elif algorithm is Algorithm.AUTO:
        algorithm, run = _auto(grid, field, bits, s, t, unit, blocked_count)
    elif algorithm is Algorithm.BFS:
        run = _bfs(grid, bits, s, t)
    else:
        low, high = (1.0, 1.0) if unit else kernels.open_value_range(bits)
        if algorithm is Algorithm.DIJKSTRA:
            run = _dijkstra(grid, field, bits, s, t, unit, low, high)
        else:
            run = _astar(grid, field, bits, s, t, unit, low, high)
    if algorithm is Algorithm.AUTO:
        algorithm = Algorithm.BFS if unit else Algorithm.DIJKSTRA
    if run.vertices is None:
        raise _no_path(start, end)
    hops = int(run.vertices.size) - 1
    return PathResult(
        vertices=run.vertices,
        hops=hops,
        cost=float(hops) if unit else run.cost,
        algorithm=algorithm,
        method=run.method,
        checksum_before=before,
        checksum_after=checksum(field),
        extra_bytes=run.extra_bytes,
        visited=run.visited,
    )


def warm_up() -> None:
    """Compiles every path kernel (or loads it from numba's on-disk cache) on a tiny lattice.

    A process that will answer path requests calls this once at start, so that no request pays
    the seconds of a first compilation. (A read-only field compiles the kernels once more, on
    first use; the service's fields are writable.)
    """
    grid = Grid(2, 3)
    field = np.array([1, 1, 1, 1, np.inf, 1, 1, 1, 0.5], dtype=FIELD_DTYPE)
    for algorithm in Algorithm:
        find_path(grid, field, (0, 0), (2, 2), algorithm=algorithm)
    for algorithm in (Algorithm.AUTO, Algorithm.DIJKSTRA, Algorithm.ASTAR):
        find_path(grid, field, (0, 0), (2, 2), algorithm=algorithm, cost=Cost.FIELD)
    # A step that costs nothing: Dinitz's buckets do not apply, the calendar queue answers.
    free_step = field.copy()
    free_step[8] = 0.0
    find_path(grid, free_step, (0, 0), (2, 2), algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD)


@dataclass(frozen=True)
class _Run:
    vertices: U32Array | None
    cost: float
    method: str
    extra_bytes: int
    visited: int
    gave_up: bool = False  # a budgeted A* that ran out


def _field_bits(grid: Grid, field: Field, *, writable: bool) -> U32Array:
    """The field's raw bits as a flat uint32 view (no copy); ValueError for a misused field."""
    if not isinstance(field, np.ndarray) or field.dtype != FIELD_DTYPE:
        raise ValueError(f"field must be a numpy array of {FIELD_DTYPE}")
    if field.size != grid.vertex_count or not field.flags.c_contiguous:
        raise ValueError(f"field must be C-contiguous with {grid.vertex_count} values")
    if grid.vertex_count >= 2**31:
        raise ValueError("the path kernels index vertices with int32")
    if writable and not field.flags.writeable:
        raise ValueError("CATALYTIC borrows the field, so it must be writable")
    bits: U32Array = field.reshape(-1).view(np.uint32)
    return bits


def _endpoints(
    grid: Grid,
    bits: U32Array,
    start: Sequence[int],
    end: Sequence[int],
    algorithm: Algorithm,
    cost: Cost,
) -> tuple[int, int]:
    """Vertex indices of start and end; InvalidArgument listing every problem found."""
    violations: list[tuple[str, str]] = []
    indices: list[int] = []
    for name, coordinates in (("start", start), ("end", end)):
        try:
            index = grid.index_of(coordinates, field=name)
        except InvalidArgument as error:
            violations += error.violations
            continue
        if bits[index] >= OPEN_LIMIT:
            value = bits[index : index + 1].view(np.float32)[0]
            violations.append((name, f"vertex {tuple(coordinates)} is blocked (value {value})"))
        indices.append(index)
    if cost is Cost.FIELD and algorithm in (Algorithm.BFS, Algorithm.CATALYTIC):
        violations.append(
            (
                "algorithm",
                f"{algorithm.value} needs cost UNIT; use DIJKSTRA, ASTAR or AUTO for FIELD cost",
            )
        )
    if violations:
        raise InvalidArgument.of(violations)
    return indices[0], indices[1]


def _strides(grid: Grid) -> npt.NDArray[np.int64]:
    return np.array(grid.strides, dtype=np.int64)


def _auto(
    grid: Grid,
    field: Field,
    bits: U32Array,
    s: int,
    t: int,
    unit: bool,
    blocked_count: int | None,
) -> tuple[Algorithm, _Run]:
    """The fastest exact method for the input (see find_path), and what it found."""
    if unit:
        blocked = kernels.any_blocked(bits) if blocked_count is None else blocked_count > 0
        if not blocked:
            return Algorithm.BFS, _Run(_closed_form(grid, s, t), 0.0, "closed_form", 0, 0)
        budget = max(ASTAR_MIN_BUDGET, grid.vertex_count // ASTAR_UNIT_BUDGET_DIVISOR)
        tried = _astar(grid, field, bits, s, t, unit, 1.0, 1.0, budget)
        if not tried.gave_up:
            return Algorithm.ASTAR, tried
        run = _bfs(grid, bits, s, t)
        return Algorithm.BFS, replace(
            run,
            method="astar_then_bidirectional_bfs",
            extra_bytes=max(run.extra_bytes, tried.extra_bytes),
            visited=run.visited + tried.visited,
        )
    if blocked_count in (None, 0) and kernels.uniform_open(bits):
        path = _closed_form(grid, s, t)
        hops_cost = float(path.size - 1) * float(field.reshape(-1)[0])
        return Algorithm.DIJKSTRA, _Run(path, hops_cost, "closed_form", 0, 0)
    low, high = kernels.open_value_range(bits)
    if low >= ASTAR_MIN_MAX_RATIO * high and low > 0.0:
        budget = max(ASTAR_MIN_BUDGET, grid.vertex_count // ASTAR_BUDGET_DIVISOR)
        tried = _astar(grid, field, bits, s, t, unit, low, high, budget)
        if not tried.gave_up:
            return Algorithm.ASTAR, tried
        run = _dijkstra(grid, field, bits, s, t, unit, low, high)
        # The work and memory of the abandoned attempt count too (its arrays are gone by now).
        extra = max(run.extra_bytes, tried.extra_bytes)
        return Algorithm.DIJKSTRA, replace(
            run,
            method="astar_then_dijkstra",
            extra_bytes=extra,
            visited=run.visited + tried.visited,
        )
    return Algorithm.DIJKSTRA, _dijkstra(grid, field, bits, s, t, unit, low, high)


def _closed_form(grid: Grid, s: int, t: int) -> U32Array:
    """A shortest path on the unblocked grid: walk each axis in turn, O(d * size)."""
    pieces = [np.array([s], dtype=np.int64)]
    v = s
    for a, b, stride in zip(
        grid.coordinates_of(s), grid.coordinates_of(t), grid.strides, strict=True
    ):
        if a != b:
            step = stride if b > a else -stride
            pieces.append(v + step * np.arange(1, abs(b - a) + 1, dtype=np.int64))
            v += step * abs(b - a)
    path: U32Array = np.concatenate(pieces).astype(np.uint32)
    return path


def _bfs(grid: Grid, bits: U32Array, s: int, t: int) -> _Run:
    strides = _strides(grid)
    state = np.zeros(grid.vertex_count, np.uint8)
    queue = np.empty(grid.vertex_count, np.int32)
    found, expanded, path = kernels.bidirectional_bfs(bits, grid.size, strides, s, t, state, queue)
    extra = state.nbytes + queue.nbytes + strides.nbytes
    return _Run(path if found else None, 0.0, "bidirectional_bfs", extra, expanded)


def _dijkstra(
    grid: Grid,
    field: Field,
    bits: U32Array,
    s: int,
    t: int,
    unit: bool,
    low: float,
    high: float,
) -> _Run:
    """low, high: the cheapest and dearest step (both 1 for UNIT). Dinitz's buckets where they
    apply and their distance array is within DINITZ_MAX_DIST_BYTES, else the calendar queue."""
    strides = _strides(grid)
    state = np.zeros(grid.vertex_count, np.uint8)
    flat = field.reshape(-1)
    if (
        kernels.dinitz_applies(low, high)
        and grid.vertex_count * DIST_DTYPE.itemsize <= DINITZ_MAX_DIST_BYTES
    ):
        dist = np.empty(grid.vertex_count, DIST_DTYPE)
        found, settled, queue_bytes, total, path = kernels.dinitz(
            flat,
            bits,
            grid.size,
            strides,
            s,
            t,
            unit=unit,
            low=low,
            high=high,
            state=state,
            dist=dist,
        )
        queue_bytes += dist.nbytes
    else:
        found, settled, queue_bytes, total, path = kernels.dijkstra(
            flat, bits, grid.size, strides, s, t, unit=unit, window=high, state=state
        )
    extra = state.nbytes + queue_bytes + strides.nbytes
    return _Run(path if found else None, total, "dijkstra", extra, settled)


def _astar(
    grid: Grid,
    field: Field,
    bits: U32Array,
    s: int,
    t: int,
    unit: bool,
    h_scale: float,
    high: float,
    budget: int | None = None,
) -> _Run:
    """h_scale: the cheapest step, high: the dearest (both 1 for UNIT); budget: settled vertices
    before giving up, unlimited by default."""
    strides = _strides(grid)
    state = np.zeros(grid.vertex_count, np.uint8)
    dist = np.empty(grid.vertex_count, np.float64)
    coord = np.empty(grid.dimensions, np.int64)
    target = np.empty(grid.dimensions, np.int64)
    status, settled, queue_bytes, total, path = kernels.astar(
        field.reshape(-1),
        bits,
        grid.size,
        strides,
        s,
        t,
        unit=unit,
        h_scale=h_scale,
        window=high + h_scale,
        budget=grid.vertex_count + 1 if budget is None else budget,
        dist=dist,
        state=state,
        coord=coord,
        target=target,
    )
    extra = state.nbytes + dist.nbytes + queue_bytes + strides.nbytes + 2 * coord.nbytes
    found, gave_up = status == kernels.FOUND, status == kernels.OUT_OF_BUDGET
    return _Run(path if found else None, total, "astar", extra, settled, gave_up)


def _no_path(start: Sequence[int], end: Sequence[int]) -> NotFound:
    return NotFound(
        f"no path from start to end: {tuple(start)} and {tuple(end)} are not connected through"
        " open vertices"
    )


def _catalytic(
    grid: Grid, field: Field, s: int, t: int, start: Sequence[int], end: Sequence[int]
) -> PathResult:
    if s == t:
        before = checksum(field)
        path: U32Array | None = np.array([s], np.uint32)
        expanded, extra, after = 0, 0, checksum(field)
    else:
        strides = _strides(grid)
        run = catalytic_path(field, grid.size, strides, s, t)
        path, expanded, extra = run.path, run.expanded, run.extra_bytes + strides.nbytes
        before, after = run.checksum_before, run.checksum_after
    if path is None:
        raise _no_path(start, end)
    hops = int(path.size) - 1
    return PathResult(
        vertices=path,
        hops=hops,
        cost=float(hops),
        algorithm=Algorithm.CATALYTIC,
        method="catalytic_bfs",
        checksum_before=before,
        checksum_after=after,
        extra_bytes=extra,
        visited=expanded,
    )
