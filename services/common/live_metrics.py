"""Collectors that read live state when Prometheus scrapes, instead of gauges kept up to date.

A request pays nothing for such a metric: the pool, queue or relay is asked for a snapshot
only when /metrics is read (ADR 47). One collector serves the whole process; every component
that a server starts adds its snapshot function and removes it when it closes, so tests that
run several servers in one process see the sum (or, for `up`-like values, the worst).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

S = TypeVar("S")


class LiveCollector(Collector, Generic[S], abc.ABC):
    """Collects from every registered source; subclasses turn their snapshots into metrics.

    `collect` runs in the metrics server's thread, not on the event loop: a snapshot function
    must only read attributes (no awaiting, no I/O, no locks the loop holds).
    """

    def __init__(self) -> None:
        self._sources: dict[int, Callable[[], S]] = {}
        self._next_token = 0
        self._lock = threading.Lock()

    def add(self, snapshot: Callable[[], S]) -> int:
        """Registers a source; the returned token removes it."""
        with self._lock:
            self._next_token += 1
            self._sources[self._next_token] = snapshot
            return self._next_token

    def remove(self, token: int) -> None:
        with self._lock:
            self._sources.pop(token, None)

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: the registry then never calls collect() at registration time.
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            sources = list(self._sources.values())
        return self.metrics([snapshot() for snapshot in sources])

    @abc.abstractmethod
    def metrics(self, snapshots: list[S]) -> Iterable[Metric]:
        """The metric families for these snapshots (possibly none of them)."""
