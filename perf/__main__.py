"""`python -m perf {check,baseline,report,list}`: the regression gate (make perf-check & co)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from perf.registry import BENCHMARKS
from perf.run import PLANT_VARIABLE, baseline, baseline_keys, check, machine, parse_plant
from perf.store import BASELINES, baselines_for, history_path, read_history
from perf.trend import OUT, draw


def main(argv: Sequence[str] | None = None) -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(prog="python -m perf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser(
        "check",
        help="measure every benchmark, compare with perf/baselines.json, append to the history;"
        f" exit 1 naming each regression ({PLANT_VARIABLE}=NAME[:FACTOR] plants one)",
    )
    baseline_parser = commands.add_parser(
        "baseline", help="measure RUNS times and record the medians and tolerances"
    )
    baseline_parser.add_argument("--runs", type=int, default=5, help="runs to take (5)")
    for sub in (check_parser, baseline_parser):
        sub.add_argument(
            "--only", action="append", metavar="NAME", help="these benchmarks (repeatable, or a,b)"
        )
    report_parser = commands.add_parser("report", help="draw the history's trend as a PNG")
    report_parser.add_argument("--out", type=Path, default=OUT, help=f"the PNG ({OUT.name})")
    commands.add_parser("list", help="name each benchmark and its ratio")
    args = parser.parse_args(argv)

    selected = list(BENCHMARKS)
    if getattr(args, "only", None):
        wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
        selected = [b for b in BENCHMARKS if b.name in wanted]

    if args.command == "list":
        for b in BENCHMARKS:
            print(f"{b.name:32} {b.direction.text:17} {b.ratio}")
        return 0
    if args.command == "report":
        info = machine()
        cpu = info["cpu_id"]
        chosen = baselines_for(baseline_keys(info), BENCHMARKS)
        png = draw(
            read_history(history_path()),
            BENCHMARKS,
            {name: c.baseline for name, c in chosen.items()},
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(png)
        print(f"perf-report: wrote {args.out} from {history_path()}, baselines of {cpu}")
        return 0
    if args.command == "baseline":
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        return baseline(selected, args.runs, BASELINES, history=history_path())
    try:
        plant = parse_plant(os.environ.get(PLANT_VARIABLE, ""), names)
    except ValueError as exc:
        parser.error(str(exc))
    return check(selected, BASELINES, history=history_path(), plant=plant)


if __name__ == "__main__":
    sys.exit(main())
