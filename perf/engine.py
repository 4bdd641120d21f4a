"""Engine vs a peer: one path query of ours against the same query of a graph library.

Both run in this thread, on the same lattice, in alternating blocks, timed in the thread's CPU
time (both are single-threaded, so time the scheduler gives to other processes is not
counted). The figure is our fastest block ÷ the peer's fastest, the times least disturbed by
other processes' use of the caches and memory bus, as `make bench` judges its targets: it
moves when our engine gets slower or faster, not when the machine does. The methods come from
`bench/methods.py`, so the gate times exactly what `make bench` times.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.lattice import Lattice, Mismatch, make_lattice
from perf.model import Context, Direction, Measurement, paired_ratios


@dataclass(frozen=True)
class Side:
    """One side of the comparison: an optional graph build (untimed) and a timed query that
    returns the answer's length (hops, or FIELD cost) for the cross-check."""

    label: str
    query: Callable[[Any, Lattice, int, int], float]
    build: Callable[[Lattice], Any] | None = None


def bench_methods(ours: str, peer: str) -> Callable[[], tuple[Side, Side]]:
    """The two sides from `bench.methods.METHODS` by key; imported when measured, because the
    peers (the `bench` extra) are installed by `make perf-check`, not by `make venv`."""

    def sides() -> tuple[Side, Side]:
        from bench.methods import METHODS, Method

        def side(method: Method) -> Side:
            def query(graph: Any, lattice: Lattice, s: int, t: int) -> float:
                return method.query(graph, lattice, s, t).cost

            return Side(method.label, query, method.build)

        return side(METHODS[ours]), side(METHODS[peer])

    return sides


# The shortest timed block of one side's queries.
BLOCK_S = 0.02


@functools.cache
def lattice(dimensions: int, size: int) -> Lattice:
    """The benchmark lattice of `bench/` (seeded, 20% blocked); made once per run."""
    return make_lattice(dimensions, size, pairs=0)


@dataclass(frozen=True)
class EngineVsPeer:
    """Our fastest query CPU time ÷ the peer's over `repeats` alternating blocks, corner to
    corner on a `size`^`dimensions` lattice; `ours` and `peer` are keys of
    `bench.methods.METHODS`, unless `sides` gives the two sides."""

    name: str
    ours: str
    peer: str
    size: int = 100
    dimensions: int = 3
    repeats: int = 11
    sides: Callable[[], tuple[Side, Side]] | None = None
    direction: Direction = Direction.LOWER
    needs_stack: bool = False

    @property
    def ratio(self) -> str:
        return (
            f"query CPU time of {self.ours} ÷ {self.peer} (bench/methods.py), same thread,"
            f" {self.size}^{self.dimensions} 20% blocked, corner to corner, fastest of"
            f" {self.repeats} alternating blocks each"
        )

    def measure(self, context: Context) -> Measurement:
        from services.lattice.engine.paths import warm_up

        ours, peer = (self.sides or bench_methods(self.ours, self.peer))()
        warm_up()  # the kernels compile (or load from numba's cache) before anything is timed
        grid = lattice(self.dimensions, self.size)
        s, t = grid.corner
        graph = peer.build(grid) if peer.build is not None else None
        # One untimed query each: the answers must agree (a fast wrong answer is no figure),
        # and their times size the timed blocks.
        peer_s, expected = _timed_once(lambda: peer.query(graph, grid, s, t))
        ours_s, got = _timed_once(lambda: ours.query(None, grid, s, t))
        if not math.isclose(expected, got, rel_tol=1e-6):
            raise Mismatch(f"{self.name}: {ours.label} answered {got}, {peer.label} {expected}")
        per_query: dict[str, list[float]] = {"ours": [], "peer": []}

        def block(
            key: str, side: Side, state: Any, seconds: float, work: int
        ) -> Callable[[], float]:
            """A timed block of queries, at least BLOCK_S long: a sub-millisecond query alone
            would be timed with the caches the other side just evicted, one long enough
            amortises that. Returns seconds per counted query (`work` queries each)."""
            count = max(1, math.ceil(BLOCK_S / seconds))

            def run() -> float:
                started = time.thread_time()
                for _ in range(count * work):
                    side.query(state, grid, s, t)
                per_query[key].append((time.thread_time() - started) / count)
                return per_query[key][-1]

            return run

        samples = paired_ratios(
            block("ours", ours, None, ours_s, context.work_factor),
            block("peer", peer, graph, peer_s, 1),
            self.repeats,
        )
        ours_min, peer_min = min(per_query["ours"]), min(per_query["peer"])
        return Measurement(
            ours_min / peer_min,
            samples,
            {
                "ours_min_ms": ours_min * 1e3,
                "peer_min_ms": peer_min * 1e3,
                "ours_median_ms": statistics.median(per_query["ours"]) * 1e3,
                "peer_median_ms": statistics.median(per_query["peer"]) * 1e3,
            },
        )


def _timed_once(query: Callable[[], float]) -> tuple[float, float]:
    """(seconds, answer) of one call."""
    started = time.perf_counter()
    answer = query()
    return time.perf_counter() - started, answer
