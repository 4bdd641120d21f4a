"""Benchmark 4: XOR, FLIP and ROTATE on 2^24 vertices against a plain numpy copy of the bytes.

Each op reads and writes every value once in place, so it touches 2 x 4 x V bytes, as
`np.copyto(dst, src)` of the field does (read src, write dst). The copy is timed in the same run,
before and after the ops, and its best time stands for the machine's memory bandwidth. Each op's
result is compared bit for bit with numpy's (`^`, `np.flip`, `np.rot90`) once, and the op's
inverse (untimed) restores the field after every repeat; the field's checksum is checked at the end.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.lattice import BLOCKED_FRACTION, FILL_SEED, HIGH, LOW, require
from bench.report import Progress, Stats, mib, ms_pair, table, verdict
from services.lattice.engine.field import checksum
from services.lattice.engine.fills import RandomFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.transforms import Flip, Rotate, TransformOp, Xor, apply_transform

TARGET_RATIO = 0.5  # the target: >= 50% of the machine's memory bandwidth
XOR_KEY = 0x5A5A_5A5A


def run(
    dimensions: int, size: int, repeats: int, progress: Progress, *, judged: bool = True
) -> dict[str, Any]:
    """Times each op and the copy; `judged`: whether the 50% target applies (2^24 vertices)."""
    grid = Grid.of(dimensions, size)
    field = make_field(
        grid, RandomFill(seed=FILL_SEED, low=LOW, high=HIGH, blocked_fraction=BLOCKED_FRACTION)
    )
    original = checksum(field)
    touched = 2 * field.nbytes
    copy = Stats()
    destination = np.empty_like(field)
    destination.fill(0)  # fault the pages in: the copy then measures bandwidth, not page faults

    def time_copies() -> None:
        for _ in range(repeats):
            began = time.perf_counter()
            np.copyto(destination, field)
            copy.add(time.perf_counter() - began)

    time_copies()
    progress(f"transforms: np.copyto min {copy.min * 1e3:.2f} ms")
    ops: list[TransformOp] = [Xor(XOR_KEY)]
    ops += [Flip(axis) for axis in range(dimensions)]
    planes = sorted({(0, 1), (dimensions - 2, dimensions - 1), (0, dimensions - 1)})
    ops += [Rotate(a, b, 1) for a, b in planes]
    timings: list[tuple[TransformOp, Stats]] = []
    for op in ops:
        stats = Stats()
        expected = _reference(grid, field, op)
        for repeat in range(repeats):
            began = time.perf_counter()
            inverse = apply_transform(grid, field, op)
            stats.add(time.perf_counter() - began)
            if repeat == 0:
                require(
                    np.array_equal(field.view(np.uint32), expected),
                    f"{op}: the field differs from numpy's result",
                )
            apply_transform(grid, field, inverse)
        del expected
        timings.append((op, stats))
        progress(f"transforms: {_label(op)} min {stats.min * 1e3:.2f} ms")
    time_copies()
    require(checksum(field) == original, "transforms: the inverses did not restore the field")
    copy_rate = touched / copy.min
    cells = [
        [
            "np.copyto(dst, src) (the bandwidth reference)",
            str(len(copy.samples)),
            ms_pair(copy),
            mib(touched),
            f"{copy_rate / 1e9:.2f}",
            "1.000",
            "",
        ]
    ]
    rows: list[dict[str, Any]] = [
        {"op": "np.copyto", "time": copy.to_json(), "bytes": touched, "gb_per_s": copy_rate / 1e9}
    ]
    for op, stats in timings:
        rate = touched / stats.min
        ratio = rate / copy_rate
        rows.append(
            {
                "op": _label(op),
                "time": stats.to_json(),
                "bytes": touched,
                "gb_per_s": rate / 1e9,
                "ratio_to_copy": ratio,
                "passes_half_bandwidth": ratio >= TARGET_RATIO if judged else None,
            }
        )
        cells.append(
            [
                _label(op),
                str(len(stats.samples)),
                ms_pair(stats),
                mib(touched),
                f"{rate / 1e9:.2f}",
                f"{ratio:.3f}",
                verdict(ratio >= TARGET_RATIO) if judged else "",
            ]
        )
    columns = [
        "op (in place)",
        "n",
        "time ms (min / med)",
        "MiB touched",
        "GB/s (at min)",
        "÷ copy GB/s",
        "≥ 0.5",
    ]
    title = (
        f"{size}^{dimensions} = {grid.vertex_count:,} vertices ({mib(field.nbytes)} MiB field),"
        " apply_transform in-process, one thread"
    )
    return {"rows": rows, "tables": [f"**{title}**\n\n" + table(columns, cells)]}


def _label(op: TransformOp) -> str:
    if isinstance(op, Xor):
        return f"XOR key 0x{op.key:08X}"
    if isinstance(op, Flip):
        return f"FLIP axis {op.axis}"
    if isinstance(op, Rotate):
        return f"ROTATE axes ({op.axis_a}, {op.axis_b}), {op.quarter_turns} quarter turn"
    return repr(op)


def _reference(grid: Grid, field: npt.NDArray[np.float32], op: TransformOp) -> Any:
    """numpy's result of `op` on the field's raw bits (a new flat uint32 array)."""
    bits = field.view(np.uint32)
    if isinstance(op, Xor):
        return bits ^ np.uint32(op.key)
    view = bits.reshape(grid.shape)
    if isinstance(op, Flip):
        return np.ascontiguousarray(np.flip(view, op.axis)).reshape(-1)
    assert isinstance(op, Rotate)
    turned = np.rot90(view, op.quarter_turns, axes=(op.axis_a, op.axis_b))
    return np.ascontiguousarray(turned).reshape(-1)


def warm_up() -> None:
    """Loads (or compiles) the transform kernels on a tiny lattice, so no timing pays for it."""
    grid = Grid.of(4, 4)
    field = make_field(grid, RandomFill(seed=1, low=LOW, high=HIGH, blocked_fraction=0.2))
    for op in (Xor(1), Flip(0), Rotate(0, 1, 1)):
        apply_transform(grid, field, op)
