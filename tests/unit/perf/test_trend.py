"""perf/trend.py: the dashboard PNG draws every benchmark, with or without runs."""

from __future__ import annotations

from perf.model import Baseline
from perf.registry import BENCHMARKS
from perf.trend import draw


def entry(date: str, figure: float) -> dict:
    return {
        "date": date,
        "ratios": {"engine-bfs-unit": {"figure": figure, "samples": [figure * 0.9, figure * 1.1]}},
    }


def test_draws_a_png_with_a_panel_per_benchmark_even_without_runs() -> None:
    history = [entry("2026-12-05T08:00:00+00:00", 0.55), entry("2026-12-05T09:00:00+00:00", 0.9)]
    png = draw(history, BENCHMARKS, {"engine-bfs-unit": Baseline(0.55, 0.15)})
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert draw([], BENCHMARKS, {}).startswith(b"\x89PNG")
