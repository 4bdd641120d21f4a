"""perf/baselines.json: per benchmark and CPU model an entry following the tolerance rule."""

from __future__ import annotations

import json
import statistics

import pytest

from perf.model import Direction, Verdict
from perf.registry import BENCHMARKS
from perf.store import BASELINES, MAX_TOLERANCE, load_recorded, tolerance_for


def test_every_benchmark_has_a_committed_baseline_derived_from_its_runs() -> None:
    data = json.loads(BASELINES.read_text())
    assert set(data) == {b.name for b in BENCHMARKS}
    cpus = {cpu for per_cpu in data.values() for cpu in per_cpu}
    # A processor keyed by family and model (ADR 71) may record only where it differs: the rest
    # fall back to its model name's entries, which must then record every benchmark.
    names = {cpu.split(" (family ")[0] for cpu in cpus}
    assert names <= cpus, "a family-and-model key without its model name's entries"
    for name, per_cpu in data.items():
        assert names <= set(per_cpu), f"{name}: each CPU model name records every benchmark"
        for cpu, entry in per_cpu.items():
            where = f"{name} on {cpu}"
            assert entry["value"] == pytest.approx(statistics.median(entry["runs"]), rel=1e-5), (
                where
            )
            assert entry["tolerance"] == tolerance_for(entry["spread"]), where


def test_every_committed_baseline_would_catch_its_subject_working_twice() -> None:
    recorded = load_recorded()
    for b in BENCHMARKS:
        for cpu, base in recorded[b.name].items():
            assert base.tolerance <= MAX_TOLERANCE
            twice = base.value / 2 if b.direction is Direction.HIGHER else base.value * 2
            assert not Verdict(b.name, b.ratio, b.direction, base, twice).passed, (b.name, cpu)
