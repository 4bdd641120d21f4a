"""Index arithmetic on an implicit grid: row-major, last coordinate fastest, open boundaries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from services.common.errors import InvalidArgument
from services.lattice.engine.shapes import Shape, validate_shape


@dataclass(frozen=True)
class Grid:
    """A d-dimensional grid of `size` points per axis; vertices are 0 .. size**d - 1."""

    dimensions: int
    size: int

    @classmethod
    def of(cls, dimensions: int, size: int) -> Grid:
        """A validated grid (InvalidArgument naming `dimensions`/`size` otherwise)."""
        shape: Shape = validate_shape(dimensions, size)
        return cls(shape.dimensions, shape.size)

    @cached_property
    def vertex_count(self) -> int:
        return int(self.size**self.dimensions)

    @cached_property
    def edge_count(self) -> int:
        return int(self.dimensions * (self.size - 1) * self.size ** (self.dimensions - 1))

    @cached_property
    def shape(self) -> tuple[int, ...]:
        """The numpy shape of the field viewed as a d-dimensional array."""
        return (self.size,) * self.dimensions

    @cached_property
    def strides(self) -> tuple[int, ...]:
        """Index step per axis: axis k moves by size**(d-1-k)."""
        return tuple(self.size ** (self.dimensions - 1 - k) for k in range(self.dimensions))

    def index_of(self, coordinates: Sequence[int], *, field: str = "coordinates") -> int:
        """The vertex index of `coordinates`; InvalidArgument naming `field` when out of range."""
        if len(coordinates) != self.dimensions:
            raise InvalidArgument(
                field,
                f"needs {self.dimensions} coordinates (one per axis), got {len(coordinates)}",
            )
        for axis, value in enumerate(coordinates):
            if not 0 <= value < self.size:
                raise InvalidArgument(
                    field, f"coordinate {axis} is {value}; must be 0 to {self.size - 1}"
                )
        return int(sum(int(c) * s for c, s in zip(coordinates, self.strides, strict=True)))

    def coordinates_of(self, index: int) -> tuple[int, ...]:
        """The coordinates of vertex `index`."""
        return tuple(int(c) for c in np.unravel_index(index, self.shape))

    def manhattan(self, a: int, b: int) -> int:
        """Hops between two vertices on the unblocked grid."""
        return int(
            sum(
                abs(x - y)
                for x, y in zip(self.coordinates_of(a), self.coordinates_of(b), strict=True)
            )
        )
