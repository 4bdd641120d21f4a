"""Transforms: in place, each undone by the op it returns; bit-exact where the contract says so."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from multiprocessing import shared_memory

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition, InvalidArgument
from services.lattice.engine.field import FIELD_DTYPE, blocked_mask
from services.lattice.engine.geometry import Grid
from services.lattice.engine.transforms import (
    Denormalize,
    Flip,
    Normalize,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
    apply_transform,
    validate,
)

Field = npt.NDArray[np.float32]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bit patterns every field may hold: signed zeros, infinities, quiet and signalling NaNs with
# payloads, subnormals, the float32 extremes.
SPECIAL_BITS = [
    0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0xFFC0_0001,
    0x7F80_0001, 0xFFBF_FFFF, 0x0000_0001, 0x8000_0001, 0x0080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,
]  # fmt: skip


NON_FINITE_OR_ZERO_BITS = [b for b in SPECIAL_BITS if b & 0x7F80_0000 in (0, 0x7F80_0000)]


@st.composite
def lattices(
    draw: st.DrawFn, moderate: bool = False, min_dimensions: int = 1
) -> tuple[Grid, Field]:
    """A small grid and a field for it, built by numpy from a drawn seed (fast at 6**5 vertices).

    Fields hold arbitrary bit patterns, or with `moderate` finite values of every magnitude up to
    1e6 (whose arithmetic stays inside float32); either way a drawn share of special values.
    """
    grid = Grid.of(draw(st.integers(min_dimensions, 5)), draw(st.integers(2, 6)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count = grid.vertex_count
    if moderate:
        magnitudes = 10.0 ** rng.integers(-40, 7, count)
        raw = (rng.uniform(-1, 1, count) * magnitudes).astype(FIELD_DTYPE).view(np.uint32)
        specials = NON_FINITE_OR_ZERO_BITS
    else:
        raw = rng.integers(0, 2**32, count, dtype=np.uint32)
        specials = SPECIAL_BITS
    chosen = rng.random(count) < draw(st.sampled_from([0.0, 0.05, 0.5]))
    raw[chosen] = rng.choice(np.array(specials, dtype=np.uint32), int(chosen.sum()))
    return grid, raw.view(FIELD_DTYPE)


@st.composite
def planes(draw: st.DrawFn, grid: Grid) -> tuple[int, int]:
    axis_a = draw(st.integers(0, grid.dimensions - 1))
    axis_b = draw(st.integers(0, grid.dimensions - 1).filter(lambda b: b != axis_a))
    return axis_a, axis_b


def _same_bits(a: Field, b: Field) -> bool:
    return bool(np.array_equal(a.view(np.uint32), b.view(np.uint32)))


def _apply(grid: Grid, field: Field, op: TransformOp) -> TransformOp:
    """apply_transform, checking that it wrote into the very buffer it was given."""
    address = field.__array_interface__["data"][0]
    inverse = apply_transform(grid, field, op)
    assert field.__array_interface__["data"][0] == address
    return inverse


def _assert_restored(before: Field, after: Field, scale: float = 0.0, ulps: int = 4) -> None:
    """Non-finite bit for bit, open/blocked status exactly, finite values to float rounding."""
    finite = np.isfinite(before)
    assert _same_bits(before[~finite], after[~finite])
    assert np.array_equal(blocked_mask(before), blocked_mask(after))
    magnitude = np.maximum(np.abs(before[finite]), np.float32(scale))
    tolerance = ulps * np.spacing(magnitude.astype(np.float32)).astype(np.float64)
    error = np.abs(before[finite].astype(np.float64) - after[finite].astype(np.float64))
    assert np.all(error <= tolerance), (error - tolerance).max()


# Permutations and raw bits: exact.


@SETTINGS
@given(lattices(), st.integers(0, 2**32 - 1))
def test_xor_twice_restores_every_bit(lattice: tuple[Grid, Field], key: int) -> None:
    grid, field = lattice
    before = field.copy()
    inverse = _apply(grid, field, Xor(key))
    assert inverse == Xor(key)
    assert np.array_equal(field.view(np.uint32), before.view(np.uint32) ^ np.uint32(key))
    _apply(grid, field, inverse)
    assert _same_bits(field, before)


@SETTINGS
@given(lattices(min_dimensions=2), st.data())
def test_rotate_matches_rot90_and_its_inverse_restores(
    lattice: tuple[Grid, Field], data: st.DataObject
) -> None:
    grid, field = lattice
    axis_a, axis_b = data.draw(planes(grid))
    turns = data.draw(st.integers(-9, 9))
    before = field.copy()
    inverse = _apply(grid, field, Rotate(axis_a, axis_b, turns))
    expected = np.rot90(before.reshape(grid.shape), turns, axes=(axis_a, axis_b))
    assert _same_bits(field, np.ascontiguousarray(expected).reshape(-1))
    assert inverse == Rotate(axis_a, axis_b, (4 - turns % 4) % 4)
    _apply(grid, field, inverse)
    assert _same_bits(field, before)


@SETTINGS
@given(lattices(min_dimensions=2), st.data())
def test_four_quarter_turns_are_the_identity(
    lattice: tuple[Grid, Field], data: st.DataObject
) -> None:
    grid, field = lattice
    axis_a, axis_b = data.draw(planes(grid))
    before = field.copy()
    for _ in range(4):
        _apply(grid, field, Rotate(axis_a, axis_b, 1))
    assert _same_bits(field, before)


def _rotate_slowly(grid: Grid, values: Field, axis_a: int, axis_b: int, turns: int) -> Field:
    """The documented mapping, one vertex at a time: a quarter turn moves the value at
    (.., x_a, .., x_b, ..) to (.., size-1-x_b, .., x_a, ..)."""
    for _ in range(turns % 4):
        turned = np.empty_like(values)
        for index in range(grid.vertex_count):
            coordinates = list(grid.coordinates_of(index))
            x_a, x_b = coordinates[axis_a], coordinates[axis_b]
            coordinates[axis_a], coordinates[axis_b] = grid.size - 1 - x_b, x_a
            turned[grid.index_of(coordinates)] = values[index]
        values = turned
    return values


@pytest.mark.parametrize(("dimensions", "size"), [(2, 2), (2, 5), (3, 3), (3, 4)])
def test_rotate_follows_the_documented_coordinate_mapping(dimensions: int, size: int) -> None:
    grid = Grid.of(dimensions, size)
    original = np.arange(grid.vertex_count, dtype=FIELD_DTYPE)
    for (axis_a, axis_b), turns in itertools.product(
        itertools.permutations(range(dimensions), 2), range(-1, 5)
    ):
        field = original.copy()
        _apply(grid, field, Rotate(axis_a, axis_b, turns))
        expected = _rotate_slowly(grid, original, axis_a, axis_b, turns)
        assert np.array_equal(field, expected), (axis_a, axis_b, turns)


@SETTINGS
@given(lattices(), st.data())
def test_flip_matches_np_flip_and_is_self_inverse(
    lattice: tuple[Grid, Field], data: st.DataObject
) -> None:
    grid, field = lattice
    axis = data.draw(st.integers(0, grid.dimensions - 1))
    before = field.copy()
    assert _apply(grid, field, Flip(axis)) == Flip(axis)
    expected = np.flip(before.reshape(grid.shape), axis)
    assert _same_bits(field, np.ascontiguousarray(expected).reshape(-1))
    _apply(grid, field, Flip(axis))
    assert _same_bits(field, before)


# Arithmetic: finite values to float rounding, everything else exactly.


FACTORS = st.floats(1e-3, 1e3).flatmap(lambda f: st.sampled_from([f, -f]))


@SETTINGS
@given(lattices(moderate=True), FACTORS)
def test_scale_then_its_inverse_restores(lattice: tuple[Grid, Field], factor: float) -> None:
    grid, field = lattice
    before = field.copy()
    inverse = _apply(grid, field, Scale(factor))
    assert isinstance(inverse, Scale)
    assert inverse.factor == pytest.approx(1 / factor, rel=1e-6)
    finite = np.isfinite(before)
    assert np.allclose(field[finite], before[finite] * np.float32(factor), rtol=1e-6, atol=0)
    _apply(grid, field, inverse)
    # Values scaled into float32's subnormal range keep only absolute precision.
    _assert_restored(before, field, scale=1e-30 * max(1.0, 1 / abs(factor)))


@SETTINGS
@given(lattices(moderate=True), st.floats(-1e3, 1e3, width=32))
def test_offset_then_its_inverse_restores(lattice: tuple[Grid, Field], value: float) -> None:
    grid, field = lattice
    before = field.copy()
    inverse = _apply(grid, field, Offset(value))
    assert inverse == Offset(-value if value else 0.0)
    _apply(grid, field, inverse)
    _assert_restored(before, field, scale=abs(value))


def test_offset_keeps_negative_zero_blocked_through_the_round_trip() -> None:
    grid = Grid.of(1, 3)
    field = np.array([-0.0, 0.0, -1e-9], dtype=FIELD_DTYPE)
    inverse = _apply(grid, field, Offset(5.0))
    below_five = np.nextafter(np.float32(5), np.float32(0))
    assert field.tolist() == [below_five, 5.0, below_five]
    _apply(grid, field, inverse)
    assert blocked_mask(field).tolist() == [True, False, True]


@SETTINGS
@given(lattices(moderate=True))
def test_normalize_then_denormalize_restores(lattice: tuple[Grid, Field]) -> None:
    grid, field = lattice
    before = field.copy()
    was_open = ~blocked_mask(before)
    try:
        inverse = _apply(grid, field, Normalize())
    except FailedPrecondition:
        distinct = np.unique(before[was_open])
        assert distinct.size < 2 or np.std(distinct.astype(np.float64)) < 2**-126 * 4
        assert _same_bits(field, before)
        return
    assert isinstance(inverse, Denormalize)
    normalised = field[was_open].astype(np.float64)
    assert abs(normalised.mean()) < 1e-4
    assert abs(normalised.std() - 1) < 1e-4
    _apply(grid, field, inverse)
    _assert_restored(before, field, scale=abs(inverse.mean), ulps=16)


def test_normalize_round_trip_keeps_the_status_of_values_near_zero() -> None:
    # Many values within rounding of 0 on both sides: y * s + m in plain float32 arithmetic
    # brings some of them back on the wrong side of zero; the nudged normalisation must not.
    grid = Grid.of(3, 10)
    rng = np.random.default_rng(0)
    field = (rng.uniform(0, 1, 1000) * 10.0 ** rng.integers(-12, 1, 1000)).astype(FIELD_DTYPE)
    field[rng.random(1000) < 0.2] *= -1
    field[::37] = 0.0
    field[::41] = -0.0
    before = field.copy()
    inverse = _apply(grid, field, Normalize())
    assert isinstance(inverse, Denormalize)
    mean, std = np.float32(inverse.mean), np.float32(inverse.std)
    plain = ((before - mean) / std) * std + mean
    assert np.any(blocked_mask(plain) != blocked_mask(before))
    _apply(grid, field, inverse)
    _assert_restored(before, field, scale=abs(inverse.mean), ulps=16)


def test_normalize_uses_open_values_only_and_leaves_non_finite_bits() -> None:
    grid = Grid.of(1, 6)
    nan_with_payload = np.array([0x7FC0_1234], dtype=np.uint32).view(FIELD_DTYPE)[0]
    field = np.array([1, 3, -2, np.inf, nan_with_payload, -np.inf], dtype=FIELD_DTYPE)
    before = field.copy()
    assert _apply(grid, field, Normalize()) == Denormalize(2.0, 1.0)
    assert field[:3].tolist() == [-1.0, 1.0, -4.0]
    assert _same_bits(field[3:], before[3:])


@pytest.mark.parametrize(
    "values", [[1.0, 1.0, -1.0], [np.nan, -0.0, np.inf], [2.5, np.inf, np.inf]]
)
def test_normalize_needs_two_distinct_open_values(values: list[float]) -> None:
    grid = Grid.of(1, 3)
    field = np.array(values, dtype=FIELD_DTYPE)
    before = field.copy()
    with pytest.raises(FailedPrecondition):
        apply_transform(grid, field, Normalize())
    assert _same_bits(field, before)


@SETTINGS
@given(
    lattices(moderate=True),
    st.floats(-1e3, 1e3),
    st.floats(1e-2, 1e2),
)
def test_denormalize_is_undone_by_the_denormalize_it_returns(
    lattice: tuple[Grid, Field], mean: float, std: float
) -> None:
    grid, field = lattice
    before = field.copy()
    inverse = _apply(grid, field, Denormalize(mean, std))
    assert isinstance(inverse, Denormalize)
    assert inverse.std == pytest.approx(1 / std)
    _apply(grid, field, inverse)
    finite = np.isfinite(before)
    assert _same_bits(before[~finite], field[~finite])
    scale = np.maximum(np.abs(before[finite]), abs(mean) / std).astype(np.float64)
    assert np.all(np.abs(field[finite] - before[finite]) <= 1e-5 * scale + 1e-30)


@pytest.mark.parametrize(
    ("op", "values"),
    [
        (Scale(1e30), [1e10, 1.0]),
        (Scale(-1e30), [-1e10, np.inf]),
        (Offset(3e38), [1e38, 0.0]),
        (Offset(-3e38), [-1e38, np.nan]),
        (Denormalize(0.0, 1e30), [1e10, -1.0]),
        (Normalize(), [1.0, 1.0000001, -3e38]),
    ],
)
def test_overflowing_arithmetic_is_refused_before_any_change(
    op: TransformOp, values: list[float]
) -> None:
    grid = Grid.of(1, len(values))
    field = np.array(values, dtype=FIELD_DTYPE)
    before = field.copy()
    with pytest.raises(FailedPrecondition, match="overflow"):
        apply_transform(grid, field, op)
    assert _same_bits(field, before)


# Validation.

GRID_3D = Grid.of(3, 4)


@pytest.mark.parametrize(
    ("grid", "op", "fields"),
    [
        (GRID_3D, Xor(-1), {"xor.key"}),
        (GRID_3D, Xor(2**32), {"xor.key"}),
        (GRID_3D, Rotate(-1, 1, 1), {"rotate.axis_a"}),
        (GRID_3D, Rotate(3, 1, 1), {"rotate.axis_a"}),
        (GRID_3D, Rotate(0, 3, 1), {"rotate.axis_b"}),
        (GRID_3D, Rotate(1, 1, 1), {"rotate.axis_b"}),
        (GRID_3D, Rotate(5, -2, 1), {"rotate.axis_a", "rotate.axis_b"}),
        (Grid.of(1, 5), Rotate(0, 1, 1), {"rotate.axis_b"}),
        (Grid.of(1, 5), Rotate(0, 0, 1), {"rotate.axis_b"}),
        (GRID_3D, Flip(3), {"flip.axis"}),
        (GRID_3D, Flip(-1), {"flip.axis"}),
        (GRID_3D, Scale(0.0), {"scale.factor"}),
        (GRID_3D, Scale(-0.0), {"scale.factor"}),
        (GRID_3D, Scale(math.inf), {"scale.factor"}),
        (GRID_3D, Scale(math.nan), {"scale.factor"}),
        (GRID_3D, Scale(1e-39), {"scale.factor"}),
        (GRID_3D, Scale(1e39), {"scale.factor"}),
        (GRID_3D, Offset(math.nan), {"offset.value"}),
        (GRID_3D, Offset(-math.inf), {"offset.value"}),
        (GRID_3D, Offset(1e39), {"offset.value"}),
        (GRID_3D, Denormalize(0.0, 0.0), {"denormalize.std"}),
        (GRID_3D, Denormalize(0.0, -1.0), {"denormalize.std"}),
        (GRID_3D, Denormalize(0.0, math.nan), {"denormalize.std"}),
        (GRID_3D, Denormalize(0.0, math.inf), {"denormalize.std"}),
        (GRID_3D, Denormalize(math.nan, 1.0), {"denormalize.mean"}),
        (GRID_3D, Denormalize(3e38, 1e-3), {"denormalize.mean"}),
        (GRID_3D, Denormalize(math.inf, 0.0), {"denormalize.mean", "denormalize.std"}),
    ],
)
def test_invalid_ops_name_the_bad_operand(grid: Grid, op: TransformOp, fields: set[str]) -> None:
    field = np.arange(grid.vertex_count, dtype=FIELD_DTYPE)
    before = field.copy()
    with pytest.raises(InvalidArgument) as error:
        validate(grid, op)
    assert {name for name, _ in error.value.violations} == fields
    with pytest.raises(InvalidArgument):
        apply_transform(grid, field, op)
    assert _same_bits(field, before)


@pytest.mark.parametrize(
    "op",
    [Xor(0), Rotate(0, 2, 9), Rotate(2, 0, -1), Flip(2), Scale(-(2**126)), Offset(-3e38)],
)
def test_valid_edge_operands_pass(op: TransformOp) -> None:
    validate(GRID_3D, op)


# In place, on shared memory.

OPS: list[Callable[[], TransformOp]] = [
    lambda: Xor(0xDEADBEEF),
    lambda: Rotate(0, 2, 1),
    lambda: Flip(1),
    lambda: Scale(-2.0),
    lambda: Offset(1.5),
    Normalize,
    lambda: Denormalize(3.0, 2.0),
]


@pytest.mark.parametrize("make_op", OPS)
def test_transforms_write_into_the_buffer_they_are_given(
    make_op: Callable[[], TransformOp],
) -> None:
    grid = Grid.of(3, 5)
    original = np.random.default_rng(3).uniform(0, 9, grid.vertex_count).astype(FIELD_DTYPE)
    original[::7] = np.inf
    expected = original.copy()
    op = make_op()
    apply_transform(grid, expected, op)
    memory = shared_memory.SharedMemory(create=True, size=original.nbytes)
    try:
        field = np.ndarray(grid.vertex_count, dtype=FIELD_DTYPE, buffer=memory.buf)
        field[:] = original
        apply_transform(grid, field, op)
        assert bytes(memory.buf[: original.nbytes]) == expected.tobytes()
        assert expected.tobytes() != original.tobytes()
        del field
    finally:
        memory.close()
        memory.unlink()


def test_a_field_of_the_wrong_shape_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="field"):
        apply_transform(GRID_3D, np.zeros(10, dtype=FIELD_DTYPE), Xor(1))
    with pytest.raises(ValueError, match="field"):
        apply_transform(GRID_3D, np.zeros(64, dtype=np.float64), Xor(1))
