"""Lattice shapes: validation and vertex and edge counts, in integer arithmetic only."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument

MIN_DIMENSIONS, MAX_DIMENSIONS = 1, 10
MIN_SIZE, MAX_SIZE = 2, 100
# No plan goes beyond this; it also bounds a field at 64 MiB of float32.
MAX_VERTICES = 16_777_216


@dataclass(frozen=True)
class Shape:
    """A valid lattice shape and the counts that follow from it."""

    dimensions: int
    size: int

    @property
    def vertex_count(self) -> int:
        return vertex_count(self.dimensions, self.size)

    @property
    def edge_count(self) -> int:
        return edge_count(self.dimensions, self.size)


def vertex_count(dimensions: int, size: int) -> int:
    """size ** dimensions."""
    count: int = size**dimensions
    return count


def edge_count(dimensions: int, size: int) -> int:
    """Edges between axis neighbours: along each axis, size - 1 per line of size**(d-1) lines."""
    count: int = dimensions * (size - 1) * size ** (dimensions - 1)
    return count


def shape_violations(dimensions: int, size: int) -> list[tuple[str, str]]:
    """(field, problem) pairs for an unusable shape; empty when the shape is valid."""
    violations: list[tuple[str, str]] = []
    if not MIN_DIMENSIONS <= dimensions <= MAX_DIMENSIONS:
        violations.append(("dimensions", f"must be {MIN_DIMENSIONS} to {MAX_DIMENSIONS}"))
    if not MIN_SIZE <= size <= MAX_SIZE:
        violations.append(("size", f"must be {MIN_SIZE} to {MAX_SIZE}"))
    if violations:
        # Out-of-range inputs never reach the power below: 100 ** 2**31 would not finish.
        return violations
    count = vertex_count(dimensions, size)
    if count > MAX_VERTICES:
        problem = (
            f"impossible shape: {size}^{dimensions} = {count:,} vertices exceeds the"
            f" maximum of {MAX_VERTICES:,}"
        )
        violations += [("size", problem), ("dimensions", problem)]
    return violations


def validate_shape(dimensions: int, size: int) -> Shape:
    """The shape, or InvalidArgument naming `dimensions` and/or `size`."""
    violations = shape_violations(dimensions, size)
    if violations:
        raise InvalidArgument.of(violations)
    return Shape(dimensions=dimensions, size=size)
