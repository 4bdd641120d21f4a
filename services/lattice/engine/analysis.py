"""Lattice analysis on the implicit grid: counts, components, diameter, measured memory.

No adjacency is ever built: neighbours come from index arithmetic (row-major, last coordinate
fastest, open boundaries, 2·d neighbours).

- Components are those of the OPEN vertices (not NaN, not +-inf, sign bit clear). Zero open
  vertices means zero components and `is_connected` False ("exactly one component").
- Diameter (hops of the longest shortest path between two connected open vertices):
  - nothing blocked: d·(size-1), exact, in O(1);
  - otherwise a lower bound: every component is searched breadth-first from its lowest vertex r
    (that search labels it), and the largest component (most vertices, lowest index on ties)
    gets a second sweep from the vertex farthest from r (the double sweep). The bound is the
    largest eccentricity seen; 2·ecc(r) bounds each component from above, so the bound is
    reported exact when it meets max 2·ecc(r) over the components, and always for d = 1
    (components are runs, found end to end).
- Memory: `memory_bytes` is the field (4 bytes a vertex); `working_bytes` is the measured peak
  of the arrays the analysis allocated (a bitset of V/8 bytes and an int32 queue of one slot per
  open vertex; none when nothing is blocked).
- What an explicit graph would need, both counting the full lattice (V vertices, E edges):
  `adjacency_list_bytes` is a CSR adjacency (scipy.sparse's layout with int64 indices): indptr
  (V+1)·8 + indices 2E·8; a weighted scipy csgraph adds 2E·8 for its data array.
  `igraph_bytes` is igraph's core graph (igraph_t with 64-bit igraph_integer_t): from/to and the
  two sorted edge indexes oi/ii, 4E·8, plus the vertex offsets os/is, 2(V+1)·8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from services.lattice.engine.field import BYTES_PER_VERTEX, FIELD_DTYPE, OPEN_LIMIT, Field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.memory import WorkingMemory

INDEX_BYTES = 8


@dataclass(frozen=True)
class Analysis:
    """What `analyze` found; see the module docstring for each figure's definition."""

    vertex_count: int
    edge_count: int
    blocked_count: int
    component_count: int
    largest_component_size: int
    is_connected: bool
    diameter: int
    diameter_exact: bool
    diameter_upper_bound: int
    average_degree: float
    density: float
    memory_bytes: int
    working_bytes: int
    adjacency_list_bytes: int
    igraph_bytes: int


def csr_bytes(vertex_count: int, edge_count: int) -> int:
    """A CSR adjacency of the lattice: int64 indptr (V+1) and int64 indices (2E)."""
    return (vertex_count + 1) * INDEX_BYTES + 2 * edge_count * INDEX_BYTES


def igraph_bytes(vertex_count: int, edge_count: int) -> int:
    """igraph's igraph_t: from, to, oi, ii (E each) and os, is (V+1 each), 64-bit integers."""
    return 4 * edge_count * INDEX_BYTES + 2 * (vertex_count + 1) * INDEX_BYTES


def analyze(grid: Grid, field: Field) -> Analysis:
    """Analysis of `field` on `grid`; reads the field only."""
    vertices, edges, n, d = grid.vertex_count, grid.edge_count, grid.size, grid.dimensions
    if field.dtype != FIELD_DTYPE or field.shape != (vertices,) or not field.flags.c_contiguous:
        raise ValueError(f"the field must be a C-contiguous {FIELD_DTYPE} array of V values")
    bits = field.view(np.uint32)
    blocked = int(_count_blocked(bits))
    memory = WorkingMemory()
    if blocked == 0:
        components, largest = 1, vertices
        diameter = upper = d * (n - 1)
    elif blocked == vertices:
        components = largest = diameter = upper = 0
    else:
        unreached = memory.empty((vertices + 7) // 8, np.uint8)
        queue = memory.empty(vertices - blocked, np.int32)
        _open_bitset(bits, unreached)
        components, largest, far, best_first, worst_upper = _components(unreached, n, d, queue)
        _open_bitset(bits, unreached)
        _, _, second = _bfs(unreached, n, d, far, queue)
        memory.release(unreached, queue)
        diameter, upper = max(int(best_first), int(second)), int(worst_upper)
        if d == 1:
            upper = diameter
    return Analysis(
        vertex_count=vertices,
        edge_count=edges,
        blocked_count=blocked,
        component_count=int(components),
        largest_component_size=int(largest),
        is_connected=components == 1,
        diameter=diameter,
        diameter_exact=diameter == upper,
        diameter_upper_bound=upper,
        average_degree=2 * edges / vertices,
        density=edges / (vertices * (vertices - 1) / 2),
        memory_bytes=vertices * BYTES_PER_VERTEX,
        working_bytes=memory.peak_bytes,
        adjacency_list_bytes=csr_bytes(vertices, edges),
        igraph_bytes=igraph_bytes(vertices, edges),
    )


# Kernels (compiled once, cached on disk). A vertex is open when its sign bit is clear and its
# exponent is not all ones (which would make it inf or NaN): its bits are below 0x7F800000.
# Searches read a bitset of the open vertices not reached yet (V/8 bytes, cache-resident for a
# 2**24 lattice) rather than the field and a visited array, and clear bits as they reach them.
_OPEN_LIMIT = OPEN_LIMIT


@numba.njit(cache=True)
def _count_blocked(bits: npt.NDArray[np.uint32]) -> int:
    blocked = 0
    for i in range(bits.size):
        blocked += bits[i] >= _OPEN_LIMIT
    return blocked


@numba.njit(cache=True)
def _open_bitset(bits: npt.NDArray[np.uint32], out: npt.NDArray[np.uint8]) -> None:
    """out bit (i & 7) of byte i >> 3 = vertex i is open."""
    for k in range(out.size):
        byte = 0
        for t in range(min(8, bits.size - 8 * k)):
            byte |= (bits[8 * k + t] < _OPEN_LIMIT) << t
        out[k] = byte


@numba.njit(cache=True)
def _bfs(
    unreached: npt.NDArray[np.uint8], n: int, d: int, start: int, queue: npt.NDArray[np.int32]
) -> tuple[int, int, int]:
    """Breadth-first search from `start` (whose bit is still set) over the set bits, clearing them.

    Returns (vertices reached, the last one reached: a farthest, its distance: the eccentricity).
    """
    unreached[start >> 3] &= ~np.uint8(1 << (start & 7))
    queue[0] = start
    head, tail, level_end, level = 0, 1, 1, 0
    last = start
    inverse = 1.0 / n
    while head < tail:
        v = int(queue[head])
        head += 1
        last = v
        rest, stride = v, 1
        for _ in range(d):
            # rest // n by a float multiply: rest < 2**24 and n <= 100 keep (rest + 0.5) / n at
            # least 0.5 / n away from an integer, far beyond float64 rounding.
            above = int((rest + 0.5) * inverse)
            c = rest - above * n
            rest = above
            if c > 0:
                w = v - stride
                byte, bit = unreached[w >> 3], np.uint8(1 << (w & 7))
                if byte & bit:
                    unreached[w >> 3] = byte & ~bit
                    queue[tail] = w
                    tail += 1
            if c < n - 1:
                w = v + stride
                byte, bit = unreached[w >> 3], np.uint8(1 << (w & 7))
                if byte & bit:
                    unreached[w >> 3] = byte & ~bit
                    queue[tail] = w
                    tail += 1
            stride *= n
        if head == level_end and head < tail:
            level += 1
            level_end = tail
    return tail, last, level


@numba.njit(cache=True)
def _components(
    unreached: npt.NDArray[np.uint8], n: int, d: int, queue: npt.NDArray[np.int32]
) -> tuple[int, int, int, int, int]:
    """Labels every component by a search from its lowest vertex, emptying `unreached`.

    Returns (components, largest size, a vertex farthest from the largest one's lowest vertex,
    the largest eccentricity of those lowest vertices, max over components of 2·that
    eccentricity: an upper bound on the diameter).
    """
    components, largest, far, best, upper = 0, 0, -1, 0, 0
    for k in range(unreached.size):
        while unreached[k] != 0:
            byte, t = unreached[k], 0
            while not (byte >> t) & 1:
                t += 1
            size, last, eccentricity = _bfs(unreached, n, d, 8 * k + t, queue)
            components += 1
            if size > largest:
                largest, far = size, last
            best = max(best, eccentricity)
            upper = max(upper, 2 * eccentricity)
    return components, largest, far, best, upper
