"""Lattice shape validation and the vertex and edge counts."""

from __future__ import annotations

import itertools

import pytest

from services.common.errors import InvalidArgument
from services.lattice.engine.shapes import (
    MAX_VERTICES,
    Shape,
    edge_count,
    validate_shape,
    vertex_count,
)


def brute_force_edges(dimensions: int, size: int) -> int:
    edges = 0
    for point in itertools.product(range(size), repeat=dimensions):
        edges += sum(1 for coordinate in point if coordinate + 1 < size)
    return edges


@pytest.mark.parametrize(
    ("dimensions", "size"), [(1, 2), (1, 7), (2, 2), (2, 5), (3, 3), (3, 4), (4, 3), (5, 2)]
)
def test_edge_count_matches_the_grid(dimensions: int, size: int) -> None:
    assert edge_count(dimensions, size) == brute_force_edges(dimensions, size)


@pytest.mark.parametrize(
    ("dimensions", "size", "vertices", "edges"),
    [
        (1, 2, 2, 1),
        (2, 100, 10_000, 19_800),
        (3, 100, 1_000_000, 2_970_000),
        (4, 64, 16_777_216, 4 * 63 * 64**3),
        (10, 2, 1024, 10 * 1 * 2**9),
    ],
)
def test_counts(dimensions: int, size: int, vertices: int, edges: int) -> None:
    shape = validate_shape(dimensions, size)
    assert shape == Shape(dimensions=dimensions, size=size)
    assert (shape.vertex_count, shape.edge_count) == (vertices, edges)


def test_the_largest_shapes_fit_the_cap() -> None:
    assert validate_shape(4, 64).vertex_count == MAX_VERTICES
    assert validate_shape(8, 8).vertex_count == MAX_VERTICES
    assert validate_shape(3, 100).vertex_count == 1_000_000


@pytest.mark.parametrize(
    ("dimensions", "size", "fields"),
    [
        (0, 10, ["dimensions"]),
        (11, 10, ["dimensions"]),
        (-1, 10, ["dimensions"]),
        (2, 1, ["size"]),
        (2, 101, ["size"]),
        (0, 0, ["dimensions", "size"]),
        # Absurd inputs fail on range, without computing 100 ** 2_147_483_647.
        (2_147_483_647, 100, ["dimensions"]),
    ],
)
def test_out_of_range(dimensions: int, size: int, fields: list[str]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_shape(dimensions, size)
    assert [name for name, _ in caught.value.violations] == fields


@pytest.mark.parametrize(("dimensions", "size"), [(4, 65), (5, 28), (10, 6), (9, 7), (4, 100)])
def test_impossible_shapes_name_size_and_dimensions(dimensions: int, size: int) -> None:
    assert vertex_count(dimensions, size) > MAX_VERTICES
    with pytest.raises(InvalidArgument) as caught:
        validate_shape(dimensions, size)
    assert {name for name, _ in caught.value.violations} == {"size", "dimensions"}
    assert "impossible shape" in caught.value.message
