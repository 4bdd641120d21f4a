"""Decoded fields in process memory, by (lattice id, version), least recently used out first.

A version of a field never changes, so an entry is never stale: a newer version is simply
another key. Only a lattice's newest known version is worth keeping, so the cache holds one
version per lattice. Entries are read-only arrays, shared by every request that reads them;
nothing writes a cached field (the compute backend works on its own copy).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from services.lattice import metrics
from services.lattice.engine.field import Field


class FieldCache:
    """At most `max_bytes` of fields; one larger than that is never kept. 0 disables it."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be at least 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[int, Field]] = OrderedDict()
        self._bytes = 0
        # Cheap insurance: every method is short, and a thread may one day call put().
        self._lock = threading.Lock()

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, lattice_id: str, version: int) -> Field | None:
        """The field at that version, counted as a hit or a miss."""
        with self._lock:
            entry = self._entries.get(lattice_id)
            found = entry[1] if entry is not None and entry[0] == version else None
            if found is not None:
                self._entries.move_to_end(lattice_id)
        (metrics.CACHE_HITS if found is not None else metrics.CACHE_MISSES).inc()
        return found

    def put(self, lattice_id: str, version: int, field: Field) -> None:
        """Keeps the field (made read-only) in place of the lattice's older version; a version
        older than the one held is ignored (a slow reader must not undo a transform's put)."""
        field.flags.writeable = False
        with self._lock:
            held = self._entries.get(lattice_id)
            if held is not None:
                if held[0] > version:
                    return
                self._remove(lattice_id)
            if field.nbytes > self.max_bytes:
                return
            self._entries[lattice_id] = (version, field)
            self._bytes += field.nbytes
            metrics.CACHE_BYTES.inc(field.nbytes)
            while self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))

    def discard(self, lattice_id: str) -> None:
        """Forgets the lattice (it was deleted)."""
        with self._lock:
            if lattice_id in self._entries:
                self._remove(lattice_id)

    def clear(self) -> None:
        with self._lock:
            while self._entries:
                self._remove(next(iter(self._entries)))

    def _remove(self, lattice_id: str) -> None:
        _, field = self._entries.pop(lattice_id)
        self._bytes -= field.nbytes
        metrics.CACHE_BYTES.dec(field.nbytes)
