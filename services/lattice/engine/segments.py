"""The shared-memory segments fields travel through to the CPU workers, kept for reuse.

Creating a segment per job costs more than the job on a large lattice: the pages are allocated
(posix_fallocate), faulted in by the first copy, and faulted in again by the worker that maps
it. So the pool keeps segments that served a job cleanly (bounded, by bytes) and hands them to
the next job of the same size, and the workers keep their mappings (cpu_worker.Attachments).

A kept segment also remembers which field it holds, when a job left it untouched: the field of
a lattice version is an immutable (read-only) array in the field cache, so the next read-only
job on that same array needs no copy at all. Only read-only arrays are remembered (anything
writable could change behind the segment's back), through a weak reference (the segment
never keeps a field alive, and a field freed and another allocated at its address is not
mistaken for it).

Segments whose job went wrong (deadline, cancellation, crash) are never kept: their worker was
killed mid-job, so their contents are unknown. Discarded names are reported to the workers
(`take_forgotten`) so that they unmap them too; the parent alone unlinks.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from services.common.errors import ResourceExhausted
from services.lattice.engine.field import FIELD_DTYPE, Field

# Kept segments, all together, stay under this many bytes (64 MiB fields: two of them).
DEFAULT_KEEP_BYTES = 128 * 1024 * 1024


@dataclass
class _Kept:
    segment: SharedMemory
    vertices: int
    holds: weakref.ref[Field] | None  # the read-only field the segment holds, if known


class SegmentStock:
    """Segments by size for the pool's jobs: `take` one, then `keep` or `discard` it."""

    def __init__(self, prefix: str, *, keep_bytes: int = DEFAULT_KEEP_BYTES) -> None:
        if keep_bytes < 0:
            raise ValueError("keep_bytes must be at least 0")
        self.prefix = prefix
        self.keep_bytes = keep_bytes
        self._numbers = itertools.count()
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # oldest first
        self._kept_bytes = 0
        self._forgotten: list[str] = []

    def kept_names(self) -> list[str]:
        """Names of the segments kept for reuse (they exist in /dev/shm while kept)."""
        return list(self._kept)

    def take(self, vertices: int, source: Field | None) -> tuple[SharedMemory, bool]:
        """A segment for `vertices` values and whether `source` must be copied into it:
        False when the segment already holds exactly that read-only array."""
        fallback: str | None = None
        for name, kept in self._kept.items():
            if kept.vertices != vertices:
                continue
            if source is not None and kept.holds is not None and kept.holds() is source:
                return self._pop(name).segment, False
            if fallback is None or self._kept[fallback].holds is not None:
                fallback = name  # prefer one that holds nothing worth keeping
        if fallback is not None:
            return self._pop(fallback).segment, True
        return self._create(vertices), True

    def keep(self, segment: SharedMemory, vertices: int, holds: Field | None) -> None:
        """Keeps a segment whose job ended cleanly; `holds` is the field it still holds
        unchanged (remembered only when read-only), None when unknown or changed."""
        if segment.size > self.keep_bytes:
            self.discard(segment)
            return
        remembered = None
        if holds is not None and not holds.flags.writeable:
            remembered = weakref.ref(holds)
        while self._kept and self._kept_bytes + segment.size > self.keep_bytes:
            self.discard(self._pop(next(iter(self._kept))).segment)
        self._kept[segment.name] = _Kept(segment, vertices, remembered)
        self._kept_bytes += segment.size

    def discard(self, segment: SharedMemory) -> None:
        """Unmaps and unlinks a segment for good; the workers are told to unmap it too."""
        self._forgotten.append(segment.name)
        with contextlib.suppress(BufferError):
            segment.close()
        with contextlib.suppress(FileNotFoundError):
            segment.unlink()

    def take_forgotten(self) -> tuple[str, ...]:
        """Names discarded since the last call (for the workers to unmap)."""
        names, self._forgotten = tuple(self._forgotten), []
        return names

    def clear(self) -> None:
        """Discards every kept segment (the pool is closing)."""
        while self._kept:
            self.discard(self._pop(next(iter(self._kept))).segment)

    def _pop(self, name: str) -> _Kept:
        kept = self._kept.pop(name)
        self._kept_bytes -= kept.segment.size
        return kept

    def _create(self, vertices: int) -> SharedMemory:
        size = vertices * FIELD_DTYPE.itemsize
        name = f"{self.prefix}{next(self._numbers)}"
        segment = SharedMemory(name=name, create=True, size=size)
        try:
            _reserve(segment, size)
        except BaseException:
            self.discard(segment)
            raise
        return segment


def copy_into(segment: SharedMemory, source: Field) -> None:
    view = np.ndarray(source.shape, dtype=FIELD_DTYPE, buffer=segment.buf)
    view[:] = source
    del view


def copy_out(segment: SharedMemory, vertices: int) -> Field:
    view = np.ndarray((vertices,), dtype=FIELD_DTYPE, buffer=segment.buf)
    out: Field = view.copy()
    del view
    return out


def _reserve(segment: SharedMemory, size: int) -> None:
    """Allocates the segment's pages now: a full /dev/shm then fails here with ENOSPC instead of
    killing the process with SIGBUS at the first write to a page tmpfs cannot provide."""
    descriptor = getattr(segment, "_fd", -1)  # SharedMemory keeps its descriptor private.
    if descriptor < 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as error:
        raise ResourceExhausted(
            f"not enough shared memory for a {size:,}-byte field ({error.strerror})",
            retry_after_s=1,
        ) from None
