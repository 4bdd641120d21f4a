"""Fills: constant, raw values, and the seeded random fill (determinism, range, reference)."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.lattice.engine.field import FIELD_DTYPE, blocked_mask
from services.lattice.engine.fills import (
    CHUNK,
    GOLDEN,
    ConstantFill,
    RandomFill,
    ValuesFill,
    make_field,
    random_value,
    splitmix64,
)
from services.lattice.engine.geometry import Grid

SMALL = Grid.of(2, 3)


def _is_field(values: np.ndarray, grid: Grid) -> bool:
    return (
        values.dtype == FIELD_DTYPE
        and values.shape == (grid.vertex_count,)
        and values.flags.c_contiguous
        and values.flags.writeable
    )


def test_constant_fill_sets_every_vertex() -> None:
    field = make_field(SMALL, ConstantFill(1.5))
    assert _is_field(field, SMALL)
    assert np.all(field == np.float32(1.5))


@pytest.mark.parametrize("value", [math.nan, -1.0, math.inf, -0.0])
def test_constant_fill_may_block_everything(value: float) -> None:
    field = make_field(SMALL, ConstantFill(value))
    assert blocked_mask(field).all()


def test_constant_outside_float32_is_refused() -> None:
    with pytest.raises(InvalidArgument) as error:
        make_field(SMALL, ConstantFill(1e39))
    assert error.value.field == "constant.value"


def test_values_round_trip_bytes_and_stay_writable() -> None:
    raw = np.random.default_rng(1).integers(0, 2**32, SMALL.vertex_count, dtype=np.uint32)
    data = raw.astype("<u4").tobytes()
    field = make_field(SMALL, ValuesFill(data))
    assert _is_field(field, SMALL)
    assert field.tobytes() == data


@pytest.mark.parametrize("count", [0, 35, 37, 72])
def test_values_of_the_wrong_length_name_values_and_both_counts(count: int) -> None:
    with pytest.raises(InvalidArgument) as error:
        make_field(SMALL, ValuesFill(bytes(count)))
    assert error.value.field == "values"
    assert "36" in error.value.message
    assert f"got {count}" in error.value.message


def test_out_receives_the_values() -> None:
    buffer = np.full(SMALL.vertex_count, 9.0, dtype=FIELD_DTYPE)
    assert make_field(SMALL, ConstantFill(2.0), out=buffer) is buffer
    assert np.all(buffer == 2.0)
    with pytest.raises(ValueError, match="out"):
        make_field(SMALL, ConstantFill(2.0), out=np.empty(8, dtype=FIELD_DTYPE))


def test_splitmix64_matches_the_published_sequence() -> None:
    # SplitMix64 seeded with 0 starts e220a8397b1dcdaf, 6e789e6aa1b965f4, 06c45d188009454f.
    outputs = [splitmix64(k * GOLDEN) for k in (1, 2, 3)]
    assert outputs == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    # Vertex 0 takes output 0 as its value draw and output 1 as its blocked draw.
    assert random_value(0, 0, 0.0, 1.0, 0.0) == (0xE220A8397B1DCDAF >> 40) / 2**24


def test_random_fill_is_deterministic_per_seed() -> None:
    grid = Grid.of(3, 20)
    first = make_field(grid, RandomFill(42, 0.0, 10.0, 0.25))
    again = make_field(grid, RandomFill(42, 0.0, 10.0, 0.25))
    other = make_field(grid, RandomFill(43, 0.0, 10.0, 0.25))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    assert np.mean(first.view(np.uint32) == other.view(np.uint32)) < 0.3


def test_random_values_lie_in_range_and_blocked_ones_are_plus_inf() -> None:
    grid = Grid.of(5, 10)
    field = make_field(grid, RandomFill(7, 2.0, 3.0, 0.3))
    blocked = blocked_mask(field)
    assert np.all(field[blocked] == np.inf)
    open_values = field[~blocked]
    assert open_values.min() >= 2.0
    assert open_values.max() < 3.0
    # 100,000 vertices: the standard error of the fraction is 0.0015.
    assert abs(blocked.mean() - 0.3) < 0.01


def test_rounding_never_reaches_high() -> None:
    # One ulp wide: low + span * u rounds to high for u > 1/2, and is clamped below it.
    high = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    field = make_field(Grid.of(2, 50), RandomFill(3, 1.0, high, 0.0))
    assert np.all(field == np.float32(1.0))


def test_negative_zero_low_writes_no_sign_bit() -> None:
    field = make_field(Grid.of(2, 50), RandomFill(5, -0.0, 1e-30, 0.0))
    assert not blocked_mask(field).any()


def test_vectorised_fill_matches_the_scalar_reference() -> None:
    grid = Grid.of(3, 100)
    fill = RandomFill(2**64 - 1, 0.5, 100.0, 0.4)
    field = make_field(grid, fill)
    rng = np.random.default_rng(5)
    picks = [0, CHUNK - 1, CHUNK, grid.vertex_count - 1, *rng.integers(0, grid.vertex_count, 300)]
    for index in picks:
        expected = random_value(fill.seed, int(index), fill.low, fill.high, fill.blocked_fraction)
        assert field[index] == np.float32(expected), index


@pytest.mark.parametrize(
    ("fill", "fields"),
    [
        (RandomFill(-1, 0.0, 1.0, 0.0), {"random.seed"}),
        (RandomFill(2**64, 0.0, 1.0, 0.0), {"random.seed"}),
        (RandomFill(1, -1.0, 1.0, 0.0), {"random.low"}),
        (RandomFill(1, math.nan, 1.0, 0.0), {"random.low"}),
        (RandomFill(1, 0.0, math.inf, 0.0), {"random.high"}),
        (RandomFill(1, 0.0, 1e39, 0.0), {"random.high"}),
        (RandomFill(1, 1.0, 1.0, 0.0), {"random.high"}),
        (RandomFill(1, 2.0, 1.0, 0.0), {"random.high"}),
        # Distinct as float64, equal once rounded to float32.
        (RandomFill(1, 1.0, 1.00000001, 0.0), {"random.high"}),
        (RandomFill(1, 0.0, 1.0, 1.0), {"random.blocked_fraction"}),
        (RandomFill(1, 0.0, 1.0, -0.1), {"random.blocked_fraction"}),
        (RandomFill(1, 0.0, 1.0, math.nan), {"random.blocked_fraction"}),
        (RandomFill(-1, -1.0, 1.0, 2.0), {"random.seed", "random.low", "random.blocked_fraction"}),
    ],
)
def test_bad_random_fills_name_their_fields(fill: RandomFill, fields: set[str]) -> None:
    with pytest.raises(InvalidArgument) as error:
        make_field(SMALL, fill)
    assert {name for name, _ in error.value.violations} == fields


def test_full_size_random_fill_works_in_bounded_memory() -> None:
    grid = Grid.of(4, 64)
    field_bytes = grid.vertex_count * 4
    tracemalloc.start()
    try:
        field = make_field(grid, RandomFill(11, 0.0, 1.0, 0.2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert field.nbytes == field_bytes == 2**26
    assert peak < field_bytes + 16 * 2**20
    assert abs(np.isinf(field).mean() - 0.2) < 0.001
