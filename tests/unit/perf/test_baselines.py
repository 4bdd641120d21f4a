"""perf/baselines.json: an entry per benchmark, each following the tolerance rule from its runs."""

from __future__ import annotations

import json
import statistics

import pytest

from perf.model import Direction, Verdict
from perf.registry import BENCHMARKS
from perf.store import BASELINES, MAX_TOLERANCE, load_baselines, tolerance_for


def test_every_benchmark_has_a_committed_baseline_derived_from_its_runs() -> None:
    data = json.loads(BASELINES.read_text())
    assert set(data) == {b.name for b in BENCHMARKS}
    for name, entry in data.items():
        assert entry["value"] == pytest.approx(statistics.median(entry["runs"]), rel=1e-5), name
        assert entry["tolerance"] == tolerance_for(entry["spread"]), name


def test_every_committed_baseline_would_catch_its_subject_working_twice() -> None:
    baselines = load_baselines()
    for b in BENCHMARKS:
        base = baselines[b.name]
        assert base.tolerance <= MAX_TOLERANCE
        twice = base.value / 2 if b.direction is Direction.HIGHER else base.value * 2
        assert not Verdict(b.name, b.ratio, b.direction, base, twice).passed, b.name
