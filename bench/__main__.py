"""`python -m bench`: the engine's benchmarks, side by side with the graph libraries, in one run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Progress, header, print_header


@dataclass(frozen=True)
class Sizes:
    """Lattice shapes (dimensions, size) for a full or a quick run."""

    paths: tuple[int, int]
    networkx_field: tuple[int, int]
    closed_form: tuple[tuple[int, int], ...]
    transforms: tuple[int, int]


FULL = Sizes(paths=(3, 100), networkx_field=(3, 30), closed_form=((3, 100), (4, 32)),
             transforms=(4, 64))  # fmt: skip
QUICK = Sizes(paths=(3, 30), networkx_field=(3, 12), closed_form=((3, 100), (4, 32)),
              transforms=(4, 32))  # fmt: skip

QUICK_MEMORY = (
    "unit/ours-auto",
    "unit/ours-catalytic",
    "unit/igraph",
    "unit/scipy-bfs",
    "unit/rustworkx-lengths",
    "unit/networkx",
    "field/ours-auto",
    "field/scipy",
)

BENCHMARKS: dict[str, str] = {
    "unit": "1. s-t path, UNIT cost, 20% blocked: corner to corner and random pairs",
    "field": "2. s-t path, FIELD cost (entering v costs field[v]), same lattice",
    "field-networkx": "2b. FIELD cost on a smaller lattice, with networkx as well (no targets)",
    "closed-form": "3. unblocked path on a ~10^6-vertex lattice (closed form), target <= 1 ms",
    "transforms": "4. XOR, FLIP (each axis), ROTATE on 2^24 vertices vs a numpy copy",
    "memory": "5. peak memory per method (graph + query), each in a fresh process",
    "pool": "6. compute pool overhead: Router/CpuPool vs a direct call",
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Benchmarks the lattice engine against igraph, scipy.sparse.csgraph, rustworkx and"
            " networkx on the same lattices, in one run. Prints one markdown table per"
            " benchmark (progress goes to stderr) and a summary of the engine's targets."
            " A method whose answer differs from the engine's makes the run fail."
        ),
        epilog="benchmarks: " + "; ".join(f"{name} ({text})" for name, text in BENCHMARKS.items()),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small lattices and 2 repeats: a smoke run of every benchmark in under a minute",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these benchmarks (repeatable or comma-separated): " + ", ".join(BENCHMARKS),
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per method; targets use the minimum (default 5, --quick 2)",
    )
    parser.add_argument(
        "--networkx-repeats",
        type=int,
        default=1,
        help="repeats for networkx, whose graph build alone takes tens of seconds (default 1)",
    )
    parser.add_argument(
        "--row-budget",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="stop repeating a path method once it has used this much time, after at least one"
        " repeat (default 30); the table's n says how many ran",
    )
    parser.add_argument(
        "--pairs", type=int, default=10, help="random open pairs per path benchmark (default 10)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for the memory benchmark and workers of the pool benchmark"
        " (default: the CPUs available)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    selected: list[str] = []
    for item in args.only or []:
        selected += [name.strip() for name in item.split(",") if name.strip()]
    unknown = [name for name in selected if name not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )
    # Always in the canonical order, whatever order --only named them in.
    args.selected = (
        [name for name in BENCHMARKS if name in selected] if selected else list(BENCHMARKS)
    )
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1 or args.networkx_repeats < 1 or args.pairs < 0:
        parser.error("--repeats and --networkx-repeats must be at least 1, --pairs at least 0")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    if args.list:
        for name, text in BENCHMARKS.items():
            print(f"{name:16} {text}")
        return 0
    # Imports after parsing: --help and --list need none of the libraries.
    from bench import closed_form, memory, paths, pool, transforms
    from bench.lattice import Lattice, make_lattice
    from bench.methods import FIELD, UNIT, methods
    from services.lattice.engine.paths import warm_up

    sizes = QUICK if args.quick else FULL
    workers = args.workers or _available_cpus()
    progress = Progress()
    info = header(argv)
    print_header(info)
    progress("loading the engine's compiled kernels")
    warm_up()
    transforms.warm_up()
    lattices: dict[tuple[int, int], Lattice] = {}

    def lattice(shape: tuple[int, int]) -> Lattice:
        if shape not in lattices:
            progress(f"making the {shape[1]}^{shape[0]} lattice and {args.pairs} random pairs")
            lattices[shape] = make_lattice(*shape, pairs=args.pairs)
        return lattices[shape]

    path_options = {
        "repeats": args.repeats,
        "networkx_repeats": args.networkx_repeats,
        "row_budget_s": args.row_budget,
        "progress": progress,
    }
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "unit": lambda: paths.run(
            lattice(sizes.paths),
            UNIT,
            networkx_included=True,
            name="unit",
            judged=not args.quick,
            **path_options,
        ),
        "field": lambda: paths.run(
            lattice(sizes.paths),
            FIELD,
            networkx_included=False,
            name="field",
            judged=not args.quick,
            **path_options,
        ),
        "field-networkx": lambda: paths.run(
            lattice(sizes.networkx_field),
            FIELD,
            networkx_included=True,
            name="field-networkx",
            judged=False,
            **path_options,
        ),
        "closed-form": lambda: closed_form.run(
            list(sizes.closed_form), 50 if args.quick else 200, progress
        ),
        "transforms": lambda: transforms.run(
            *sizes.transforms, args.repeats, progress, judged=not args.quick
        ),
        "memory": lambda: memory.run(
            # A fresh process per measurement costs seconds: --quick measures one of each kind.
            list(QUICK_MEMORY)
            if args.quick
            else [m.key for m in methods(UNIT, networkx_included=True)]
            + [m.key for m in methods(FIELD, networkx_included=False)],
            *sizes.paths,
            workers,
            progress,
        ),
        "pool": lambda: pool.run(
            lattice(sizes.paths), sizes.transforms, workers, args.repeats, progress
        ),
    }
    results: dict[str, Any] = {}
    for name in args.selected:
        progress(f"benchmark {name}: {BENCHMARKS[name]}")
        result = runners[name]()
        results[name] = result
        print(f"## {BENCHMARKS[name]}")
        print()
        if "lattice" in result:
            print(f"Lattice: {result['lattice']}.")
            print()
        for text in result["tables"]:
            print(text)
            print()
        sys.stdout.flush()
    summary = _targets(results)
    if args.quick:
        print(
            "--quick: the path and transform lattices are smaller than the targets' (100^3,"
            " 2^24 vertices), so only the closed form's target is judged."
        )
        print()
    if summary:
        print("## Targets, judged on the minimum of the repeats")
        print()
        for line in summary:
            print(f"- {line}")
        print()
    info["load_average_at_end"] = list(os.getloadavg())
    info["elapsed_s"] = progress.elapsed()
    print(
        f"Run took {info['elapsed_s']:.0f} s; load average at end:"
        f" {', '.join(f'{x:.2f}' for x in info['load_average_at_end'])}."
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"header": info, "benchmarks": results, "targets": summary}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        progress(f"wrote {args.json}")
    return 0


def _targets(results: dict[str, Any]) -> list[str]:
    """One line per target and engine method: met or not, by how much."""
    lines: list[str] = []
    for name in ("unit", "field"):
        if name not in results or not results[name]["judged"]:
            continue
        for case, data in results[name]["cases"].items():
            labels = {row["method"]: row["label"] for row in data["rows"]}
            for key, t in data["targets"].items():
                where = f"{name}, {case}, {labels[key]}"
                if "passes_one_third" in t:
                    lines.append(
                        f"{where}: query = {t['query_over_fastest_peer_query']:.3f} x the fastest"
                        f" peer's ({t['fastest_peer_query']}), target ≤ 0.333:"
                        f" {_verdict(t['passes_one_third'])}; fastest peer build+query"
                        f" ({t['fastest_peer_build_query']}) ="
                        f" {t['fastest_peer_build_query_over_query']:,.1f} x ours, target ≥ 20:"
                        f" {_verdict(t['passes_twenty_times'])}"
                    )
                else:
                    lines.append(
                        f"{where}: query = {t['query_over_scipy_query']:.3f} x scipy's,"
                        f" target ≤ 0.5: {_verdict(t['passes_one_half'])}"
                    )
    for row in results.get("closed-form", {}).get("rows", []):
        if row.get("passes_1ms") is not None:
            lines.append(
                f"closed-form, {row['shape']}, {row['case']}: {row['time']['min_s'] * 1e3:.3f} ms"
                f" (median {row['time']['median_s'] * 1e3:.3f}), target ≤ 1 ms:"
                f" {_verdict(row['passes_1ms'])}"
            )
    for row in results.get("transforms", {}).get("rows", []):
        if row.get("passes_half_bandwidth") is not None:
            lines.append(
                f"transforms, {row['op']}: {row['gb_per_s']:.2f} GB/s ="
                f" {row['ratio_to_copy']:.3f} x np.copyto, target ≥ 0.5:"
                f" {_verdict(row['passes_half_bandwidth'])}"
            )
    return lines


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "**FAIL**"


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
