"""Analysis against networkx on the explicit graph, and the memory models."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.lattice.engine.analysis import analyze, csr_bytes, igraph_bytes
from services.lattice.engine.field import FIELD_DTYPE, blocked_mask
from services.lattice.engine.geometry import Grid

Field = npt.NDArray[np.float32]
# networkx's all-pairs work grows fast: keep lattices to about 130 vertices.
MAX_VERTICES = 130
BLOCKERS = np.array([np.inf, -np.inf, np.nan, -0.0, -1.0], dtype=FIELD_DTYPE)


def explicit_graph(grid: Grid) -> nx.Graph:
    """networkx's grid graph with its nodes renamed to our row-major vertex indices."""
    graph = nx.grid_graph(dim=[grid.size] * grid.dimensions)
    return nx.relabel_nodes(
        graph, lambda node: grid.index_of(node if isinstance(node, tuple) else (node,))
    )


def open_graph(grid: Grid, field: Field) -> nx.Graph:
    graph = explicit_graph(grid)
    graph.remove_nodes_from(np.flatnonzero(blocked_mask(field)).tolist())
    return graph


def true_diameter(graph: nx.Graph) -> int:
    """The longest shortest path within any component (0 without vertices)."""
    return max(
        (nx.diameter(graph.subgraph(part)) for part in nx.connected_components(graph)),
        default=0,
    )


@st.composite
def blocked_lattices(draw: st.DrawFn) -> tuple[Grid, Field]:
    dimensions = draw(st.integers(1, 5))
    largest_size = math.floor(MAX_VERTICES ** (1 / dimensions) + 1e-9)
    grid = Grid.of(dimensions, draw(st.integers(2, min(100, max(2, largest_size)))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    field = rng.uniform(0, 10, grid.vertex_count).astype(FIELD_DTYPE)
    blocked = rng.random(grid.vertex_count) < draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9]))
    field[blocked] = rng.choice(BLOCKERS, int(blocked.sum()))
    return grid, field


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocked_lattices())
def test_analysis_agrees_with_networkx(lattice: tuple[Grid, Field]) -> None:
    grid, field = lattice
    before = field.tobytes()
    result = analyze(grid, field)
    assert field.tobytes() == before
    full = explicit_graph(grid)
    graph = open_graph(grid, field)
    parts = list(nx.connected_components(graph))
    assert result.vertex_count == full.number_of_nodes()
    assert result.edge_count == full.number_of_edges()
    assert result.blocked_count == grid.vertex_count - graph.number_of_nodes()
    assert result.component_count == len(parts)
    assert result.is_connected == (len(parts) == 1)
    assert result.largest_component_size == max((len(part) for part in parts), default=0)
    diameter = true_diameter(graph)
    assert result.diameter <= diameter <= result.diameter_upper_bound
    if result.diameter_exact:
        assert result.diameter == diameter
    assert result.average_degree == pytest.approx(
        2 * full.number_of_edges() / full.number_of_nodes()
    )
    assert result.density == pytest.approx(nx.density(full))


@pytest.mark.parametrize(
    ("dimensions", "size"), [(1, 2), (1, 9), (2, 2), (2, 7), (3, 4), (4, 3), (5, 2)]
)
def test_unblocked_diameter_is_exact(dimensions: int, size: int) -> None:
    grid = Grid.of(dimensions, size)
    result = analyze(grid, np.ones(grid.vertex_count, dtype=FIELD_DTYPE))
    assert result.diameter == nx.diameter(explicit_graph(grid)) == dimensions * (size - 1)
    assert result.diameter_exact
    assert result.component_count == 1
    assert result.is_connected
    assert result.working_bytes == 0


def test_one_dimension_is_always_exact() -> None:
    grid = Grid.of(1, 12)
    field = np.ones(12, dtype=FIELD_DTYPE)
    field[[3, 4, 9]] = np.inf
    result = analyze(grid, field)
    assert (result.component_count, result.diameter, result.diameter_exact) == (3, 3, True)


def test_a_corridor_gets_its_diameter_but_no_certificate() -> None:
    # The first sweep starts at one end and finds the other; 2·ecc(start) = 12 stays above 6.
    grid = Grid.of(2, 3)
    field = np.array([1, 1, 1, -1, -1, 1, 1, 1, 1], dtype=FIELD_DTYPE)
    result = analyze(grid, field)
    assert (result.diameter, result.diameter_upper_bound) == (6, 12)
    assert not result.diameter_exact


def test_an_l_shape_is_certified_exact() -> None:
    # The lowest vertex is the corner: both arms have length 2 and their ends are 4 = 2·2 apart.
    grid = Grid.of(2, 3)
    field = np.array([1, 1, 1, 1, -1, -1, 1, -1, -1], dtype=FIELD_DTYPE)
    result = analyze(grid, field)
    assert (result.diameter, result.diameter_upper_bound, result.diameter_exact) == (4, 4, True)


def test_nothing_open_means_no_components_and_not_connected() -> None:
    grid = Grid.of(2, 4)
    result = analyze(grid, np.full(16, -1.0, dtype=FIELD_DTYPE))
    assert result.blocked_count == 16
    assert result.component_count == 0
    assert not result.is_connected
    assert (result.diameter, result.diameter_exact) == (0, True)


def test_a_single_open_vertex_is_connected_with_diameter_zero() -> None:
    grid = Grid.of(3, 3)
    field = np.full(27, np.nan, dtype=FIELD_DTYPE)
    field[13] = 0.0
    result = analyze(grid, field)
    assert (result.component_count, result.is_connected) == (1, True)
    assert (result.diameter, result.diameter_exact, result.largest_component_size) == (0, True, 1)


def test_memory_is_the_field_plus_the_measured_working_set() -> None:
    grid = Grid.of(3, 10)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field[::3] = np.inf
    result = analyze(grid, field)
    assert result.memory_bytes == 4 * grid.vertex_count == field.nbytes
    open_count = grid.vertex_count - result.blocked_count
    # The bitset of unreached vertices and an int32 queue slot per open vertex.
    assert result.working_bytes == math.ceil(grid.vertex_count / 8) + 4 * open_count


def test_adjacency_models_match_real_graph_structures() -> None:
    scipy_sparse = pytest.importorskip("scipy.sparse")
    for dimensions, size in [(1, 5), (2, 4), (3, 3)]:
        grid = Grid.of(dimensions, size)
        csr = scipy_sparse.csr_array(nx.to_scipy_sparse_array(explicit_graph(grid)))
        expected = 8 * (csr.indptr.size + csr.indices.size)
        result = analyze(grid, np.ones(grid.vertex_count, dtype=FIELD_DTYPE))
        assert (
            result.adjacency_list_bytes == expected == csr_bytes(grid.vertex_count, grid.edge_count)
        )
        vertices, edges = grid.vertex_count, grid.edge_count
        assert (
            result.igraph_bytes == igraph_bytes(vertices, edges) == 32 * edges + 16 * (vertices + 1)
        )


def test_components_agree_with_scipy_labelling_on_a_large_lattice() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    grid = Grid.of(3, 60)
    rng = np.random.default_rng(9)
    field = rng.uniform(0, 1, grid.vertex_count).astype(FIELD_DTYPE)
    field[rng.random(grid.vertex_count) < 0.65] = np.inf  # near percolation: many components
    result = analyze(grid, field)
    mask = ~blocked_mask(field).reshape(grid.shape)
    labels, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 1))
    assert result.component_count == count
    assert result.largest_component_size == np.bincount(labels.ravel())[1:].max()


def test_a_field_of_the_wrong_length_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="field"):
        analyze(Grid.of(2, 3), np.ones(8, dtype=FIELD_DTYPE))
