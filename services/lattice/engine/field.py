"""The field: one little-endian float32 per vertex; blocked vertices; checksums."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import xxhash

FIELD_DTYPE = np.dtype("<f4")
BYTES_PER_VERTEX = FIELD_DTYPE.itemsize
SIGN_BIT = np.uint32(0x8000_0000)
EXPONENT_MASK = np.uint32(0x7F80_0000)
# A vertex is open exactly when its raw bits, read as an unsigned integer, are below this: the
# sign bit is clear and the exponent is not all ones (inf/NaN). Kernels compare against it.
OPEN_LIMIT = np.uint32(0x7F80_0000)

Field = npt.NDArray[np.float32]


def blocked_mask(field: Field) -> npt.NDArray[np.bool_]:
    """True where a vertex is blocked: NaN, +-inf, or sign bit set (negatives and -0.0)."""
    bits = field.view(np.uint32)
    # All-ones exponent is inf or NaN; one pass over the raw bits covers every case.
    mask: npt.NDArray[np.bool_] = ((bits & SIGN_BIT) != 0) | (
        (bits & EXPONENT_MASK) == EXPONENT_MASK
    )
    return mask


def checksum(field: Field | bytes) -> str:
    """Hex digest (XXH3-128: ~10 GB/s, so checksumming never dominates) of the raw bytes."""
    data = field if isinstance(field, bytes) else np.ascontiguousarray(field, FIELD_DTYPE).data
    return str(xxhash.xxh3_128_hexdigest(data))
