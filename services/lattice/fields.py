"""Lattice fields: the fills a caller may ask for, built as little-endian float32 and encoded."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from services.common.errors import InvalidArgument, Unimplemented
from services.lattice.engine.field import BYTES_PER_VERTEX, FIELD_DTYPE, Field, checksum

ZLIB = "zlib"
RAW = "raw"
# Float fields compress poorly past level 1, and a 64 MiB field must not take seconds.
ZLIB_LEVEL = 1
# Noisy fields barely compress yet cost seconds of zlib: a prefix this long decides, and the
# field is stored raw unless the prefix shrinks below this fraction of its size.
PROBE_BYTES = 1024 * 1024
WORTHWHILE_RATIO = 0.8
_FLOAT32_MAX = float(np.finfo(np.float32).max)
RANDOM_NOT_AVAILABLE = "random fill is not available in this release"


@dataclass(frozen=True)
class ConstantFill:
    """Every vertex holds `value` (any float32, NaN and negatives included: they block)."""

    value: float


@dataclass(frozen=True)
class RandomFill:
    """Seeded uniform values; not available in this release."""

    seed: int
    low: float
    high: float
    blocked_fraction: float


@dataclass(frozen=True)
class ValuesFill:
    """The caller's raw little-endian float32 values, one per vertex."""

    data: bytes = field(repr=False)


Fill = ConstantFill | RandomFill | ValuesFill


@dataclass(frozen=True)
class EncodedField:
    """A field ready for storage: checksum of the raw bytes, and those bytes as stored."""

    checksum: str
    encoding: str
    data: bytes = field(repr=False)


def check_fill(fill: Fill | None, vertex_count: int) -> Fill:
    """The fill, checked against `vertex_count`; InvalidArgument naming `fill` or `values`."""
    if fill is None:
        raise InvalidArgument("fill", "exactly one of constant, random or values must be set")
    if isinstance(fill, RandomFill):
        raise Unimplemented(RANDOM_NOT_AVAILABLE)
    if isinstance(fill, ConstantFill):
        if math.isfinite(fill.value) and abs(fill.value) > _FLOAT32_MAX:
            raise InvalidArgument("constant.value", "is outside the float32 range")
        return fill
    expected = vertex_count * BYTES_PER_VERTEX
    if len(fill.data) != expected:
        raise InvalidArgument(
            "values",
            f"must be {expected:,} bytes (4 per vertex for {vertex_count:,} vertices),"
            f" got {len(fill.data):,}",
        )
    return fill


def build_field(fill: Fill, vertex_count: int) -> Field:
    """The field as a little-endian float32 array; call only after every limit has passed."""
    if isinstance(fill, ConstantFill):
        return np.full(vertex_count, fill.value, dtype=FIELD_DTYPE)
    if isinstance(fill, ValuesFill):
        return np.frombuffer(fill.data, dtype=FIELD_DTYPE, count=vertex_count)
    raise Unimplemented(RANDOM_NOT_AVAILABLE)


def compresses_well(raw: memoryview) -> bool:
    """Whether zlib is worth running on `raw`, judged on its first PROBE_BYTES."""
    probe = raw[:PROBE_BYTES]
    return len(zlib.compress(probe, ZLIB_LEVEL)) < WORTHWHILE_RATIO * len(probe)


def encode_field(fill: Fill, vertex_count: int) -> EncodedField:
    """Builds, checksums and encodes the field (CPU-bound: run it off the event loop)."""
    values = np.ascontiguousarray(build_field(fill, vertex_count))
    raw = values.data.cast("B")
    # The engine's checksum, so that every version of a field is hashed the same way.
    digest = checksum(values)
    if compresses_well(raw):
        return EncodedField(digest, ZLIB, zlib.compress(raw, ZLIB_LEVEL))
    return EncodedField(digest, RAW, raw.tobytes())


def decode_field(encoded: EncodedField) -> Field:
    """The float32 field stored as `encoded` (compressed or raw)."""
    raw = zlib.decompress(encoded.data) if encoded.encoding == ZLIB else encoded.data
    return np.frombuffer(raw, dtype=FIELD_DTYPE)
