"""Every method the path benchmarks time: the engine's algorithms and the peers' equivalents.

A method has an optional `build` (the peer's graph, made from the lattice's vectorised edge
arrays; the engine has none, the field is the lattice) and a `query` for one s-t pair. The peers
are timed through their public Python APIs, as a user would call them, on vertex ids equal to
the lattice's vertex indices (blocked vertices stay as isolated vertices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import igraph
import networkx
import numpy as np
import rustworkx
import scipy.sparse
import scipy.sparse.csgraph

from bench.lattice import (
    IntArray,
    Lattice,
    Mismatch,
    path_cost,
    undirected_edges,
    weighted_arcs,
)
from services.lattice.engine.paths import Algorithm, Cost, find_path

UNIT, FIELD = "unit", "field"


@dataclass(frozen=True)
class Answer:
    """What a method found: hop count and cost, the path when the API returns one."""

    hops: int | None  # None when the API returns only a FIELD cost
    cost: float
    path: IntArray | None
    extra_bytes: int | None = None  # the engine's own report of its working memory
    engine_method: str | None = None  # the engine's PathResult.method (what AUTO chose)


@dataclass(frozen=True)
class Method:
    key: str  # stable id, e.g. "unit/igraph"
    library: str  # "ours", "igraph", "scipy", "rustworkx", "networkx"
    label: str
    query: Callable[[Any, Lattice, int, int], Answer]
    build: Callable[[Lattice], Any] | None = None
    note: str = ""

    @property
    def ours(self) -> bool:
        return self.library == "ours"


# The engine.


def _ours(
    algorithm: Algorithm, cost: Cost, *, known_blocked: bool = False
) -> Callable[..., Answer]:
    def query(_: Any, lattice: Lattice, s: int, t: int) -> Answer:
        result = find_path(
            lattice.grid,
            lattice.field,
            lattice.coordinates(s),
            lattice.coordinates(t),
            algorithm=algorithm,
            cost=cost,
            blocked_count=lattice.blocked_count if known_blocked else None,
        )
        return Answer(
            result.hops,
            result.cost,
            result.vertices.astype(np.int64),
            result.extra_bytes,
            result.method,
        )

    return query


# Peers, UNIT cost (undirected, unweighted).


def _igraph_unit_build(lattice: Lattice) -> igraph.Graph:
    u, v = undirected_edges(lattice)
    graph = igraph.Graph(n=lattice.grid.vertex_count, directed=False)
    # add_edges takes the whole (E, 2) array in one call.
    graph.add_edges(np.column_stack([u, v]))
    return graph


def _igraph_unit_query(graph: igraph.Graph, lattice: Lattice, s: int, t: int) -> Answer:
    path = np.asarray(graph.get_shortest_path(s, t), dtype=np.int64)
    return _from_path(lattice, path, unit=True)


def _scipy_unit_build(lattice: Lattice) -> scipy.sparse.csr_array:
    # Both directions stored, queried with directed=True: scipy would otherwise symmetrise the
    # matrix again on every call.
    u, v = undirected_edges(lattice)
    n = lattice.grid.vertex_count
    rows, columns = np.concatenate([u, v]), np.concatenate([v, u])
    return scipy.sparse.csr_array((np.ones(rows.size), (rows, columns)), shape=(n, n))


def _scipy_bfs_query(graph: scipy.sparse.csr_array, lattice: Lattice, s: int, t: int) -> Answer:
    _, predecessors = scipy.sparse.csgraph.breadth_first_order(
        graph, s, directed=True, return_predecessors=True
    )
    return _from_path(lattice, _walk_back(predecessors, s, t), unit=True)


def _scipy_unweighted_query(
    graph: scipy.sparse.csr_array, lattice: Lattice, s: int, t: int
) -> Answer:
    _, predecessors = scipy.sparse.csgraph.shortest_path(
        graph, method="D", directed=True, unweighted=True, indices=s, return_predecessors=True
    )
    return _from_path(lattice, _walk_back(predecessors, s, t), unit=True)


def _rustworkx_unit_build(lattice: Lattice) -> rustworkx.PyGraph:
    u, v = undirected_edges(lattice)
    graph = rustworkx.PyGraph(node_count_hint=lattice.grid.vertex_count, edge_count_hint=u.size)
    graph.add_nodes_from(range(lattice.grid.vertex_count))
    graph.add_edges_from_no_data(list(zip(u.tolist(), v.tolist(), strict=True)))
    return graph


def _unit_weight(_: object) -> float:
    return 1.0


def _rustworkx_lengths_query(graph: rustworkx.PyGraph, lattice: Lattice, s: int, t: int) -> Answer:
    lengths = rustworkx.dijkstra_shortest_path_lengths(graph, s, _unit_weight, goal=t)
    hops = int(lengths[t])
    return Answer(hops, float(hops), None)


def _rustworkx_layers_query(graph: rustworkx.PyGraph, lattice: Lattice, s: int, t: int) -> Answer:
    for depth, layer in enumerate(rustworkx.bfs_layers(graph, [s])):
        if t in layer:
            return Answer(depth, float(depth), None)
    raise Mismatch(f"rustworkx bfs_layers did not reach {t} from {s}")


def _networkx_unit_build(lattice: Lattice) -> networkx.Graph:
    u, v = undirected_edges(lattice)
    graph = networkx.Graph()
    graph.add_nodes_from(range(lattice.grid.vertex_count))
    graph.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
    return graph


def _networkx_unit_query(graph: networkx.Graph, lattice: Lattice, s: int, t: int) -> Answer:
    path = np.asarray(networkx.bidirectional_shortest_path(graph, s, t), dtype=np.int64)
    return _from_path(lattice, path, unit=True)


# Peers, FIELD cost: directed, u -> v weighs field[v].


def _scipy_field_build(lattice: Lattice) -> scipy.sparse.csr_array:
    tails, heads, weights = weighted_arcs(lattice)
    n = lattice.grid.vertex_count
    return scipy.sparse.csr_array((weights, (tails, heads)), shape=(n, n))


def _scipy_dijkstra_query(
    graph: scipy.sparse.csr_array, lattice: Lattice, s: int, t: int
) -> Answer:
    # Single source; scipy has no early exit at a target (`limit` would need the answer).
    distances, predecessors = scipy.sparse.csgraph.dijkstra(
        graph, directed=True, indices=s, return_predecessors=True
    )
    path = _walk_back(predecessors, s, t)
    answer = _from_path(lattice, path, unit=False)
    return Answer(answer.hops, float(distances[t]), path)


def _igraph_field_build(lattice: Lattice) -> igraph.Graph:
    tails, heads, weights = weighted_arcs(lattice)
    graph = igraph.Graph(n=lattice.grid.vertex_count, directed=True)
    graph.add_edges(np.column_stack([tails, heads]))
    graph.es["weight"] = weights.tolist()
    return graph


def _igraph_field_query(graph: igraph.Graph, lattice: Lattice, s: int, t: int) -> Answer:
    path = graph.get_shortest_path(s, t, weights="weight", mode="out", algorithm="dijkstra")
    return _from_path(lattice, np.asarray(path, dtype=np.int64), unit=False)


def _rustworkx_field_build(lattice: Lattice) -> rustworkx.PyDiGraph:
    tails, heads, weights = weighted_arcs(lattice)
    graph = rustworkx.PyDiGraph(
        node_count_hint=lattice.grid.vertex_count, edge_count_hint=tails.size
    )
    graph.add_nodes_from(range(lattice.grid.vertex_count))
    graph.add_edges_from(list(zip(tails.tolist(), heads.tolist(), weights.tolist(), strict=True)))
    return graph


def _rustworkx_field_query(graph: rustworkx.PyDiGraph, lattice: Lattice, s: int, t: int) -> Answer:
    # The edge payload is the weight; `float` is the cheapest weight callback there is.
    lengths = rustworkx.dijkstra_shortest_path_lengths(graph, s, float, goal=t)
    return Answer(None, float(lengths[t]), None)


def _networkx_field_build(lattice: Lattice) -> networkx.DiGraph:
    tails, heads, weights = weighted_arcs(lattice)
    graph = networkx.DiGraph()
    graph.add_nodes_from(range(lattice.grid.vertex_count))
    graph.add_weighted_edges_from(
        zip(tails.tolist(), heads.tolist(), weights.tolist(), strict=True)
    )
    return graph


def _networkx_field_query(graph: networkx.DiGraph, lattice: Lattice, s: int, t: int) -> Answer:
    cost, path = networkx.bidirectional_dijkstra(graph, s, t, weight="weight")
    answer = _from_path(lattice, np.asarray(path, dtype=np.int64), unit=False)
    return Answer(answer.hops, float(cost), answer.path)


# Helpers.


def _walk_back(predecessors: Any, s: int, t: int) -> IntArray:
    """The path s..t from a predecessor array (scipy marks 'none' with -9999)."""
    path = [t]
    v = t
    while v != s:
        v = int(predecessors[v])
        if v < 0:
            raise Mismatch(f"no path from {s} to {t} in the predecessor tree")
        path.append(v)
    return np.asarray(path[::-1], dtype=np.int64)


def _from_path(lattice: Lattice, path: IntArray, *, unit: bool) -> Answer:
    hops = int(path.size) - 1
    return Answer(hops, float(hops) if unit else path_cost(lattice, path), path)


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method(
            "unit/ours-auto",
            "ours",
            "ours AUTO",
            _ours(Algorithm.AUTO, Cost.UNIT, known_blocked=True),
            note="blocked_count passed, as the service does",
        ),
        Method("unit/ours-bfs", "ours", "ours BFS", _ours(Algorithm.BFS, Cost.UNIT)),
        Method("unit/ours-astar", "ours", "ours ASTAR", _ours(Algorithm.ASTAR, Cost.UNIT)),
        Method(
            "unit/ours-catalytic", "ours", "ours CATALYTIC", _ours(Algorithm.CATALYTIC, Cost.UNIT)
        ),
        Method(
            "unit/igraph",
            "igraph",
            "igraph get_shortest_path",
            _igraph_unit_query,
            _igraph_unit_build,
        ),
        Method(
            "unit/scipy-bfs",
            "scipy",
            "scipy breadth_first_order",
            _scipy_bfs_query,
            _scipy_unit_build,
        ),
        Method(
            "unit/scipy-unweighted",
            "scipy",
            "scipy shortest_path(unweighted)",
            _scipy_unweighted_query,
            _scipy_unit_build,
        ),
        Method(
            "unit/rustworkx-lengths",
            "rustworkx",
            "rustworkx dijkstra_shortest_path_lengths",
            _rustworkx_lengths_query,
            _rustworkx_unit_build,
            note="length only, goal=t",
        ),
        Method(
            "unit/rustworkx-layers",
            "rustworkx",
            "rustworkx bfs_layers",
            _rustworkx_layers_query,
            _rustworkx_unit_build,
            note="length only",
        ),
        Method(
            "unit/networkx",
            "networkx",
            "networkx bidirectional_shortest_path",
            _networkx_unit_query,
            _networkx_unit_build,
        ),
        Method(
            "field/ours-auto",
            "ours",
            "ours AUTO",
            _ours(Algorithm.AUTO, Cost.FIELD, known_blocked=True),
            note="blocked_count passed, as the service does",
        ),
        Method(
            "field/ours-dijkstra", "ours", "ours DIJKSTRA", _ours(Algorithm.DIJKSTRA, Cost.FIELD)
        ),
        Method("field/ours-astar", "ours", "ours ASTAR", _ours(Algorithm.ASTAR, Cost.FIELD)),
        Method(
            "field/scipy",
            "scipy",
            "scipy dijkstra",
            _scipy_dijkstra_query,
            _scipy_field_build,
            note="full single-source search",
        ),
        Method(
            "field/igraph",
            "igraph",
            "igraph get_shortest_path(weights)",
            _igraph_field_query,
            _igraph_field_build,
        ),
        Method(
            "field/rustworkx",
            "rustworkx",
            "rustworkx dijkstra_shortest_path_lengths",
            _rustworkx_field_query,
            _rustworkx_field_build,
            note="length only, goal=t",
        ),
        Method(
            "field/networkx",
            "networkx",
            "networkx bidirectional_dijkstra",
            _networkx_field_query,
            _networkx_field_build,
        ),
    )
}


def methods(cost: str, *, networkx_included: bool) -> list[Method]:
    """The methods of one cost kind, the engine's first."""
    return [
        m
        for m in METHODS.values()
        if m.key.startswith(f"{cost}/") and (networkx_included or m.library != "networkx")
    ]
