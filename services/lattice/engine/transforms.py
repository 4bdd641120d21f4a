"""Reversible field transforms, applied in place; each returns the op that undoes it.

Conventions (the GPU backend must follow them bit for bit):

- XOR: the key is XORed into each value's raw 32 bits. Self-inverse, exact.
- ROTATE(a, b, k): k quarter turns (taken mod 4) in the plane of axes a and b, from axis a
  towards axis b, exactly `np.rot90(view, k, axes=(a, b))` on the d-dimensional view. One quarter
  turn moves the value at coordinates (.., x_a, .., x_b, ..) to (.., size-1-x_b, .., x_a, ..).
  Inverse: ROTATE(a, b, (4 - k % 4) % 4). Exact (a permutation).
- FLIP(axis): reverses the order along one axis. Self-inverse, exact.
- Arithmetic ops (SCALE, OFFSET, NORMALIZE, DENORMALIZE) change FINITE values only, in float32
  with every operation rounded separately (no fused multiply-add; CUDA: the `_rn` intrinsics).
  NaN and +-inf are blocked whatever they would become, so they are kept bit for bit; that makes
  every inverse restore them exactly. Finite values with the sign bit set (negatives, -0.0) are
  blocked too, but they are numbers and are transformed like open values. Operands are rounded to
  float32 first, and the inverse op carries those float32 values.
  - SCALE(f): x * f. Inverse SCALE(1/f), to float rounding; IEEE multiplication gets the sign
    right always, so every vertex comes back open or blocked as it was.
  - OFFSET(v): x + v. Inverse OFFSET(-v), to float rounding. A blocked x whose sum the inverse
    would bring back open (e.g. -0.0 + v - v = +0.0) is stored as nextafter(v, -inf) instead,
    one ulp below where +0.0 lands, so that the inverse keeps it blocked.
  - NORMALIZE: mean m and population standard deviation s (float64 accumulation) of the OPEN
    values, rounded to float32; x -> (x - m) / s. Inverse DENORMALIZE(m, s): y -> y * s + m.
    Where that inverse would flip a value's open/blocked status (values within rounding of 0),
    the normalised value is moved by an ulp or two until it does not, so NORMALIZE then its
    inverse restores every vertex's status exactly and its value to float rounding.
  - DENORMALIZE(m, s): y -> y * s + m. Its own inverse is DENORMALIZE(-m/s, 1/s), to float
    rounding (values within rounding of the zero point may change status in that round trip).
- An arithmetic op that would overflow float32 for some finite value is refused with
  FailedPrecondition before anything changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from services.common.errors import FailedPrecondition, InvalidArgument
from services.lattice.engine.field import FIELD_DTYPE, Field
from services.lattice.engine.geometry import Grid

KEY_LIMIT = 1 << 32
_F32_MAX = float(np.finfo(np.float32).max)
# Scale factors and standard deviations stay within [2**-126, 2**126], so their reciprocals are
# normal float32 too and every inverse is itself a valid op.
_MIN_MAGNITUDE, _MAX_MAGNITUDE = 2.0**-126, 2.0**126
# NORMALIZE keeps a factor-2 margin below float32's maximum so its ulp nudges never reach inf.
_NORMALIZE_LIMIT = _F32_MAX / 2
_NUDGE_LIMIT = 64
_UP, _DOWN = np.float32(np.inf), np.float32(-np.inf)
_INF_BITS = np.uint32(0x7F80_0000)
_LANES = 8


@dataclass(frozen=True)
class Xor:
    """XOR of each value's raw bits with a 32-bit key."""

    key: int


@dataclass(frozen=True)
class Rotate:
    """Quarter turns (any integer, taken mod 4) from axis_a towards axis_b."""

    axis_a: int
    axis_b: int
    quarter_turns: int


@dataclass(frozen=True)
class Flip:
    """Reversal along one axis."""

    axis: int


@dataclass(frozen=True)
class Scale:
    """Multiplies finite values by a finite, non-zero factor."""

    factor: float


@dataclass(frozen=True)
class Offset:
    """Adds a finite value to finite values."""

    value: float


@dataclass(frozen=True)
class Normalize:
    """Standardises with the open values' mean and standard deviation."""


@dataclass(frozen=True)
class Denormalize:
    """Undoes a Normalize: y * std + mean on finite values."""

    mean: float
    std: float


TransformOp = Xor | Rotate | Flip | Scale | Offset | Normalize | Denormalize


def validate(grid: Grid, op: TransformOp) -> None:
    """InvalidArgument naming each bad operand (`xor.key`, `rotate.axis_a`, ...)."""
    violations = _violations(grid, op)
    if violations:
        raise InvalidArgument.of(violations)


def _violations(grid: Grid, op: TransformOp) -> list[tuple[str, str]]:
    d = grid.dimensions
    axes = f"must be an axis, 0 to {d - 1}"
    found: list[tuple[str, str]] = []
    if isinstance(op, Xor):
        if not 0 <= op.key < KEY_LIMIT:
            found.append(("xor.key", "must be 0 to 2**32 - 1"))
    elif isinstance(op, Rotate):
        if not 0 <= op.axis_a < d:
            found.append(("rotate.axis_a", axes))
        if d < 2:
            found.append(("rotate.axis_b", "a rotation needs two axes; the lattice has one"))
        elif not 0 <= op.axis_b < d:
            found.append(("rotate.axis_b", axes))
        elif op.axis_b == op.axis_a:
            found.append(("rotate.axis_b", "must differ from axis_a"))
    elif isinstance(op, Flip):
        if not 0 <= op.axis < d:
            found.append(("flip.axis", axes))
    elif isinstance(op, Scale):
        if not _within_magnitudes(op.factor):
            found.append(("scale.factor", "must be finite and non-zero, |factor| in 2^-126..2^126"))
    elif isinstance(op, Offset):
        if not (math.isfinite(op.value) and abs(op.value) <= _F32_MAX):
            found.append(("offset.value", "must be finite and within the float32 range"))
    elif isinstance(op, Denormalize):
        std_ok = op.std > 0 and _within_magnitudes(op.std)
        if not std_ok:
            found.append(("denormalize.std", "must be positive, 2^-126 to 2^126"))
        if not (math.isfinite(op.mean) and abs(op.mean) <= _F32_MAX):
            found.append(("denormalize.mean", "must be finite and within the float32 range"))
        elif std_ok and abs(op.mean) / op.std > _F32_MAX:
            found.append(("denormalize.mean", "mean / std must be within the float32 range"))
    return found


def _within_magnitudes(value: float) -> bool:
    return math.isfinite(value) and _MIN_MAGNITUDE <= abs(value) <= _MAX_MAGNITUDE


def apply_transform(grid: Grid, field: Field, op: TransformOp) -> TransformOp:
    """Applies `op` to `field` in place and returns the op that undoes it.

    In place means the caller's buffer (it may be shared memory) is written; nothing is rebound.
    Raises InvalidArgument for a bad op and FailedPrecondition when the field does not allow it
    (overflow; NORMALIZE without two distinct open values), in both cases before any change.
    """
    validate(grid, op)
    _check_field(grid, field)
    if isinstance(op, Xor):
        bits = field.view(np.uint32)
        bits ^= np.uint32(op.key)
        return op
    if isinstance(op, Rotate):
        _rotate(grid, field, op)
        return Rotate(op.axis_a, op.axis_b, (4 - op.quarter_turns % 4) % 4)
    if isinstance(op, Flip):
        outer, inner = grid.size**op.axis, grid.size ** (grid.dimensions - 1 - op.axis)
        _flip_kernel(field.view(np.uint32).reshape(outer, grid.size, inner))
        return op
    if isinstance(op, Scale):
        factor = np.float32(op.factor)
        _refuse_overflow(field, lambda x: x * float(factor), "scale")
        _scale_kernel(field, factor)
        return Scale(1.0 / float(factor))
    if isinstance(op, Offset):
        value = np.float32(op.value)
        if value == 0:
            return Offset(0.0)
        _refuse_overflow(field, lambda x: x + float(value), "offset")
        _offset_kernel(field, value, np.nextafter(value, _DOWN))
        return Offset(-float(value))
    if isinstance(op, Normalize):
        mean, std = _open_statistics(field)
        _refuse_overflow(field, lambda x: (x - float(mean)) / float(std), "normalize")
        _normalize_kernel(field, mean, std)
        return Denormalize(float(mean), float(std))
    mean, std = np.float32(op.mean), np.float32(op.std)
    _refuse_overflow(field, lambda x: x * float(std) + float(mean), "denormalize")
    _denormalize_kernel(field, mean, std)
    return Denormalize(-float(mean) / float(std), 1.0 / float(std))


def _check_field(grid: Grid, field: Field) -> None:
    if (
        field.dtype != FIELD_DTYPE
        or field.shape != (grid.vertex_count,)
        or not field.flags.c_contiguous
    ):
        raise ValueError(f"the field must be a C-contiguous {FIELD_DTYPE} array of V values")


def _rotate(grid: Grid, field: Field, op: Rotate) -> None:
    turns = op.quarter_turns % 4
    a, b = op.axis_a, op.axis_b
    if a > b:
        # Turning from b towards a is turning the other way from a towards b.
        a, b, turns = b, a, (4 - turns) % 4
    if turns == 0:
        return
    n, d = grid.size, grid.dimensions
    shape = (n**a, n, n ** (b - a - 1), n, n ** (d - 1 - b))
    _rotate_kernel(field.view(np.uint32).reshape(shape), turns)


def _refuse_overflow(field: Field, image: Callable[[float], float], name: str) -> None:
    """FailedPrecondition when `image` (monotone) takes a finite value out of float32 range.

    A monotone image is extreme at the extremes of the finite values: the smallest and largest
    non-negative ones and the negatives of smallest and largest magnitude.
    """
    extremes = np.array(_finite_extremes(field.view(np.uint32)), dtype=np.uint32)
    values = extremes.view(np.float32)
    finite = [float(v) for v in values[:2] if math.isfinite(v)]
    finite += [-float(v) for v in values[2:] if math.isfinite(v)]
    limit = _NORMALIZE_LIMIT if name == "normalize" else _F32_MAX
    if any(abs(image(v)) > limit for v in finite):
        raise FailedPrecondition(f"{name} would overflow float32 for some values of this field")


def _open_statistics(field: Field) -> tuple[np.float32, np.float32]:
    """Mean and population standard deviation of the open values, rounded to float32."""
    count, mean, std = _open_moments(field, field.view(np.uint32))
    mean32, std32 = np.float32(mean), np.float32(std)
    if count < 2 or std32 == 0:
        raise FailedPrecondition("normalize needs at least two distinct open values")
    if not _within_magnitudes(float(std32)):
        raise FailedPrecondition(
            "normalize needs the open values' standard deviation within 2^-126..2^126"
        )
    return mean32, std32


# Kernels. Compiled once (cached on disk); they move raw bits or do float32 arithmetic only.


@numba.njit(cache=True)
def _finite_extremes(
    bits: npt.NDArray[np.uint32],
) -> tuple[np.uint32, np.uint32, np.uint32, np.uint32]:
    """Bits of the smallest and largest finite non-negative values and of the smallest and
    largest magnitudes of finite negative ones; 0x7F800000 (inf) where there is none."""
    none, zero = _INF_BITS, np.uint32(0)
    low, high, low_negative, high_negative = none, zero, none, zero
    for i in range(bits.size):
        b = bits[i]
        magnitude = b & np.uint32(0x7FFF_FFFF)
        finite = magnitude < none
        positive = finite & (b == magnitude)
        negative = finite & (b != magnitude)
        low = min(low, b if positive else none)
        high = max(high, b if positive else zero)
        low_negative = min(low_negative, magnitude if negative else none)
        high_negative = max(high_negative, magnitude if negative else zero)
    if low == none:
        high = none
    if low_negative == none:
        high_negative = none
    return low, high, low_negative, high_negative


@numba.njit(cache=True)
def _open_moments(field: Field, bits: npt.NDArray[np.uint32]) -> tuple[int, float, float]:
    """Count, mean and population standard deviation of the open values (float64, two passes).

    `bits` is the field's uint32 view: open is one comparison, so nothing branches on the data,
    and the sums run in _LANES independent partial sums so that the additions pipeline.
    """
    whole = field.size - field.size % _LANES
    counts = np.zeros(_LANES, dtype=np.int64)
    sums = np.zeros(_LANES)
    for i in range(0, whole, _LANES):
        for k in range(_LANES):
            is_open = bits[i + k] < _INF_BITS
            counts[k] += is_open
            sums[k] += float(field[i + k]) if is_open else 0.0
    for i in range(whole, field.size):
        is_open = bits[i] < _INF_BITS
        counts[0] += is_open
        sums[0] += float(field[i]) if is_open else 0.0
    count = int(counts.sum())
    if count == 0:
        return 0, 0.0, 0.0
    mean = float(sums.sum()) / count
    squares = np.zeros(_LANES)
    for i in range(0, whole, _LANES):
        for k in range(_LANES):
            is_open = bits[i + k] < _INF_BITS
            squares[k] += (float(field[i + k]) - mean) ** 2 if is_open else 0.0
    for i in range(whole, field.size):
        squares[0] += (float(field[i]) - mean) ** 2 if bits[i] < _INF_BITS else 0.0
    return count, mean, math.sqrt(float(squares.sum()) / count)


@numba.njit(cache=True)
def _scale_kernel(field: Field, factor: np.float32) -> None:
    for i in range(field.size):
        x = field[i]
        field[i] = x * factor if math.isfinite(x) else x


@numba.njit(cache=True)
def _offset_kernel(field: Field, value: np.float32, below_value: np.float32) -> None:
    for i in range(field.size):
        x = field[i]
        y = x + value
        # A blocked x must stay blocked through the inverse, y - value.
        y = below_value if np.signbit(x) and not np.signbit(y - value) else y
        field[i] = y if math.isfinite(x) else x


@numba.njit(cache=True)
def _normalize_kernel(field: Field, mean: np.float32, std: np.float32) -> None:
    for i in range(field.size):
        x = field[i]
        y = (x - mean) / std
        if np.signbit(y * std + mean) != np.signbit(x):
            y = _nudge(y, mean, std, np.signbit(x))
        field[i] = y if math.isfinite(x) else x


@numba.njit(cache=True)
def _nudge(y: np.float32, mean: np.float32, std: np.float32, blocked: bool) -> np.float32:
    """Steps y an ulp at a time until the inverse, y * std + mean, has the wanted sign."""
    for _ in range(_NUDGE_LIMIT):
        y = np.nextafter(y, _DOWN if blocked else _UP)
        if np.signbit(y * std + mean) == blocked:
            break
    return y


@numba.njit(cache=True)
def _denormalize_kernel(field: Field, mean: np.float32, std: np.float32) -> None:
    for i in range(field.size):
        y = field[i]
        field[i] = y * std + mean if math.isfinite(y) else y


@numba.njit(cache=True)
def _flip_kernel(bits: npt.NDArray[np.uint32]) -> None:
    outer, n, inner = bits.shape
    for p in range(outer):
        for i in range(n // 2):
            j = n - 1 - i
            for r in range(inner):
                bits[p, i, r], bits[p, j, r] = bits[p, j, r], bits[p, i, r]


@numba.njit(cache=True)
def _rotate_kernel(bits: npt.NDArray[np.uint32], turns: int) -> None:
    # bits[p, x_a, q, x_b, r]. Each orbit of a quarter turn in the (x_a, x_b) plane is
    # P0 = (i, j) -> P1 = (n-1-j, i) -> P2 = (n-1-i, n-1-j) -> P3 = (j, n-1-i) -> P0;
    # i < n // 2, j < (n + 1) // 2 visits every orbit once (an odd size's centre stays put).
    outer, n, middle, _, inner = bits.shape
    for p in range(outer):
        for q in range(middle):
            for i in range(n // 2):
                for j in range((n + 1) // 2):
                    ni, nj = n - 1 - i, n - 1 - j
                    for r in range(inner):
                        v0 = bits[p, i, q, j, r]
                        v1 = bits[p, nj, q, i, r]
                        v2 = bits[p, ni, q, nj, r]
                        v3 = bits[p, j, q, ni, r]
                        if turns == 1:
                            v0, v1, v2, v3 = v3, v0, v1, v2
                        elif turns == 2:
                            v0, v1, v2, v3 = v2, v3, v0, v1
                        else:
                            v0, v1, v2, v3 = v1, v2, v3, v0
                        bits[p, i, q, j, r] = v0
                        bits[p, nj, q, i, r] = v1
                        bits[p, ni, q, nj, r] = v2
                        bits[p, j, q, ni, r] = v3
