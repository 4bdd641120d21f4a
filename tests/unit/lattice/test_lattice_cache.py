"""The in-process field cache: versions, the byte bound, LRU order and its metrics."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.lattice.cache import FieldCache


def field(vertices: int, value: float = 1.0) -> np.ndarray:
    return np.full(vertices, value, dtype="<f4")


def sample(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


def test_hits_are_by_version_and_counted() -> None:
    cache = FieldCache(1 << 20)
    hits, misses = (
        sample("catalytic_lattice_cache_hits_total"),
        sample("catalytic_lattice_cache_misses_total"),
    )
    cache.put("a", 1, field(4))
    assert cache.get("a", 1) is not None
    assert cache.get("a", 2) is None
    assert cache.get("b", 1) is None
    assert sample("catalytic_lattice_cache_hits_total") == hits + 1
    assert sample("catalytic_lattice_cache_misses_total") == misses + 2


def test_cached_fields_are_read_only() -> None:
    cache = FieldCache(1 << 20)
    values = field(4)
    cache.put("a", 1, values)
    cached = cache.get("a", 1)
    assert cached is not None
    with pytest.raises(ValueError, match="read-only"):
        cached[0] = 2.0


def test_a_newer_version_replaces_the_older_and_never_the_reverse() -> None:
    cache = FieldCache(1 << 20)
    cache.put("a", 1, field(4, 1.0))
    cache.put("a", 2, field(4, 2.0))
    assert cache.get("a", 1) is None
    assert len(cache) == 1
    assert cache.bytes_used == 16
    cache.put("a", 1, field(4, 1.0))  # a slow reader of version 1
    got = cache.get("a", 2)
    assert got is not None
    assert got[0] == 2.0


def test_the_byte_bound_evicts_least_recently_used_first() -> None:
    cache = FieldCache(100)
    cache.put("a", 1, field(10))
    cache.put("b", 1, field(10))
    assert cache.get("a", 1) is not None  # a is now the most recent
    cache.put("c", 1, field(10))
    assert cache.bytes_used == 80
    assert cache.get("b", 1) is None
    assert cache.get("a", 1) is not None
    assert cache.get("c", 1) is not None


def test_a_field_larger_than_the_bound_is_not_kept() -> None:
    cache = FieldCache(100)
    cache.put("a", 1, field(10))
    cache.put("a", 2, field(100))
    assert len(cache) == 0
    assert cache.bytes_used == 0
    disabled = FieldCache(0)
    disabled.put("x", 1, field(1))
    assert disabled.get("x", 1) is None


def test_discard_and_clear() -> None:
    cache = FieldCache(1000)
    cache.put("a", 1, field(10))
    cache.put("b", 1, field(10))
    cache.discard("a")
    cache.discard("missing")
    assert cache.get("a", 1) is None
    assert cache.bytes_used == 40
    cache.clear()
    assert len(cache) == 0
    assert cache.bytes_used == 0
