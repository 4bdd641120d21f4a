"""Benchmarks 1 and 2: s-t paths on one lattice, the engine against igraph, scipy, rustworkx and
networkx, each peer timed building its graph, answering, and both.

Repeats run round-robin over the methods (repeat 1 of every method, then repeat 2, ...), so a
burst of load from elsewhere on the machine spreads over all of them. Every answer is checked
against the engine's reference (BFS hops for UNIT, DIJKSTRA cost for FIELD); a mismatch raises.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.lattice import Lattice, check_path, require
from bench.methods import FIELD, UNIT, Answer, Method, methods
from bench.report import Progress, Stats, ms, ms_pair, table, verdict
from services.lattice.engine.field import checksum

# The engine's targets (docs/performance.md, "Targets at a glance").
UNIT_QUERY_RATIO = 1 / 3  # ours <= 1/3 of the fastest peer's query-only time
UNIT_BUILD_QUERY_SPEEDUP = 20.0  # ours >= 20x faster than any peer's build + query
FIELD_SCIPY_RATIO = 1 / 2  # ours <= 1/2 of scipy's Dijkstra query time
COST_TOLERANCE = 1e-6  # relative, FIELD costs


@dataclass
class Row:
    """One method's timings over the repeats; `pairs` holds the mean time per pair query."""

    method: Method
    build: Stats = field(default_factory=Stats)
    corner: Stats = field(default_factory=Stats)
    pairs: Stats = field(default_factory=Stats)
    corner_total: Stats = field(default_factory=Stats)
    pairs_total: Stats = field(default_factory=Stats)
    spent_s: float = 0.0
    corner_answer: Answer | None = None
    pair_methods: Counter[str] = field(default_factory=Counter)  # the engine's, last repeat

    @property
    def repeats(self) -> int:
        return len(self.corner.samples)

    def stats(self, case: str) -> tuple[Stats | None, Stats, Stats]:
        """(build, query, build + query) for "corner" or "pairs"."""
        build = self.build if self.method.build is not None else None
        if case == "corner":
            return build, self.corner, self.corner_total
        return build, self.pairs, self.pairs_total


def run(
    lattice: Lattice,
    cost: str,
    *,
    repeats: int,
    networkx_repeats: int,
    networkx_included: bool,
    row_budget_s: float,
    progress: Progress,
    name: str,
    judged: bool = True,
) -> dict[str, Any]:
    """Times every method of `cost` on the lattice's corner pair and random pairs.

    judged: whether the engine's targets apply (they are set for the 100^3 lattice); otherwise the
    ratios are shown without PASS/FAIL.
    """
    rows = [Row(m) for m in methods(cost, networkx_included=networkx_included)]
    reference = _reference(lattice, cost)
    for repeat in range(repeats):
        for row in rows:
            wanted = networkx_repeats if row.method.library == "networkx" else repeats
            if repeat >= wanted or (repeat > 0 and row.spent_s > row_budget_s):
                continue
            _one_repeat(lattice, cost, row, reference)
            progress(
                f"{name}: {row.method.label} repeat {repeat + 1}/{wanted}:"
                f" build {ms(row.build.samples[-1]) if row.method.build else '-'} ms,"
                f" corner {ms(row.corner.samples[-1])} ms,"
                f" pairs {ms(row.pairs.samples[-1])} ms/query"
            )
    return _summarise(lattice, cost, rows, reference, name, row_budget_s, judged)


def _reference(lattice: Lattice, cost: str) -> dict[tuple[int, int], Answer]:
    """The engine's answer for every pair: BFS for UNIT, DIJKSTRA for FIELD."""
    key = "unit/ours-bfs" if cost == UNIT else "field/ours-dijkstra"
    method = next(m for m in methods(cost, networkx_included=False) if m.key == key)
    return {(s, t): method.query(None, lattice, s, t) for s, t in (lattice.corner, *lattice.pairs)}


def _one_repeat(
    lattice: Lattice, cost: str, row: Row, reference: dict[tuple[int, int], Answer]
) -> None:
    method = row.method
    gc.collect()
    began = time.perf_counter()
    graph = method.build(lattice) if method.build is not None else None
    built = time.perf_counter()
    build_s = built - began if method.build is not None else 0.0
    if method.build is not None:
        row.build.add(build_s)
    answer = method.query(graph, lattice, *lattice.corner)
    corner_s = time.perf_counter() - built
    _check(lattice, cost, method, lattice.corner, answer, reference[lattice.corner])
    row.corner_answer = answer
    row.corner.add(corner_s)
    row.corner_total.add(build_s + corner_s)
    pair_times: list[float] = []
    row.pair_methods = Counter()
    for s, t in lattice.pairs:
        started = time.perf_counter()
        answer = method.query(graph, lattice, s, t)
        pair_times.append(time.perf_counter() - started)
        _check(lattice, cost, method, (s, t), answer, reference[(s, t)])
        if answer.engine_method is not None:
            row.pair_methods[answer.engine_method] += 1
    if pair_times:
        mean = sum(pair_times) / len(pair_times)
        row.pairs.add(mean)
        row.pairs_total.add(build_s + mean)
    del graph
    row.spent_s += time.perf_counter() - began


def _check(
    lattice: Lattice,
    cost: str,
    method: Method,
    pair: tuple[int, int],
    answer: Answer,
    expected: Answer,
) -> None:
    where = f"{method.label}, {lattice.coordinates(pair[0])} -> {lattice.coordinates(pair[1])}"
    if answer.path is not None:
        check_path(lattice.grid, lattice.open, answer.path, *pair)
    if cost == UNIT:
        require(
            answer.hops == expected.hops,
            f"{where}: {answer.hops} hops, the engine's BFS found {expected.hops}",
        )
    else:
        require(
            abs(answer.cost - expected.cost) <= COST_TOLERANCE * abs(expected.cost),
            f"{where}: cost {answer.cost!r}, the engine's DIJKSTRA found {expected.cost!r}",
        )


def _summarise(
    lattice: Lattice,
    cost: str,
    rows: list[Row],
    reference: dict[tuple[int, int], Answer],
    name: str,
    row_budget_s: float,
    judged: bool,
) -> dict[str, Any]:
    def mark(passed: bool) -> str:
        return f" {verdict(passed)}" if judged else ""

    corner_expected = reference[lattice.corner]
    cases: dict[str, Any] = {}
    tables: list[str] = []
    for case in ("corner", "pairs"):
        if case == "pairs" and not lattice.pairs:
            continue
        peers = [r for r in rows if not r.method.ours]
        ours = [r for r in rows if r.method.ours]
        targets: dict[str, dict[str, Any]] = {}
        if cost == UNIT:
            fastest_query = min(peers, key=lambda r: r.stats(case)[1].min)
            fastest_total = min(peers, key=lambda r: r.stats(case)[2].min)
            for r in ours:
                ours_min = r.stats(case)[1].min
                ratio = ours_min / fastest_query.stats(case)[1].min
                speedup = fastest_total.stats(case)[2].min / ours_min
                targets[r.method.key] = {
                    "query_over_fastest_peer_query": ratio,
                    "fastest_peer_query": fastest_query.method.label,
                    "passes_one_third": ratio <= UNIT_QUERY_RATIO,
                    "fastest_peer_build_query_over_query": speedup,
                    "fastest_peer_build_query": fastest_total.method.label,
                    "passes_twenty_times": speedup >= UNIT_BUILD_QUERY_SPEEDUP,
                }
        else:
            scipy_row = next(r for r in peers if r.method.library == "scipy")
            for r in ours:
                ratio = r.stats(case)[1].min / scipy_row.stats(case)[1].min
                targets[r.method.key] = {
                    "query_over_scipy_query": ratio,
                    "passes_one_half": ratio <= FIELD_SCIPY_RATIO,
                }
        table_rows = []
        for r in rows:
            build, query, total = r.stats(case)
            answer = (
                f"{r.corner_answer.hops if r.corner_answer else '?'} hops"
                if cost == UNIT
                else f"{r.corner_answer.cost if r.corner_answer else float('nan'):.6f}"
            )
            if case == "pairs":
                answer = f"{len(lattice.pairs)}/{len(lattice.pairs)} equal"
            answer += " ✓"
            if r.method.ours and r.corner_answer is not None:
                # Which method the engine ran (AUTO's choice; for the pairs, how many each).
                used = (
                    r.corner_answer.engine_method
                    if case == "corner"
                    else ", ".join(f"{m} x{n}" for m, n in sorted(r.pair_methods.items()))
                )
                answer += f" ({used})"
            cells = [
                r.method.label + (f" ({r.method.note})" if r.method.note else ""),
                str(r.repeats),
                ms_pair(build),
                ms_pair(query),
                ms_pair(total if r.method.build is not None else query),
                answer,
            ]
            target = targets.get(r.method.key)
            if cost == UNIT:
                cells += (
                    [
                        f"{target['query_over_fastest_peer_query']:.3f}"
                        + mark(target["passes_one_third"]),
                        f"{target['fastest_peer_build_query_over_query']:,.0f}x"
                        + mark(target["passes_twenty_times"]),
                    ]
                    if target
                    else ["", ""]
                )
            else:
                cells += (
                    [f"{target['query_over_scipy_query']:.3f}" + mark(target["passes_one_half"])]
                    if target
                    else [""]
                )
            table_rows.append(cells)
        columns = [
            "method",
            "n",
            "build ms (min / med)",
            "query ms (min / med)",
            "build+query ms (min / med)",
            "answer (checked; the engine's method)",
        ]
        if cost == UNIT:
            columns += [
                "query ÷ fastest peer query" + (" (≤ 0.333)" if judged else ""),
                "fastest peer build+query ÷ query" + (" (≥ 20x)" if judged else ""),
            ]
        else:
            columns += ["query ÷ scipy query" + (" (≤ 0.5)" if judged else "")]
        title = (
            f"corner to corner, {lattice.coordinates(lattice.corner[0])} ->"
            f" {lattice.coordinates(lattice.corner[1])}"
            f" ({corner_expected.hops} hops"
            + (f", cost {corner_expected.cost:.6f})" if cost == FIELD else ")")
            if case == "corner"
            else f"{len(lattice.pairs)} random connected open pairs: mean time per query"
        )
        tables.append(f"**{title}**\n\n" + table(columns, table_rows))
        cases[case] = {
            "title": title,
            "rows": [_row_json(r, case) for r in rows],
            "targets": targets,
        }
    require(
        _field_unchanged(lattice),
        f"{name}: the lattice's field changed during the benchmark",
    )
    return {
        "lattice": lattice.describe(),
        "cost": cost,
        "judged": judged,
        "row_budget_s": row_budget_s,
        "cases": cases,
        "tables": tables,
    }


def _row_json(row: Row, case: str) -> dict[str, Any]:
    build, query, total = row.stats(case)
    return {
        "method": row.method.key,
        "label": row.method.label,
        "note": row.method.note,
        "repeats": row.repeats,
        "build": None if build is None else build.to_json(),
        "query": query.to_json(),
        "build_query": (total if build is not None else query).to_json(),
    }


def _field_unchanged(lattice: Lattice) -> bool:
    return checksum(lattice.field) == lattice.checksum
