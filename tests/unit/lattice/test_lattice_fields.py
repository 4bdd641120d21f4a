"""Fills: the values length check, constant fills, checksums and the stored encoding."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest

from services.common.errors import InvalidArgument, Unimplemented
from services.lattice.engine.field import checksum
from services.lattice.fields import (
    ConstantFill,
    RandomFill,
    ValuesFill,
    check_fill,
    decode_field,
    encode_field,
)


def test_values_must_be_four_bytes_per_vertex() -> None:
    fill = ValuesFill(b"\x00" * 40)
    assert check_fill(fill, 10) is fill
    for wrong in (0, 39, 41, 80):
        with pytest.raises(InvalidArgument) as caught:
            check_fill(ValuesFill(b"\x00" * wrong), 10)
        assert caught.value.field == "values"
        assert "40 bytes" in caught.value.message
        assert f"got {wrong}" in caught.value.message


def test_a_fill_is_required() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_fill(None, 10)
    assert caught.value.field == "fill"


def test_random_fill_is_not_available_yet() -> None:
    with pytest.raises(Unimplemented, match="random fill is not available"):
        check_fill(RandomFill(seed=1, low=0.0, high=1.0, blocked_fraction=0.0), 10)


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -3.0, math.inf, -math.inf, math.nan, 3.4e38])
def test_any_float32_constant_is_accepted(value: float) -> None:
    check_fill(ConstantFill(value), 10)


def test_a_constant_beyond_float32_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_fill(ConstantFill(1e300), 10)
    assert caught.value.field == "constant.value"


def test_constant_field_is_little_endian_float32_with_the_engine_checksum() -> None:
    encoded = encode_field(ConstantFill(1.5), 6)
    raw = struct.pack("<6f", *[1.5] * 6)
    assert encoded.encoding == "zlib"
    assert zlib.decompress(encoded.data) == raw
    # The engine's checksum of the raw bytes, which later versions of the field will use too.
    assert encoded.checksum == checksum(raw)
    assert len(encoded.checksum) == 32


def test_values_field_keeps_every_bit() -> None:
    # Includes -0.0, NaN payloads and infinities: stored bytes must be exactly the caller's.
    raw = struct.pack("<5I", 0x80000000, 0x7FC00001, 0x7F800000, 0x3F800000, 0xFFFFFFFF)
    encoded = encode_field(ValuesFill(raw), 5)
    assert decode_field(encoded).tobytes() == raw
    assert encoded.checksum == checksum(raw)


def test_decoded_field_is_float32() -> None:
    values = decode_field(encode_field(ConstantFill(2.0), 4))
    assert values.dtype == np.dtype("<f4")
    assert values.tolist() == [2.0] * 4


def test_incompressible_fields_are_stored_raw() -> None:
    raw = np.random.default_rng(7).random(300_000, dtype=np.float32).astype("<f4").tobytes()
    encoded = encode_field(ValuesFill(raw), 300_000)
    assert encoded.encoding == "raw"
    assert encoded.data == raw
    assert decode_field(encoded).tobytes() == raw


def test_smooth_fields_are_compressed() -> None:
    raw = np.arange(300_000, dtype="<f4").tobytes()
    encoded = encode_field(ValuesFill(raw), 300_000)
    assert encoded.encoding == "zlib"
    assert len(encoded.data) < len(raw)
    assert decode_field(encoded).tobytes() == raw
