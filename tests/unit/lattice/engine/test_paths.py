"""Paths against networkx on the explicit graph; closed form, errors, catalytic restoration."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba.core.registry import CPUDispatcher as Dispatcher

from services.common.errors import InvalidArgument, NotFound
from services.lattice.engine import catalytic, paths
from services.lattice.engine import path_kernels as kernels
from services.lattice.engine.field import FIELD_DTYPE, blocked_mask, checksum
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, PathResult, find_path, warm_up

Field = npt.NDArray[np.float32]
# networkx on every example: keep lattices to a few hundred vertices.
MAX_VERTICES = 400
# Every way a value can be blocked: NaN (both signs), +-inf, -0.0, negatives, a negative denormal.
NEGATIVE_NAN = np.array([0xFFC0_0000], np.uint32).view(FIELD_DTYPE)[0]
BLOCKERS = [np.nan, np.inf, -np.inf, -0.0, -1.5, -3e38, -1e-45, float(NEGATIVE_NAN)]
UNIT_ALGORITHMS = list(Algorithm)
FIELD_ALGORITHMS = [Algorithm.AUTO, Algorithm.DIJKSTRA, Algorithm.ASTAR]


def explicit_graph(grid: Grid, field: Field, cost: Cost) -> nx.Graph | nx.DiGraph:
    """The lattice's open vertices as networkx sees them; FIELD cost: u -> v weighs field[v]."""
    grid_graph = nx.grid_graph(dim=[grid.size] * grid.dimensions)
    grid_graph = nx.relabel_nodes(
        grid_graph, lambda node: grid.index_of(node if isinstance(node, tuple) else (node,))
    )
    blocked = blocked_mask(field)
    graph: nx.Graph | nx.DiGraph = nx.Graph() if cost is Cost.UNIT else nx.DiGraph()
    graph.add_nodes_from(v for v in range(grid.vertex_count) if not blocked[v])
    for u, v in grid_graph.edges():
        if not blocked[u] and not blocked[v]:
            if cost is Cost.UNIT:
                graph.add_edge(u, v)
            else:
                graph.add_edge(u, v, weight=float(field[v]))
                graph.add_edge(v, u, weight=float(field[u]))
    return graph


def assert_valid(grid: Grid, field: Field, result: PathResult, s: int, t: int) -> None:
    """Right endpoints, open vertices, adjacent steps, hops and cost that match the vertices."""
    path = result.vertices
    assert path.dtype == np.uint32
    assert int(path[0]) == s
    assert int(path[-1]) == t
    assert result.hops == path.size - 1
    assert not blocked_mask(field)[path].any()
    coordinates = np.stack(np.unravel_index(path.astype(np.int64), grid.shape), axis=1)
    assert (np.abs(np.diff(coordinates, axis=0)).sum(axis=1) == 1).all()
    assert result.checksum_before == result.checksum_after == checksum(field)


def path_cost(field: Field, path: npt.NDArray[np.uint32]) -> float:
    return math.fsum(float(field[v]) for v in path[1:])


@st.composite
def lattices(draw: st.DrawFn) -> tuple[Grid, Field, tuple[int, ...], tuple[int, ...]]:
    dimensions = draw(st.integers(1, 5))
    largest = math.floor(MAX_VERTICES ** (1 / dimensions) + 1e-9)
    grid = Grid.of(dimensions, draw(st.integers(2, min(12, largest))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(
        st.sampled_from(["uniform", "integers", "wide", "constant", "tiny", "narrow", "tenths"])
    )
    n = grid.vertex_count
    if kind == "uniform":
        values = rng.uniform(0, 1, n)
    elif kind == "integers":  # many equal costs, zeros included
        values = rng.integers(0, 4, n).astype(np.float64)
    elif kind == "wide":  # 1e-30 .. 1e30: calendar buckets far wider than most keys
        values = 10.0 ** rng.uniform(-30, 30, n)
    elif kind == "constant":
        values = np.full(n, float(rng.integers(1, 5)))
    elif kind == "tiny":  # denormals and zeros: the calendar degenerates to a single heap
        values = rng.choice([0.0, 1e-45, 1e-40, 1e-38], n)
    elif kind == "narrow":  # cheapest step above zero, high / low small: Dinitz's buckets
        low = 10.0 ** rng.uniform(-3, 3)
        values = low * rng.uniform(1, draw(st.sampled_from([1.0, 2.0, 30.0, 61.0])), n)
    else:  # sums of tenths land on Dinitz's bucket edges, give or take a rounding
        values = rng.choice([0.1, 0.2, 0.3], n)
    field = values.astype(FIELD_DTYPE)
    fraction = draw(st.sampled_from([0.0, 0.0, 0.1, 0.3, 0.5]))
    blocked = rng.random(n) < fraction
    field[blocked] = rng.choice(np.array(BLOCKERS, dtype=FIELD_DTYPE), int(blocked.sum()))
    start = tuple(
        draw(st.lists(st.integers(0, grid.size - 1), min_size=dimensions, max_size=dimensions))
    )
    end = tuple(
        draw(st.lists(st.integers(0, grid.size - 1), min_size=dimensions, max_size=dimensions))
    )
    return grid, field, start, end


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lattices(), st.sampled_from(list(Cost)))
def test_every_algorithm_is_optimal(
    lattice: tuple[Grid, Field, tuple[int, ...], tuple[int, ...]], cost: Cost
) -> None:
    grid, field, start, end = lattice
    s, t = grid.index_of(start), grid.index_of(end)
    raw = field.tobytes()
    blocked = blocked_mask(field)
    algorithms = UNIT_ALGORITHMS if cost is Cost.UNIT else FIELD_ALGORITHMS
    if blocked[s] or blocked[t]:
        for algorithm in algorithms:
            with pytest.raises(InvalidArgument) as error:
                find_path(grid, field, start, end, algorithm=algorithm, cost=cost)
            named = {name for name, _ in error.value.violations}
            assert named == {n for n, v in (("start", s), ("end", t)) if blocked[v]}
        return
    graph = explicit_graph(grid, field, cost)
    reachable = nx.has_path(graph, s, t)
    best = (
        nx.shortest_path_length(graph, s, t, weight=None if cost is Cost.UNIT else "weight")
        if reachable
        else None
    )
    for algorithm in algorithms:
        if not reachable:
            with pytest.raises(NotFound):
                find_path(grid, field, start, end, algorithm=algorithm, cost=cost)
            assert field.tobytes() == raw
            continue
        result = find_path(grid, field, start, end, algorithm=algorithm, cost=cost)
        assert field.tobytes() == raw, algorithm
        assert_valid(grid, field, result, s, t)
        assert algorithm in (Algorithm.AUTO, result.algorithm)
        if cost is Cost.UNIT:
            assert result.hops == best, algorithm
            assert result.cost == best, algorithm
        else:
            assert best is not None
            assert result.cost == pytest.approx(best, rel=1e-9, abs=1e-300), algorithm
            assert result.cost == pytest.approx(path_cost(field, result.vertices), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.data())
def test_closed_form_matches_bfs_on_unblocked_lattices(
    dimensions: int, data: st.DataObject
) -> None:
    largest = math.floor(4096 ** (1 / dimensions) + 1e-9)
    grid = Grid.of(dimensions, data.draw(st.integers(2, min(100, largest))))
    coordinate = st.integers(0, grid.size - 1)
    start = data.draw(st.lists(coordinate, min_size=dimensions, max_size=dimensions))
    end = data.draw(st.lists(coordinate, min_size=dimensions, max_size=dimensions))
    s, t = grid.index_of(start), grid.index_of(end)
    field = np.full(grid.vertex_count, 0.5, dtype=FIELD_DTYPE)
    closed = find_path(grid, field, start, end)
    counted = find_path(grid, field, start, end, blocked_count=0)
    bfs = find_path(grid, field, start, end, algorithm=Algorithm.BFS)
    assert closed.method == counted.method == "closed_form"
    assert closed.algorithm is Algorithm.BFS
    assert closed.visited == 0
    assert closed.hops == bfs.hops == grid.manhattan(s, t)
    assert np.array_equal(closed.vertices, counted.vertices)
    assert_valid(grid, field, closed, s, t)
    weighted = find_path(grid, field, start, end, cost=Cost.FIELD)
    dijkstra = find_path(grid, field, start, end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD)
    assert weighted.method == "closed_form"
    assert weighted.algorithm is Algorithm.DIJKSTRA
    assert weighted.cost == dijkstra.cost == 0.5 * closed.hops


def test_auto_unit_falls_back_to_bfs_when_astar_runs_out_of_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid = Grid.of(2, 40)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    # A wall with one gap far from the straight line forces A* to settle most of the grid.
    for y in range(39):
        field[grid.index_of((20, y))] = np.inf
    monkeypatch.setattr("services.lattice.engine.paths.ASTAR_MIN_BUDGET", 8)
    result = find_path(grid, field, (0, 0), (39, 0))
    bfs = find_path(grid, field, (0, 0), (39, 0), algorithm=Algorithm.BFS)
    assert result.method == "astar_then_bidirectional_bfs"
    assert result.algorithm is Algorithm.BFS
    assert result.hops == bfs.hops


def test_auto_searches_when_something_is_blocked() -> None:
    grid = Grid.of(2, 5)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field[grid.index_of((2, 2))] = np.inf
    result = find_path(grid, field, (0, 0), (4, 4))
    assert result.method == "astar"
    assert result.algorithm is Algorithm.ASTAR
    assert result.hops == 8
    counted = find_path(grid, field, (0, 0), (4, 4), blocked_count=1)
    assert counted.method == "astar"
    weighted = find_path(grid, field, (0, 0), (4, 4), cost=Cost.FIELD)
    assert weighted.algorithm is Algorithm.ASTAR
    assert weighted.cost == 8.0
    field[:] = np.linspace(0.01, 1.0, grid.vertex_count, dtype=FIELD_DTYPE)
    assert find_path(grid, field, (0, 0), (4, 4), cost=Cost.FIELD).method == "dijkstra"


@pytest.mark.parametrize("seed", range(3))
def test_auto_hands_over_to_dijkstra_when_astar_runs_out(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths, "ASTAR_BUDGET_DIVISOR", 2**40)
    monkeypatch.setattr(paths, "ASTAR_MIN_BUDGET", 0)
    grid, field = maze(seed)
    field[~blocked_mask(field)] += 1.0  # cheapest over dearest above the A* threshold
    end = (grid.size - 1,) * 3
    try:
        dijkstra = find_path(
            grid, field, (0, 0, 0), end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD
        )
    except NotFound:
        with pytest.raises(NotFound):
            find_path(grid, field, (0, 0, 0), end, cost=Cost.FIELD)
        return
    auto = find_path(grid, field, (0, 0, 0), end, cost=Cost.FIELD)
    assert auto.algorithm is Algorithm.DIJKSTRA
    assert auto.method == "astar_then_dijkstra"
    assert auto.cost == dijkstra.cost
    assert auto.visited > dijkstra.visited


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_start_equal_to_end(algorithm: Algorithm) -> None:
    grid = Grid.of(3, 4)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field[0] = np.inf
    result = find_path(grid, field, (1, 2, 3), (1, 2, 3), algorithm=algorithm)
    assert result.vertices.tolist() == [grid.index_of((1, 2, 3))]
    assert (result.hops, result.cost) == (0, 0.0)
    assert result.checksum_before == result.checksum_after


@pytest.mark.parametrize(
    ("start", "end", "names"),
    [
        ((0, 0), (1,), {"end"}),
        ((0, 0, 0), (1, 1), {"start"}),
        ((0, 5), (1, 1), {"start"}),
        ((0, 0), (-1, 0), {"end"}),
        ((9, 9), (0, 0, 0), {"start", "end"}),
    ],
)
def test_bad_coordinates_name_the_field(
    start: tuple[int, ...], end: tuple[int, ...], names: set[str]
) -> None:
    grid = Grid.of(2, 5)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    with pytest.raises(InvalidArgument) as error:
        find_path(grid, field, start, end)
    assert {name for name, _ in error.value.violations} == names


@pytest.mark.parametrize("blocker", BLOCKERS)
def test_blocked_endpoints_name_the_field(blocker: float) -> None:
    grid = Grid.of(2, 5)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field[grid.index_of((4, 4))] = blocker
    for algorithm in Algorithm:
        with pytest.raises(InvalidArgument) as error:
            find_path(grid, field, (0, 0), (4, 4), algorithm=algorithm)
        assert error.value.field == "end"
        assert "blocked" in error.value.message
    with pytest.raises(InvalidArgument) as error:
        find_path(grid, field, (4, 4), (0, 0))
    assert error.value.field == "start"


@pytest.mark.parametrize("algorithm", [Algorithm.BFS, Algorithm.CATALYTIC])
def test_unit_only_algorithms_refuse_field_cost(algorithm: Algorithm) -> None:
    grid = Grid.of(2, 3)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    with pytest.raises(InvalidArgument) as error:
        find_path(grid, field, (0, 0), (2, 2), algorithm=algorithm, cost=Cost.FIELD)
    assert error.value.field == "algorithm"


@pytest.mark.parametrize("cost", list(Cost))
def test_unreachable_is_not_found(cost: Cost) -> None:
    grid = Grid.of(2, 6)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    field.reshape(grid.shape)[:, 3] = -0.0  # a wall across the lattice
    raw = field.tobytes()
    for algorithm in UNIT_ALGORITHMS if cost is Cost.UNIT else FIELD_ALGORITHMS:
        with pytest.raises(NotFound, match="no path"):
            find_path(grid, field, (0, 0), (5, 5), algorithm=algorithm, cost=cost)
        assert field.tobytes() == raw


# The kernels called from Python (their helpers compile with them).
ENTRY_KERNELS = {
    "_astar",
    "_bidirectional_bfs",
    "_dijkstra",
    "_dinitz",
    "_max_bits",
    "_open_bits_range",
    "_uniform_open",
}


def test_warm_up_runs_every_kernel() -> None:
    warm_up()
    compiled = {
        name
        for name, value in vars(kernels).items()
        if isinstance(value, Dispatcher) and value.signatures
    }
    missing = sorted(ENTRY_KERNELS - compiled)
    assert missing == [], f"warm_up() leaves these to compile on a first request: {missing}"


def test_misused_fields_are_programming_errors() -> None:
    grid = Grid.of(2, 3)
    with pytest.raises(ValueError, match="float32"):
        find_path(grid, np.ones(9), (0, 0), (2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="9 values"):
        find_path(grid, np.ones(8, dtype=FIELD_DTYPE), (0, 0), (2, 2))
    frozen = np.ones(9, dtype=FIELD_DTYPE)
    frozen.flags.writeable = False
    assert find_path(grid, frozen, (0, 0), (2, 2), algorithm=Algorithm.BFS).hops == 4
    with pytest.raises(ValueError, match="writable"):
        find_path(grid, frozen, (0, 0), (2, 2), algorithm=Algorithm.CATALYTIC)


def maze(seed: int) -> tuple[Grid, Field]:
    """A 3-D lattice with 30% blocked of every kind, corners open."""
    grid = Grid.of(3, 14)
    rng = np.random.default_rng(seed)
    field = rng.uniform(0, 2, grid.vertex_count).astype(FIELD_DTYPE)
    blocked = rng.random(grid.vertex_count) < 0.3
    field[blocked] = rng.choice(np.array(BLOCKERS, dtype=FIELD_DTYPE), int(blocked.sum()))
    field[[0, grid.vertex_count - 1]] = 1.0
    return grid, field


@pytest.mark.parametrize("seed", range(4))
def test_catalytic_with_tiny_windows_grows_them_and_stays_exact(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalytic, "MIN_WINDOW", 1)
    monkeypatch.setattr(catalytic, "WINDOW_FACTOR", 0)
    grid, field = maze(seed)
    raw = field.tobytes()
    end = (grid.size - 1,) * 3
    try:
        bfs = find_path(grid, field, (0, 0, 0), end, algorithm=Algorithm.BFS)
    except NotFound:
        with pytest.raises(NotFound):
            find_path(grid, field, (0, 0, 0), end, algorithm=Algorithm.CATALYTIC)
        assert field.tobytes() == raw
        return
    result = find_path(grid, field, (0, 0, 0), end, algorithm=Algorithm.CATALYTIC)
    assert field.tobytes() == raw
    assert result.hops == bfs.hops
    assert_valid(grid, field, result, 0, grid.vertex_count - 1)
    assert 0 < result.extra_bytes < bfs.extra_bytes


def test_catalytic_memory_is_far_below_the_field() -> None:
    grid = Grid.of(3, 40)
    field = np.random.default_rng(3).uniform(0, 1, grid.vertex_count).astype(FIELD_DTYPE)
    result = find_path(grid, field, (0, 0, 0), (39, 39, 39), algorithm=Algorithm.CATALYTIC)
    bfs = find_path(grid, field, (0, 0, 0), (39, 39, 39), algorithm=Algorithm.BFS)
    assert result.hops == bfs.hops == 117
    assert result.extra_bytes < field.nbytes // 4 < bfs.extra_bytes


def test_catalytic_restores_the_field_when_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalytic, "MIN_WINDOW", 1)
    monkeypatch.setattr(catalytic, "WINDOW_FACTOR", 0)

    def refuse(self: object, side: int) -> None:
        raise MemoryError("no room")

    monkeypatch.setattr(catalytic._Buffers, "grow", refuse)
    grid = Grid.of(2, 10)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    raw = field.tobytes()
    with pytest.raises(MemoryError):
        find_path(grid, field, (0, 0), (9, 9), algorithm=Algorithm.CATALYTIC)
    assert field.tobytes() == raw


def test_a_field_left_changed_is_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = catalytic._search

    def leaky(bits: npt.NDArray[np.uint32], *args: object) -> object:
        result = original(bits, *args)  # type: ignore[arg-type]
        bits[1] |= np.uint32(0x8000_0000)
        return result

    monkeypatch.setattr(catalytic, "_search", leaky)
    grid = Grid.of(2, 4)
    field = np.ones(grid.vertex_count, dtype=FIELD_DTYPE)
    with pytest.raises(catalytic.FieldNotRestoredError):
        find_path(grid, field, (0, 0), (3, 3), algorithm=Algorithm.CATALYTIC)


def narrow_lattice(dimensions: int, size: int, seed: int) -> tuple[Grid, Field]:
    """Values in [1, 2), 20% blocked, both corners open: Dinitz's buckets apply."""
    grid = Grid.of(dimensions, size)
    rng = np.random.default_rng(seed)
    field = rng.uniform(1, 2, grid.vertex_count).astype(FIELD_DTYPE)
    field[rng.random(grid.vertex_count) < 0.2] = np.inf
    field[0] = field[-1] = 1.5
    return grid, field


@pytest.mark.parametrize(("dimensions", "size", "seed"), [(2, 100, 1), (3, 40, 2), (4, 14, 3)])
def test_dinitz_buckets_and_the_calendar_queue_agree(
    dimensions: int, size: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid, field = narrow_lattice(dimensions, size, seed)
    end = (size - 1,) * dimensions
    start = (0,) * dimensions
    try:
        dinitz = find_path(grid, field, start, end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD)
    except NotFound:
        pytest.skip("corners not connected for this seed")
    monkeypatch.setattr(paths, "DINITZ_MAX_DIST_BYTES", 0)
    calendar = find_path(grid, field, start, end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD)
    for result in (dinitz, calendar):
        assert_valid(grid, field, result, 0, grid.vertex_count - 1)
        assert result.method == "dijkstra"
        assert result.cost == pytest.approx(path_cost(field, result.vertices), rel=1e-12)
    assert dinitz.cost == pytest.approx(calendar.cost, rel=1e-12)
    # The distance array is what Dinitz's buckets cost; the calendar's memory is its frontier.
    assert dinitz.extra_bytes >= 9 * grid.vertex_count > calendar.extra_bytes


def test_dinitz_ring_grows_past_its_first_capacity() -> None:
    """A 64^3 lattice puts thousands of vertices in one bucket: the ring doubles, and nothing
    queued before is lost (the cost still matches the calendar's)."""
    grid, field = narrow_lattice(3, 64, 2)
    bits = field.view(np.uint32)
    strides = np.array(grid.strides, dtype=np.int64)
    low, high = kernels.open_value_range(bits)
    assert kernels.dinitz_applies(low, high)
    n, t = grid.vertex_count, grid.vertex_count - 1
    found, settled, ring_bytes, cost, path = kernels.dinitz(
        field,
        bits,
        grid.size,
        strides,
        0,
        t,
        unit=False,
        low=low,
        high=high,
        state=np.zeros(n, np.uint8),
        dist=np.full(n, np.nan),
    )
    found_c, _, _, cost_c, _ = kernels.dijkstra(
        field, bits, grid.size, strides, 0, t, unit=False, window=high, state=np.zeros(n, np.uint8)
    )
    assert found
    assert found_c
    buckets = int(high / low) + 2
    assert ring_bytes > buckets * 1024 * 4, "the ring never grew: make the lattice larger"
    assert cost == pytest.approx(cost_c, rel=1e-12)
    assert 0 < settled <= n
    assert (path[0], path[-1]) == (0, t)


@pytest.mark.parametrize(
    ("low", "high", "applies"),
    [(1.0, 2.0, True), (1.0, 1.0, True), (1.0, 61.0, True), (1.0, 63.0, False), (0.0, 1.0, False)],
)
def test_dinitz_applies_where_few_buckets_cover_a_step(
    low: float, high: float, applies: bool
) -> None:
    assert kernels.dinitz_applies(low, high) is applies


def test_large_lattices_keep_the_calendar_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over DINITZ_MAX_DIST_BYTES of distances the calendar answers, with the frontier's memory."""
    grid, field = narrow_lattice(3, 20, 5)
    end = (19, 19, 19)
    wide = find_path(grid, field, (0, 0, 0), end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD)
    monkeypatch.setattr(paths, "DINITZ_MAX_DIST_BYTES", 8 * grid.vertex_count - 1)
    capped = find_path(grid, field, (0, 0, 0), end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD)
    assert capped.cost == pytest.approx(wide.cost, rel=1e-12)
    assert capped.extra_bytes < 8 * grid.vertex_count <= wide.extra_bytes
