"""`make perf-report`: the trend of each ratio over the history, one panel each, as a PNG."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perf.model import Baseline, Benchmark, Direction

OUT = Path(__file__).resolve().parent.parent / "docs" / "img" / "perf-trend.png"


def draw(
    history: Sequence[Mapping[str, Any]],
    benchmarks: Sequence[Benchmark],
    baselines: Mapping[str, Baseline],
) -> bytes:
    """PNG bytes: per benchmark, each run's figure in order (the bar: the range of its pairs'
    ratios), the baseline and the band its tolerance allows; a run beyond the limit in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        len(benchmarks), 1, figsize=(9, 2.3 * len(benchmarks)), squeeze=False
    )
    for ax, benchmark in zip(axes[:, 0], benchmarks, strict=True):
        xs: list[int] = []
        ys: list[float] = []
        lows: list[float] = []
        highs: list[float] = []
        dates: list[str] = []
        for entry in history:
            ratio = entry["ratios"].get(benchmark.name)
            if ratio is not None:
                xs.append(len(xs))
                dates.append(entry["date"][5:16].replace("T", " "))
                ys.append(ratio["figure"])
                lows.append(ratio["figure"] - min(ratio["samples"]))
                highs.append(max(ratio["samples"]) - ratio["figure"])
        baseline = baselines.get(benchmark.name)
        colours = ["tab:blue"] * len(ys)
        if baseline is not None:
            higher = benchmark.direction is Direction.HIGHER
            limit = baseline.limit(benchmark.direction)
            colours = [
                "tab:red" if (y < limit if higher else y > limit) else "tab:blue" for y in ys
            ]
            ax.axhline(baseline.value, color="tab:green", linewidth=1, label="baseline")
            ax.axhspan(
                baseline.value * (1 - baseline.tolerance),
                baseline.value * (1 + baseline.tolerance),
                color="tab:green",
                alpha=0.12,
                label=f"± {baseline.tolerance:.0%}: fails {'below' if higher else 'above'}"
                f" {limit:.3g}",
            )
        if xs:
            ax.plot(xs, ys, color="tab:blue", linewidth=0.8)
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", ecolor="0.6", linewidth=0.8)
            ax.scatter(xs, ys, c=colours, s=14, zorder=3)
            ticks = sorted({xs[0], xs[len(xs) // 2], xs[-1]})
            ax.set_xticks(ticks, [dates[i] for i in ticks])
        else:
            ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{benchmark.name} ({benchmark.direction.text})", fontsize=10, loc="left")
        ax.tick_params(labelsize=8)
        if baseline is not None:
            ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel(
        "runs of the benchmark in perf/history.jsonl, oldest first (UTC); bars: the range of"
        " the run's pairs",
        fontsize=8,
    )
    figure.tight_layout()
    buffer = io.BytesIO()
    # No timestamp or version in the file: the same history draws the same bytes.
    figure.savefig(buffer, format="png", dpi=72, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
