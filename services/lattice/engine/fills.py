"""Field fills: constant, raw values, and a seeded random fill any device reproduces bit-exactly.

The random fill is counter-based, so vertex `i` needs nothing but the seed and `i`; a GPU kernel
that follows the recipe below produces the same bytes as this module.

    G   = 0x9E3779B97F4A7C15                       (SplitMix64's increment)
    mix(z):  z ^= z >> 30; z *= 0xBF58476D1CE4E5B9
             z ^= z >> 27; z *= 0x94D049BB133111EB
             z ^= z >> 31                          (all uint64, wrapping mod 2**64)
    value draw   a = mix(seed + (2*i + 1) * G)     (output 2i   of SplitMix64 seeded with `seed`)
    blocked draw b = mix(seed + (2*i + 2) * G)     (output 2i+1 of the same generator)
    blocked  iff (b >> 40) < T, T = floor(blocked_fraction * 2**24)   (integer comparison)
             -> +inf
    otherwise, in float32 with round-to-nearest and every operation rounded on its own (CUDA:
    __fsub_rn, __fmul_rn, __fadd_rn; no fused multiply-add):
        u = float32(a >> 40) * 2**-24              (exact; u in [0, 1))
        v = low + (high - low) * u                 i.e. fadd(low, fmul(fsub(high, low), u))
        v = min(v, nextafter(high, -inf))          (rounding may reach `high`; keep [low, high))

`low` and `high` are used as float32 (the values the API carries); -0.0 is taken as +0.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from services.common.errors import InvalidArgument
from services.lattice.engine.field import BYTES_PER_VERTEX, FIELD_DTYPE, Field
from services.lattice.engine.geometry import Grid

GOLDEN = 0x9E37_79B9_7F4A_7C15
MIX_1 = 0xBF58_476D_1CE4_E5B9
MIX_2 = 0x94D0_49BB_1331_11EB
U64_MASK = (1 << 64) - 1
FRACTION_BITS = 24
# Vertices per chunk: a few uint64 temporaries of this length (~2 MiB each) bound the memory.
CHUNK = 1 << 18

_F32_MAX = float(np.finfo(np.float32).max)
_TWO_POW_MINUS_24 = np.float32(2.0**-FRACTION_BITS)


@dataclass(frozen=True)
class ConstantFill:
    """Every vertex holds `value` (NaN, infinities and negatives allowed: they block)."""

    value: float


@dataclass(frozen=True)
class RandomFill:
    """Uniform float32 values in [low, high); a `blocked_fraction` of vertices set to +inf."""

    seed: int
    low: float
    high: float
    blocked_fraction: float


@dataclass(frozen=True)
class ValuesFill:
    """The caller's raw little-endian float32 values, one per vertex (4 bytes each)."""

    data: bytes = field(repr=False)


Fill = ConstantFill | RandomFill | ValuesFill


@dataclass(frozen=True)
class RandomParameters:
    """A checked RandomFill in the exact form the kernels use (what a GPU kernel is passed)."""

    seed: int
    low: np.float32
    span: np.float32
    below_high: np.float32
    threshold: int


def check_fill(grid: Grid, fill: Fill) -> None:
    """InvalidArgument naming `constant.value`, `random.*` or `values` when `fill` is unusable."""
    if isinstance(fill, ConstantFill):
        if math.isfinite(fill.value) and abs(fill.value) > _F32_MAX:
            raise InvalidArgument("constant.value", "is outside the float32 range")
    elif isinstance(fill, RandomFill):
        random_parameters(fill)
    else:
        expected = grid.vertex_count * BYTES_PER_VERTEX
        if len(fill.data) != expected:
            raise InvalidArgument(
                "values",
                f"must be {expected:,} bytes ({BYTES_PER_VERTEX} per vertex for"
                f" {grid.vertex_count:,} vertices), got {len(fill.data):,}",
            )


def random_parameters(fill: RandomFill) -> RandomParameters:
    """The fill's float32 bounds and integer threshold; InvalidArgument naming `random.*`."""
    violations: list[tuple[str, str]] = []
    if not 0 <= fill.seed <= U64_MASK:
        violations.append(("random.seed", "must be 0 to 2**64 - 1"))
    low = _as_float32(fill.low)
    high = _as_float32(fill.high)
    if low is None or low < 0:
        violations.append(("random.low", "must be finite, >= 0 and within the float32 range"))
    if high is None:
        violations.append(("random.high", "must be finite and within the float32 range"))
    elif low is not None and not high > low:
        violations.append(("random.high", "must be greater than random.low (as float32)"))
    fraction = fill.blocked_fraction
    if not (math.isfinite(fraction) and 0 <= fraction < 1):
        violations.append(("random.blocked_fraction", "must be at least 0 and below 1"))
    if violations:
        raise InvalidArgument.of(violations)
    assert low is not None
    assert high is not None
    low = low + np.float32(0.0)  # -0.0 + 0.0 is +0.0: the fill never writes a sign bit.
    return RandomParameters(
        seed=fill.seed,
        low=low,
        span=np.float32(high - low),
        below_high=np.nextafter(high, np.float32(-np.inf)),
        # fraction * 2**24 is exact in float64, so the floor is the exact threshold.
        threshold=math.floor(fraction * 2**FRACTION_BITS),
    )


def make_field(grid: Grid, fill: Fill, *, out: Field | None = None) -> Field:
    """The filled field: 1-D, C-contiguous little-endian float32 of length V, writable.

    With `out` (e.g. a shared-memory buffer of V float32) the values are written there and `out`
    is returned. Raises InvalidArgument (see `check_fill`) before touching any memory.
    """
    check_fill(grid, fill)
    vertices = grid.vertex_count
    if out is None:
        out = np.empty(vertices, dtype=FIELD_DTYPE)
    elif out.dtype != FIELD_DTYPE or out.shape != (vertices,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {FIELD_DTYPE} array of {vertices} values")
    if isinstance(fill, ConstantFill):
        out.fill(np.float32(fill.value))
    elif isinstance(fill, ValuesFill):
        out[:] = np.frombuffer(fill.data, dtype=FIELD_DTYPE, count=vertices)
    else:
        parameters = random_parameters(fill)
        for start in range(0, vertices, CHUNK):
            stop = min(start + CHUNK, vertices)
            fill_random_chunk(parameters, start, out[start:stop])
    return out


def fill_random_chunk(parameters: RandomParameters, start: int, out: Field) -> None:
    """Writes the random values of vertices start .. start + len(out) - 1 into `out`."""
    count = out.shape[0]
    index = np.arange(start, start + count, dtype=np.uint64)
    state = np.empty_like(index)
    scratch = np.empty_like(index)
    # Value draw: state = seed + (2i + 1) G  =  2G * i + (seed + G)   (mod 2**64).
    np.multiply(index, np.uint64((2 * GOLDEN) & U64_MASK), out=state)
    state += np.uint64((parameters.seed + GOLDEN) & U64_MASK)
    _mix(state, scratch)
    state >>= np.uint64(64 - FRACTION_BITS)
    values = state.astype(np.float32)
    values *= _TWO_POW_MINUS_24
    values *= parameters.span
    values += parameters.low
    np.minimum(values, parameters.below_high, out=out)
    if parameters.threshold:
        # Blocked draw: the next output of the generator, state + G.
        np.multiply(index, np.uint64((2 * GOLDEN) & U64_MASK), out=state)
        state += np.uint64((parameters.seed + 2 * GOLDEN) & U64_MASK)
        _mix(state, scratch)
        state >>= np.uint64(64 - FRACTION_BITS)
        out[state < np.uint64(parameters.threshold)] = np.float32(np.inf)


def _mix(state: npt.NDArray[np.uint64], scratch: npt.NDArray[np.uint64]) -> None:
    """SplitMix64's output function, in place on uint64 (array arithmetic wraps silently)."""
    np.right_shift(state, np.uint64(30), out=scratch)
    state ^= scratch
    state *= np.uint64(MIX_1)
    np.right_shift(state, np.uint64(27), out=scratch)
    state ^= scratch
    state *= np.uint64(MIX_2)
    np.right_shift(state, np.uint64(31), out=scratch)
    state ^= scratch


def splitmix64(state: int) -> int:
    """SplitMix64's output function on a Python int (the scalar reference)."""
    z = state & U64_MASK
    z = ((z ^ (z >> 30)) * MIX_1) & U64_MASK
    z = ((z ^ (z >> 27)) * MIX_2) & U64_MASK
    return z ^ (z >> 31)


def random_value(seed: int, index: int, low: float, high: float, blocked_fraction: float) -> float:
    """The random fill's value at vertex `index`, one vertex at a time (the reference)."""
    parameters = random_parameters(RandomFill(seed, low, high, blocked_fraction))
    blocked_draw = splitmix64(seed + (2 * index + 2) * GOLDEN) >> (64 - FRACTION_BITS)
    if blocked_draw < parameters.threshold:
        return math.inf
    value_draw = splitmix64(seed + (2 * index + 1) * GOLDEN) >> (64 - FRACTION_BITS)
    u = np.float32(value_draw) * _TWO_POW_MINUS_24
    value = parameters.low + parameters.span * u
    return float(min(value, parameters.below_high))


def _as_float32(value: float) -> np.float32 | None:
    """`value` rounded to float32, or None when it is not finite there."""
    if not math.isfinite(value) or abs(value) > _F32_MAX:
        return None
    return np.float32(value)
