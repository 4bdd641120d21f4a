"""The gate's contract: a benchmark, what it measured, its baseline, and the verdict on a figure."""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from devstack import Stack


class Direction(enum.Enum):
    """Which way a ratio improves."""

    HIGHER = "higher"
    LOWER = "lower"

    @property
    def text(self) -> str:
        return f"{self.value} is better"


@dataclass(frozen=True)
class Measurement:
    """The judged figure, the ratio of each repeat's pair (the spread the history shows), and
    the raw figures behind them."""

    figure: float
    samples: tuple[float, ...]
    # What was divided (e.g. "ours_ms", "get_cpu_ms", "get_rps"): for the log and the history,
    # never judged. Absolute figures on a shared machine say more about the machine.
    details: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a measurement needs at least one sample")
        if not all(math.isfinite(s) and s > 0 for s in (self.figure, *self.samples)):
            raise ValueError(f"ratios must be finite and positive, got {self}")

    @classmethod
    def median_of(
        cls, samples: Sequence[float], details: Mapping[str, float] | None = None
    ) -> Measurement:
        """The figure is the median of the pairs' ratios."""
        return cls(statistics.median(samples), tuple(samples), details or {})


class Context(Protocol):
    """What a benchmark gets from the run: its repeat budget, a log, the shared stack."""

    # How many times the subject does its work per counted unit: 1, unless this benchmark is
    # named in PERF_PLANT_REGRESSION (a planted regression: the gate must fail on it).
    work_factor: int

    def progress(self, message: str) -> None: ...

    def stack(self) -> Stack:
        """The run's private devstack, started on first use and shared by every benchmark."""
        ...


class Benchmark(Protocol):
    """One entry of the gate. `measure` returns ratios of two figures taken in the same run,
    on the same machine, close together in time, so that the machine's speed cancels."""

    @property
    def name(self) -> str: ...

    @property
    def ratio(self) -> str:
        """What is divided by what, in words."""
        ...

    @property
    def direction(self) -> Direction: ...

    @property
    def needs_stack(self) -> bool: ...

    def measure(self, context: Context) -> Measurement: ...


@dataclass(frozen=True)
class Baseline:
    """A committed figure and how far a new one may fall behind it, as a fraction of it."""

    value: float
    tolerance: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value > 0):
            raise ValueError(f"a baseline must be finite and positive, got {self.value}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"a tolerance is a fraction in [0, 1), got {self.tolerance}")

    def limit(self, direction: Direction) -> float:
        """The worst figure that still passes."""
        if direction is Direction.HIGHER:
            return self.value * (1 - self.tolerance)
        return self.value * (1 + self.tolerance)


@dataclass(frozen=True)
class Chosen:
    """The baseline a run is judged against, and the CPU model it was recorded on."""

    baseline: Baseline
    recorded_on: str


@dataclass(frozen=True)
class Verdict:
    """A new figure judged against its baseline."""

    name: str
    ratio: str
    direction: Direction
    baseline: Baseline | None
    figure: float
    # Set when the baseline was recorded on another CPU model than the one measured now.
    borrowed_from: str | None = None

    @property
    def passed(self) -> bool:
        if self.baseline is None:
            return False
        limit = self.baseline.limit(self.direction)
        if self.direction is Direction.HIGHER:
            return self.figure >= limit
        return self.figure <= limit

    @property
    def improved(self) -> bool:
        """Better than the baseline by more than its tolerance: time to record a new one."""
        if self.baseline is None:
            return False
        b = self.baseline
        if self.direction is Direction.HIGHER:
            return self.figure > b.value * (1 + b.tolerance)
        return self.figure < b.value * (1 - b.tolerance)

    def message(self) -> str:
        """One line naming the benchmark, the baseline, the tolerance and the new figure."""
        if self.baseline is None:
            return (
                f"{self.name}: no baseline in perf/baselines.json for any CPU model"
                f" (new figure {self.figure:.4g});"
                f" record one with `make perf-baseline PERF_ARGS='--only {self.name}'`"
            )
        b = self.baseline
        change = self.figure / b.value - 1
        higher = self.direction is Direction.HIGHER
        worse = change < 0 if higher else change > 0
        return (
            f"{'' if self.passed else 'REGRESSION '}{self.name}: new figure {self.figure:.4g},"
            f" baseline {b.value:.4g}, tolerance {b.tolerance:.0%} ({self.direction.text};"
            f" {'fails below' if higher else 'fails above'} {b.limit(self.direction):.4g}):"
            f" {abs(change):.1%} {'worse' if worse else 'better'}.{self.borrowed()}"
            f" Ratio: {self.ratio}"
        )

    def borrowed(self) -> str:
        if self.borrowed_from is None:
            return ""
        return (
            f" No baseline recorded on this CPU model: judged against the most lenient one"
            f" ({self.borrowed_from}); record this one's with `make perf-baseline`."
        )


def judge(
    benchmark: Benchmark, chosen: Chosen | None, measurement: Measurement, keys: Sequence[str]
) -> Verdict:
    """The measurement against the chosen baseline (perf/store.py baselines_for) on the machine
    of `keys` (perf.run.baseline_keys); one recorded under no key of it is said to be borrowed."""
    return Verdict(
        benchmark.name,
        benchmark.ratio,
        benchmark.direction,
        chosen.baseline if chosen else None,
        measurement.figure,
        None if chosen is None or chosen.recorded_on in keys else chosen.recorded_on,
    )


def paired_ratios(
    subject: Callable[[], float], reference: Callable[[], float], repeats: int
) -> tuple[float, ...]:
    """`repeats` ratios subject() / reference(), each from a pair run back to back (the order
    alternating), so that a burst of load elsewhere falls on both sides of most pairs."""
    samples = []
    for i in range(repeats):
        if i % 2:
            b = reference()
            a = subject()
        else:
            a = subject()
            b = reference()
        samples.append(a / b)
    return tuple(samples)
