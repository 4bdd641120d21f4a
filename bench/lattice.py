"""The benchmark lattices: the engine's seeded random fill, open-vertex edges from the strides."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.common.errors import NotFound
from services.lattice.engine.field import OPEN_LIMIT, Field, checksum
from services.lattice.engine.fills import RandomFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, find_path

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# One lattice for every path benchmark: values uniform in [1, 2), 20% of vertices blocked (+inf).
FILL_SEED = 20_240_601
LOW, HIGH, BLOCKED_FRACTION = 1.0, 2.0, 0.2
PAIR_SEED = 7


@dataclass(frozen=True)
class Lattice:
    """A filled lattice, its open vertices, and the endpoints every method is asked about."""

    grid: Grid
    fill: RandomFill
    field: Field
    open: npt.NDArray[np.bool_]  # flat, True where a vertex is open
    blocked_count: int
    checksum: str
    corner: tuple[int, int]  # the open vertices nearest (in index order) to two opposite corners
    pairs: tuple[tuple[int, int], ...]  # random open pairs, each connected

    def coordinates(self, vertex: int) -> tuple[int, ...]:
        return self.grid.coordinates_of(vertex)

    def describe(self) -> str:
        grid, v = self.grid, self.grid.vertex_count
        return (
            f"{grid.size}^{grid.dimensions} = {v:,} vertices, {self.blocked_count:,} blocked"
            f" ({self.blocked_count / v:.1%}); RandomFill(seed={self.fill.seed},"
            f" low={self.fill.low}, high={self.fill.high},"
            f" blocked_fraction={self.fill.blocked_fraction})"
        )


def make_lattice(
    dimensions: int,
    size: int,
    *,
    pairs: int,
    seed: int = FILL_SEED,
    blocked_fraction: float = BLOCKED_FRACTION,
) -> Lattice:
    """The benchmark lattice with `pairs` random open pairs (connected: the engine's BFS says)."""
    grid = Grid.of(dimensions, size)
    fill = RandomFill(seed=seed, low=LOW, high=HIGH, blocked_fraction=blocked_fraction)
    field = make_field(grid, fill)
    is_open = field.view(np.uint32) < OPEN_LIMIT
    open_vertices = np.flatnonzero(is_open)
    if open_vertices.size < 2:
        raise ValueError("the benchmark lattice needs at least two open vertices")
    corner = (int(open_vertices[0]), int(open_vertices[-1]))
    rng = np.random.default_rng(PAIR_SEED)
    chosen: list[tuple[int, int]] = []
    attempts = 0
    while len(chosen) < pairs:
        attempts += 1
        if attempts > 100 * (pairs + 1):
            raise ValueError("could not find connected random pairs on the benchmark lattice")
        s, t = (int(x) for x in rng.choice(open_vertices, size=2, replace=False))
        try:
            find_path(
                grid, field, grid.coordinates_of(s), grid.coordinates_of(t), algorithm=Algorithm.BFS
            )
        except NotFound:
            continue
        chosen.append((s, t))
    return Lattice(
        grid=grid,
        fill=fill,
        field=field,
        open=is_open,
        blocked_count=int(grid.vertex_count - open_vertices.size),
        checksum=checksum(field),
        corner=corner,
        pairs=tuple(chosen),
    )


def undirected_edges(lattice: Lattice) -> tuple[IntArray, IntArray]:
    """Every edge between two open neighbours once, as (u, u + stride of its axis).

    Vectorised per axis on the d-dimensional view: no Python loop over vertices or edges.
    """
    grid = lattice.grid
    d = grid.dimensions
    is_open = lattice.open.reshape(grid.shape)
    index = np.arange(grid.vertex_count, dtype=np.int64).reshape(grid.shape)
    tails: list[IntArray] = []
    heads: list[IntArray] = []
    for axis, stride in enumerate(grid.strides):
        low: list[slice] = [slice(None)] * d
        high: list[slice] = [slice(None)] * d
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        both = is_open[tuple(low)] & is_open[tuple(high)]
        tail = index[tuple(low)][both]
        tails.append(tail)
        heads.append(tail + stride)
    return np.concatenate(tails), np.concatenate(heads)


def weighted_arcs(lattice: Lattice) -> tuple[IntArray, IntArray, FloatArray]:
    """Both directions of every open edge, u -> v weighing field[v] (FIELD cost) as float64."""
    u, v = undirected_edges(lattice)
    tails, heads = np.concatenate([u, v]), np.concatenate([v, u])
    weights = lattice.field[heads].astype(np.float64)
    return tails, heads, weights


class Mismatch(AssertionError):
    """A method's answer differs from the engine's (or is not a valid path): the run fails."""


def require(condition: bool, message: str) -> None:
    """Raises Mismatch(message) unless `condition` (not an assert: `python -O` keeps it)."""
    if not condition:
        raise Mismatch(message)


def check_path(grid: Grid, is_open: npt.NDArray[np.bool_], path: IntArray, s: int, t: int) -> None:
    """Mismatch unless `path` runs from s to t through open vertices, one axis step a hop."""
    require(path.ndim == 1 and path.size >= 1, "empty path")
    require(
        int(path[0]) == s and int(path[-1]) == t,
        f"path runs {path[0]}..{path[-1]}, not {s}..{t}",
    )
    require(bool(is_open[path].all()), "path goes through a blocked vertex")
    if path.size > 1:
        coordinates = np.stack(np.unravel_index(path, grid.shape))
        steps = np.abs(np.diff(coordinates, axis=1)).sum(axis=0)
        require(bool((steps == 1).all()), "path has a step between non-neighbours")


def path_cost(lattice: Lattice, path: IntArray) -> float:
    """FIELD cost of a path: the float64 sum of field[v] over every vertex but the first."""
    return float(lattice.field[path[1:]].astype(np.float64).sum())
