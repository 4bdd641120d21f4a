"""Field storage: checksums, blocked counts, the stored encoding and verification on read."""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest

from services.lattice.engine.field import blocked_mask, checksum
from services.lattice.fields import (
    FieldCorruptedError,
    count_blocked,
    decode_field,
    encode_field,
)


def as_field(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4")


def test_constant_field_is_little_endian_float32_with_the_engine_checksum() -> None:
    raw = struct.pack("<1000f", *[1.5] * 1000)
    encoded = encode_field(as_field(raw))
    assert encoded.encoding == "zlib"
    assert zlib.decompress(encoded.data) == raw
    # The engine's checksum of the raw bytes, which later versions of the field will use too.
    assert encoded.checksum == checksum(raw)
    assert len(encoded.checksum) == 32
    assert encoded.blocked_count == 0


def test_every_bit_survives_storage() -> None:
    # -0.0, NaN payloads and infinities: stored bytes must be exactly the caller's.
    raw = struct.pack("<5I", 0x80000000, 0x7FC00001, 0x7F800000, 0x3F800000, 0xFFFFFFFF)
    encoded = encode_field(as_field(raw))
    decoded = decode_field(encoded, 5)
    assert decoded.tobytes() == raw
    assert decoded.dtype == np.dtype("<f4")
    assert not decoded.flags.writeable
    assert encoded.checksum == checksum(raw)
    assert encoded.blocked_count == 4


def test_blocked_count_agrees_with_the_engine() -> None:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**32, size=10_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view("<f4")
    assert count_blocked(values) == int(np.count_nonzero(blocked_mask(values)))


def test_incompressible_fields_are_stored_raw() -> None:
    raw = np.random.default_rng(7).random(300_000, dtype=np.float32).astype("<f4").tobytes()
    encoded = encode_field(as_field(raw))
    assert encoded.encoding == "raw"
    assert encoded.data == raw
    assert decode_field(encoded, 300_000).tobytes() == raw


def test_smooth_fields_are_compressed() -> None:
    raw = np.arange(300_000, dtype="<f4").tobytes()
    encoded = encode_field(as_field(raw))
    assert encoded.encoding == "zlib"
    assert len(encoded.data) < len(raw)
    assert decode_field(encoded, 300_000).tobytes() == raw


@pytest.mark.parametrize("encoding", ["zlib", "raw"])
def test_corruption_is_detected_on_read(encoding: str) -> None:
    raw = np.arange(1000, dtype="<f4").tobytes()
    encoded = encode_field(as_field(raw))
    if encoding == "raw":
        encoded = replace(encoded, encoding="raw", data=raw)
    flipped = bytearray(raw)
    flipped[123] ^= 0x01
    data = zlib.compress(bytes(flipped)) if encoding == "zlib" else bytes(flipped)
    with pytest.raises(FieldCorruptedError, match="checksum"):
        decode_field(replace(encoded, data=data), 1000)
    with pytest.raises(FieldCorruptedError, match="bytes"):
        decode_field(replace(encoded, data=zlib.compress(raw[:-4]), encoding="zlib"), 1000)
    with pytest.raises(FieldCorruptedError, match="decompress"):
        decode_field(replace(encoded, data=b"not zlib", encoding="zlib"), 1000)


def test_a_random_fill_with_blocked_vertices_is_stored_raw() -> None:
    # Ratio 0.79 under zlib: compressing 4 MiB cost ~110 ms of the service's CPU per write to
    # save a fifth of the bytes; such fields are stored as they are.
    rng = np.random.default_rng(11)
    values = (rng.random(1_000_000, dtype=np.float32) + 1).astype("<f4")
    values[rng.random(1_000_000) < 0.2] = np.inf
    encoded = encode_field(values)
    assert encoded.encoding == "raw"
    assert decode_field(encoded, 1_000_000).tobytes() == values.tobytes()


def test_the_sample_reaches_past_a_compressible_head() -> None:
    # A field whose first quarter is constant and the rest noise: judged on its head alone it
    # would be compressed; the spread sample sees the noise.
    rng = np.random.default_rng(5)
    values = rng.random(1_000_000, dtype=np.float32).astype("<f4")
    values[:250_000] = 1.0
    assert encode_field(values).encoding == "raw"
    values[:] = 1.0
    values[:250_000] = rng.random(250_000, dtype=np.float32)
    assert encode_field(values).encoding == "zlib"
