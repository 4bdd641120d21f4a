"""Benchmark 3: a shortest path on an unblocked lattice of about 10^6 vertices (the closed form)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.lattice import check_path, require
from bench.report import Progress, Stats, ms_pair, table, verdict
from services.lattice.engine.field import checksum
from services.lattice.engine.fills import ConstantFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, find_path

TARGET_S = 1e-3  # the target: <= 1 ms


def run(shapes: list[tuple[int, int]], repeats: int, progress: Progress) -> dict[str, Any]:
    """Corner-to-corner AUTO on each unblocked shape, with and without the known blocked count."""
    rows: list[dict[str, Any]] = []
    cells: list[list[str]] = []
    for dimensions, size in shapes:
        grid = Grid.of(dimensions, size)
        field = make_field(grid, ConstantFill(1.0))
        is_open = np.ones(grid.vertex_count, dtype=bool)
        start, end = (0,) * dimensions, (size - 1,) * dimensions
        s, t = 0, grid.vertex_count - 1
        shape = f"{size}^{dimensions} = {grid.vertex_count:,}"
        cases: list[tuple[str, Cost, int | None, bool]] = [
            ("AUTO, UNIT, blocked_count=0 (the service knows it)", Cost.UNIT, 0, True),
            ("AUTO, UNIT, blocked_count unknown (scans the field)", Cost.UNIT, None, True),
            ("AUTO, FIELD, uniform field, blocked_count=0", Cost.FIELD, 0, False),
        ]
        for label, cost, blocked_count, targeted in cases:
            stats = Stats()
            result = None
            for _ in range(repeats):
                began = time.perf_counter()
                result = find_path(grid, field, start, end, cost=cost, blocked_count=blocked_count)
                stats.add(time.perf_counter() - began)
            assert result is not None
            require(result.method == "closed_form", f"{label}: ran {result.method}")
            check_path(grid, is_open, result.vertices.astype(np.int64), s, t)
            hops = dimensions * (size - 1)
            require(result.hops == hops, f"{label}: {result.hops} hops, expected {hops}")
            passed = stats.min <= TARGET_S if targeted else None
            rows.append(
                {
                    "shape": shape,
                    "case": label,
                    "algorithm": Algorithm.AUTO.value,
                    "time": stats.to_json(),
                    "hops": result.hops,
                    "passes_1ms": passed,
                }
            )
            cells.append(
                [
                    shape,
                    label,
                    str(len(stats.samples)),
                    ms_pair(stats),
                    f"{result.hops} ✓",
                    "" if passed is None else verdict(passed),
                ]
            )
            progress(f"closed-form: {shape}, {label}: min {stats.min * 1e3:.3f} ms")
        # What part of that is the two checksums find_path reports (before and after).
        digest = Stats()
        for _ in range(repeats):
            began = time.perf_counter()
            checksum(field)
            digest.add(time.perf_counter() - began)
        rows.append({"shape": shape, "case": "checksum(field) alone", "time": digest.to_json()})
        cells.append(
            [
                shape,
                f"for scale: one checksum of the {field.nbytes / 2**20:.0f} MiB field (xxh3-128)",
                str(len(digest.samples)),
                ms_pair(digest),
                "",
                "",
            ]
        )
    columns = ["lattice", "call", "n", "time ms (min / med)", "hops (checked)", "≤ 1 ms (min)"]
    return {
        "rows": rows,
        "tables": [
            "**corner to corner, unblocked, `find_path` in-process**\n\n" + table(columns, cells)
        ],
    }
