"""Benchmark 5: peak memory of each method (graph + one corner-to-corner query).

Each measurement runs in a fresh `spawn` child, so nothing a previous one allocated (or an
allocator kept) is counted. The child imports everything, makes the lattice and, for the
engine, loads the compiled kernels; then it resets the kernel's peak-RSS mark
(/proc/self/clear_refs, "5") and reads its RSS: the baseline. It builds the peer's graph, runs the
query, and reports the peak RSS since the reset minus the baseline. This counts C and Rust
allocations (igraph, rustworkx) and numba's, which tracemalloc does not see; for the engine it
also reports `extra_bytes` (the arrays the engine counts) and tracemalloc's peak (numpy's
allocations, a second run of the query). The field itself (4 bytes a vertex) is in every
baseline.
"""

from __future__ import annotations

import gc
import multiprocessing
import resource
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.report import Progress, mib, table

KIB = 1024


def run(
    keys: list[str], dimensions: int, size: int, workers: int, progress: Progress
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, max_tasks_per_child=1
    ) as executor:
        futures = {key: executor.submit(measure, key, dimensions, size) for key in keys}
        for key, future in futures.items():
            results[key] = future.result()
            r = results[key]
            progress(f"memory: {r['label']}: peak +{mib(r['peak_delta_bytes'])} MiB")
    _check_answers(results)
    from bench.lattice import make_lattice, undirected_edges

    edges = int(undirected_edges(make_lattice(dimensions, size, pairs=0))[0].size)
    return _summarise(results, dimensions, size, edges)


def measure(key: str, dimensions: int, size: int) -> dict[str, Any]:
    """In a fresh process: the memory `key` needs beyond the lattice (see the module docstring)."""
    from bench.lattice import make_lattice
    from bench.methods import METHODS
    from services.lattice.engine.paths import warm_up

    method = METHODS[key]
    lattice = make_lattice(dimensions, size, pairs=0)
    if method.ours:
        warm_up()
    gc.collect()
    exact = _reset_peak()
    baseline_rss = _status_bytes("VmRSS")
    baseline_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB
    graph = method.build(lattice) if method.build is not None else None
    gc.collect()
    built_rss = _status_bytes("VmRSS")
    answer = method.query(graph, lattice, *lattice.corner)
    if exact:
        peak = _status_bytes("VmHWM")
    else:
        # Without clear_refs the high-water mark may predate the baseline: a lower bound.
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB, baseline_maxrss)
    traced = None
    if method.ours:
        tracemalloc.start()
        method.query(graph, lattice, *lattice.corner)
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {
        "key": key,
        "label": method.label,
        "library": method.library,
        "vertices": lattice.grid.vertex_count,
        "field_bytes": int(lattice.field.nbytes),
        "peak_delta_bytes": peak - baseline_rss,
        "graph_delta_bytes": built_rss - baseline_rss if method.build is not None else 0,
        "engine_extra_bytes": answer.extra_bytes,
        "tracemalloc_peak_bytes": traced,
        "peak_is_exact": exact,
        "hops": answer.hops,
        "cost": answer.cost,
    }


def _check_answers(results: dict[str, dict[str, Any]]) -> None:
    from bench.lattice import require

    for cost in ("unit", "field"):
        group = [r for k, r in results.items() if k.startswith(f"{cost}/")]
        if not group:
            continue
        first = group[0]
        for r in group[1:]:
            if cost == "unit":
                require(r["hops"] == first["hops"], f"memory: {r['label']} found {r['hops']} hops")
            else:
                require(
                    abs(r["cost"] - first["cost"]) <= 1e-6 * abs(first["cost"]),
                    f"memory: {r['label']} found cost {r['cost']}",
                )


def _summarise(
    results: dict[str, dict[str, Any]], dimensions: int, size: int, edges: int
) -> dict[str, Any]:
    from services.lattice.engine.analysis import csr_bytes, igraph_bytes

    tables = []
    for cost, title in (("unit", "UNIT cost"), ("field", "FIELD cost")):
        group = [r for k, r in results.items() if k.startswith(f"{cost}/")]
        if not group:
            continue
        auto = next((r for r in group if r["key"].endswith("ours-auto")), None)
        cells = []
        for r in group:
            ratio = (
                _ratio(r["peak_delta_bytes"] / auto["peak_delta_bytes"])
                if auto and auto["peak_delta_bytes"] > 0
                else ""
            )
            cells.append(
                [
                    r["label"],
                    "—"
                    if r["engine_extra_bytes"] is None
                    else f"{mib(r['engine_extra_bytes'])}"
                    f" ({mib(r['engine_extra_bytes'] + r['field_bytes'])})",
                    "—"
                    if r["tracemalloc_peak_bytes"] is None
                    else mib(r["tracemalloc_peak_bytes"]),
                    "—" if r["library"] == "ours" else mib(r["graph_delta_bytes"]),
                    mib(r["peak_delta_bytes"]) + ("" if r["peak_is_exact"] else " (≥)"),
                    ratio,
                ]
            )
        columns = [
            "method",
            "engine extra_bytes (+ field) MiB",
            "tracemalloc peak MiB",
            "RSS after build MiB",
            "peak RSS (build + query) MiB",
            "÷ ours AUTO",
        ]
        field_mib = mib(group[0]["field_bytes"])
        heading = (
            f"**{title}, {size}^{dimensions}, corner to corner: memory beyond the lattice"
            f" (the {field_mib} MiB field is in every baseline)**"
        )
        tables.append(heading + "\n\n" + table(columns, cells))
    vertices = next(iter(results.values()))["vertices"]
    models = {
        "csr_bytes": csr_bytes(vertices, edges),
        "csr_weights_bytes": 2 * edges * 8,
        "igraph_bytes": igraph_bytes(vertices, edges),
    }
    tables.append(
        f"For scale, analysis.py's models of an explicit graph of this lattice ({vertices:,}"
        f" vertices, {edges:,} open edges): CSR adjacency with int64 indices"
        f" {mib(models['csr_bytes'])} MiB (+ {mib(models['csr_weights_bytes'])} MiB of float64"
        f" weights for a weighted csgraph), igraph_t {mib(models['igraph_bytes'])} MiB (an"
        " undirected graph; a directed one for FIELD cost has twice the edges)."
    )
    return {"rows": list(results.values()), "edges": edges, "models": models, "tables": tables}


def _ratio(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}"


def _reset_peak() -> bool:
    """Resets this process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_bytes(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * KIB
    raise RuntimeError(f"/proc/self/status has no {name}")
