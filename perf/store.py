"""The gate's files: committed baselines (perf/baselines.json) and the run history (JSON lines)."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf.model import Baseline, Benchmark, Chosen, Direction

HERE = Path(__file__).resolve().parent
BASELINES = HERE / "baselines.json"
# Committed, so that `make perf-report` draws the same picture for everyone; PERF_HISTORY
# points a machine whose clone is thrown away (CI) at a file that persists.
HISTORY = HERE / "history.jsonl"

# The tolerance rule (`make perf-baseline`): twice the largest deviation of one run's figure
# from the median of the runs, rounded up to 5 points, at least MIN_TOLERANCE. A benchmark
# that needs more than MAX_TOLERANCE cannot see a 2x slowdown (a ratio that halves), so it is
# refused rather than recorded.
SAFETY_FACTOR = 2.0
STEP = 0.05
MIN_TOLERANCE = 0.15
MAX_TOLERANCE = 0.40


class TooNoisy(ValueError):
    """The runs spread too widely for a tolerance that would still catch a 2x regression."""


@dataclass(frozen=True)
class Recorded:
    """A baseline with the evidence behind it: each run's figure and when and where."""

    baseline: Baseline
    runs: tuple[float, ...]
    spread: float
    where: str

    def to_json(self) -> dict[str, Any]:
        return {
            "value": round(self.baseline.value, 6),
            "tolerance": self.baseline.tolerance,
            "spread": round(self.spread, 4),
            "runs": [round(r, 6) for r in self.runs],
            "recorded": self.where,
        }


def tolerance_for(spread: float) -> float:
    """The tolerance the rule gives a measured spread; TooNoisy above MAX_TOLERANCE."""
    wanted = max(MIN_TOLERANCE, math.ceil(round(SAFETY_FACTOR * spread / STEP, 6)) * STEP)
    if wanted > MAX_TOLERANCE:
        raise TooNoisy(
            f"runs spread by {spread:.1%}: a tolerance of {wanted:.0%} would not catch a 2x"
            f" regression (at most {MAX_TOLERANCE:.0%})"
        )
    return round(wanted, 2)


def record(runs: Sequence[float], where: str) -> Recorded:
    """A baseline from several runs' figures: their median, and the rule's tolerance."""
    if not runs:
        raise ValueError("a baseline needs at least one run")
    value = statistics.median(runs)
    spread = max(abs(r / value - 1) for r in runs)
    return Recorded(Baseline(value, tolerance_for(spread)), tuple(runs), spread, where)


def load_recorded(path: Path = BASELINES) -> dict[str, dict[str, Baseline]]:
    """Every committed baseline: {benchmark: {cpu model: Baseline}}. A ratio of our code to a
    peer's depends on the processor (an EPYC and a Xeon put numpy's and scipy's loops in a
    different order), so each CPU model the gate runs on has its own (ADR 61)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {
        name: {cpu: Baseline(e["value"], e["tolerance"]) for cpu, e in per_cpu.items()}
        for name, per_cpu in data.items()
    }


def baselines_for(
    keys: Sequence[str], benchmarks: Sequence[Benchmark], path: Path = BASELINES
) -> dict[str, Chosen]:
    """Per benchmark, the baseline recorded under the first of this machine's `keys` that has
    one (perf.run.baseline_keys, the most precise first); for a processor no baseline was
    recorded on, the most lenient of the others' (the one whose limit lets the worst figure
    pass), so that a new machine fails only where it is worse than every machine we know. A
    benchmark with no baseline at all is left out."""
    recorded = load_recorded(path)
    chosen: dict[str, Chosen] = {}
    for b in benchmarks:
        per_cpu = recorded.get(b.name, {})
        key = next((k for k in keys if k in per_cpu), None)
        if key is not None:
            chosen[b.name] = Chosen(per_cpu[key], key)
        elif per_cpu:
            sign = -1 if b.direction is Direction.HIGHER else 1
            where = max(per_cpu, key=lambda c: sign * per_cpu[c].limit(b.direction))
            chosen[b.name] = Chosen(per_cpu[where], where)
    return chosen


def save_baselines(recorded: Mapping[str, Recorded], cpu: str, path: Path = BASELINES) -> None:
    """Replaces the named benchmarks' entries for `cpu` and keeps every other."""
    data = json.loads(path.read_text()) if path.exists() else {}
    for name, r in recorded.items():
        data.setdefault(name, {})[cpu] = r.to_json()
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def history_path() -> Path:
    return Path(os.environ.get("PERF_HISTORY") or HISTORY)


def append_history(entry: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
