"""Working memory, measured: the arrays an algorithm allocates beyond the field, live and peak."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

_Scalar = TypeVar("_Scalar", bound=np.generic)


class WorkingMemory:
    """Allocates an algorithm's arrays and counts their bytes (`nbytes`), so reports are measured.

    Only arrays obtained here (and `release`d when done) are counted; scalars and the bounded
    temporaries of vectorised numpy are not.
    """

    def __init__(self) -> None:
        self.live_bytes = 0
        self.peak_bytes = 0

    def empty(self, count: int, dtype: type[_Scalar]) -> npt.NDArray[_Scalar]:
        """An uninitialised 1-D array of `count` items."""
        return self._track(np.empty(count, dtype=dtype))

    def zeros(self, count: int, dtype: type[_Scalar]) -> npt.NDArray[_Scalar]:
        """A zeroed 1-D array of `count` items."""
        return self._track(np.zeros(count, dtype=dtype))

    def release(self, *arrays: npt.NDArray[Any]) -> None:
        """Marks arrays from this tracker as freed (the caller drops its references)."""
        for array in arrays:
            self.live_bytes -= array.nbytes

    def _track(self, array: npt.NDArray[_Scalar]) -> npt.NDArray[_Scalar]:
        self.live_bytes += array.nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        return array
