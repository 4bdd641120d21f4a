"""Field storage: checksummed, compressed only when it pays, verified on every read.

The fills themselves are the engine's (`services.lattice.engine.fills`); this module only turns
a field into what PostgreSQL keeps and back.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from services.lattice.engine.field import FIELD_DTYPE, OPEN_LIMIT, Field, checksum

ZLIB = "zlib"
RAW = "raw"
# Float fields compress poorly past level 1, and a 64 MiB field must not take seconds.
ZLIB_LEVEL = 1
# Noisy fields barely compress yet cost seconds of zlib: a sample decides (PROBE_SLICES slices
# of PROBE_SLICE_BYTES spread over the field, about 3 ms of zlib at most), and the field is
# stored raw unless the sample shrinks below this fraction of its size. At 0.8, a random fill
# with a fifth of its vertices blocked (ratio 0.79) paid 111 ms of zlib per 4 MiB write to
# save a fifth of its bytes, and that CPU, in the lattice service's own process, was what one
# tenant's flood of transforms took from the others (ADRs 15 and 67).
PROBE_SLICES = 4
PROBE_SLICE_BYTES = 32 * 1024
WORTHWHILE_RATIO = 0.5


class FieldCorruptedError(RuntimeError):
    """Stored field bytes do not match their checksum (an internal fault, never the caller's)."""


@dataclass(frozen=True)
class EncodedField:
    """A field as stored: checksum of the raw bytes, those bytes (compressed or not), and how
    many of its vertices are blocked (None when read back from a row that does not know)."""

    checksum: str
    encoding: str
    data: bytes = field(repr=False)
    blocked_count: int | None


def count_blocked(values: Field) -> int:
    """Vertices that are NaN, +-inf or sign-bit-set: exactly those whose raw bits, unsigned, are
    at least OPEN_LIMIT (engine/field.py), so one comparison per vertex decides."""
    bits = np.ascontiguousarray(values, FIELD_DTYPE).view(np.uint32)
    return int(np.count_nonzero(bits >= OPEN_LIMIT))


def probe_of(raw: memoryview) -> bytes:
    """What compresses_well judges: all of a small field, else PROBE_SLICES slices spread
    evenly from its start to its end (a field's head alone can be a padding of zeros)."""
    if len(raw) <= PROBE_SLICES * PROBE_SLICE_BYTES:
        return bytes(raw)
    stride = (len(raw) - PROBE_SLICE_BYTES) // (PROBE_SLICES - 1)
    starts = [n * stride for n in range(PROBE_SLICES)]
    return b"".join(bytes(raw[start : start + PROBE_SLICE_BYTES]) for start in starts)


def compresses_well(raw: memoryview) -> bool:
    """Whether zlib is worth running on `raw`: it halves the sample, or better."""
    probe = probe_of(raw)
    return len(zlib.compress(probe, ZLIB_LEVEL)) < WORTHWHILE_RATIO * len(probe)


def encode_field(values: Field) -> EncodedField:
    """Checksums, counts and encodes the field (CPU-bound: run it off the event loop)."""
    values = np.ascontiguousarray(values, FIELD_DTYPE)
    raw = values.data.cast("B")
    # The engine's checksum, so that every version of a field is hashed the same way.
    digest = checksum(values)
    blocked = count_blocked(values)
    if compresses_well(raw):
        return EncodedField(digest, ZLIB, zlib.compress(raw, ZLIB_LEVEL), blocked)
    return EncodedField(digest, RAW, raw.tobytes(), blocked)


def decode_field(encoded: EncodedField, vertex_count: int) -> Field:
    """The stored field as a read-only float32 array, after checking its length and checksum.

    Raises FieldCorruptedError when the bytes are not what was stored (CPU-bound: run it off the
    event loop).
    """
    try:
        raw = zlib.decompress(encoded.data) if encoded.encoding == ZLIB else bytes(encoded.data)
    except zlib.error as exc:
        raise FieldCorruptedError(f"stored field does not decompress: {exc}") from None
    if len(raw) != vertex_count * FIELD_DTYPE.itemsize:
        raise FieldCorruptedError(
            f"stored field has {len(raw):,} bytes; {vertex_count:,} vertices need"
            f" {vertex_count * FIELD_DTYPE.itemsize:,}"
        )
    if checksum(raw) != encoded.checksum:
        raise FieldCorruptedError("stored field does not match its checksum")
    # frombuffer over immutable bytes: read-only, so a cached field can never be written.
    return np.frombuffer(raw, dtype=FIELD_DTYPE)
