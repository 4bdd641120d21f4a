"""The API load suite: virtual users on real journeys through the gateway.

`python -m loadtest api [--quick] [--only seed,capacity,fairness] [--out DIR]`; `make loadtest`
runs it as tests/load/test_api_load.py. Three scenarios, each on a private stack:

- seed: 100 users for 5 minutes. The gate (the exit status): p95 < 500 ms and not one error.
  Our targets: at least 1,000 requests a minute, p95 <= 50 ms and p99 <= 200 ms overall.
- capacity: the same users, more at each step, until p95 crosses 500 ms or an error appears;
  the last step held is the capacity. Target: >= 500 users (5x the seed).
- fairness: 100 users without, then with, a tenant flooding heavy paths and transforms at its
  plan's limit. Target: the users' p95 within 2x of the window without it, and no failure.

Prints one table with every target, met or not and why, and writes ghz-format reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from devstack import Stack
from loadtest import cpu, journeys, pgstats, rest, scenarios
from loadtest.journeys import Window
from loadtest.scenarios import GATE_P95_MS, FairnessRun, Measured, SeedRun, Step
from loadtest.stack import private_stack

T = TypeVar("T")

SEED_USERS = 100
SEED_RATE_PER_MIN = 1000
TARGET_P95_MS = 50.0
TARGET_P99_MS = 200.0
TARGET_USERS = 500
# Query times of the services' statements during the seed (pg_stat_statements' p95 bound).
QUERY_BAR_P95_MS = 50.0
TARGET_QUERY_P95_MS = 5.0
FAIRNESS_RATIO = 2.0
# New users arrive 5 a second: each registers and logs in, two argon2id hashes (ADR 13).
JOIN_PER_S = 5.0

# Users are starter-plan tenants under the real per-tenant limits (RATE_LIMIT_MULTIPLIER 1);
# only the per-address limits are lifted, because every virtual user comes from this host.
STACK_ENV = {
    "DEFAULT_PLAN": "starter",
    "RATE_LIMIT_REGISTER_PER_HOUR": "1000000",
    "RATE_LIMIT_LOGIN_PER_MINUTE": "1000000",
    "RATE_LIMIT_REFRESH_PER_MINUTE": "1000000",
    "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
    "LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class Options:
    quick: bool
    only: tuple[str, ...]
    out: Path
    seed_users: int
    seed_s: float
    ramp_s: float
    steps: list[int]
    join_per_s: float
    step_s: float
    fairness_users: int
    fairness_s: float
    flood_clients: int
    pg_stats: bool


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m loadtest api", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run, ~4 minutes")
    parser.add_argument("--only", default="seed,capacity,fairness", help="scenarios to run")
    parser.add_argument("--out", type=Path, default=Path("loadtest-reports"))
    parser.add_argument("--users", type=int, help="seed and fairness users (100; quick 20)")
    parser.add_argument("--duration", type=float, help="seed window, s (300; quick 30)")
    parser.add_argument("--steps", help="capacity steps, users (100,200,350,500,650,800,1000)")
    parser.add_argument("--step-duration", type=float, help="capacity window per step, s (30)")
    parser.add_argument("--fairness-duration", type=float, help="each fairness window, s (60)")
    parser.add_argument("--flood-clients", type=int, default=12, help="flood connections (12)")
    parser.add_argument(
        "--pg-stats",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pg_stat_statements on (default): the services' query times in every window,"
        " and the seed's query-time targets judged",
    )
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = set(only) - {"seed", "capacity", "fairness"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    quick = args.quick
    users = args.users or (20 if quick else SEED_USERS)
    steps = args.steps or ("20,40,80" if quick else "100,200,350,500,650,800,1000")
    return Options(
        quick=quick,
        only=only,
        out=args.out,
        seed_users=users,
        seed_s=args.duration or (30.0 if quick else 300.0),
        ramp_s=users / JOIN_PER_S,
        steps=[int(n) for n in steps.split(",")],
        join_per_s=JOIN_PER_S,
        step_s=args.step_duration or (15.0 if quick else 30.0),
        fairness_users=users,
        fairness_s=args.fairness_duration or (20.0 if quick else 60.0),
        flood_clients=args.flood_clients,
        pg_stats=args.pg_stats,
    )


@dataclass
class Row:
    """One line of the summary: a target, what was measured, met or not, and why not."""

    target: str
    result: str
    met: bool
    why: str = ""


@dataclass
class Suite:
    rows: list[Row]
    seed_gate: bool
    seed_gate_why: str


def run_suite(options: Options, log: Callable[[str], None] = print) -> Suite:
    """Each chosen scenario on a private stack of its own, then the summary table."""
    options.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    gate, gate_why = True, "the seed scenario was not run"
    log(f"machine: {rest.machine()}; load average {load_average()} (1, 5, 15 min)")
    if "seed" in options.only:
        run = on_stack(
            "seed",
            lambda stack: scenarios.seed(
                stack, options.seed_users, options.ramp_s, options.seed_s, options.pg_stats
            ),
            options.pg_stats,
        )
        report(options.out / "seed.json", run.measured.window, **postgres(run.measured))
        print_window(run.measured)
        log(f"seed: {run.deliveries} webhook deliveries received")
        seed_rows = judge_seed(run, options)
        rows += seed_rows + judge_queries(run.measured)
        gate = all(row.met for row in seed_rows if row.target.startswith("gate"))
        gate_why = "; ".join(f"{r.target}: {r.result}" for r in seed_rows[:2])
    if "capacity" in options.only:
        steps = on_stack(
            "capacity",
            lambda stack: scenarios.capacity(
                stack, options.steps, options.join_per_s, options.step_s
            ),
        )
        for step in steps:
            path = options.out / f"capacity-{step.users}.json"
            report(
                path, step.measured.window, joining=step.joining.ghz(), **postgres(step.measured)
            )
        print_steps(steps)
        held = [step for step in steps if step.held]
        for step in [*held[-1:], *(step for step in steps if not step.held)]:
            print_window(step.measured)
        rows.append(judge_capacity(steps, options))
    if "fairness" in options.only:

        def fairness(stack: Stack) -> Coroutine[Any, Any, FairnessRun]:
            setup = scenarios.flood_tenant(stack)
            return scenarios.fairness(
                stack,
                setup,
                options.fairness_users,
                options.ramp_s,
                options.fairness_s,
                options.flood_clients,
                options.pg_stats,
            )

        fair = on_stack("fairness", fairness, options.pg_stats)
        report(
            options.out / "fairness-unloaded.json", fair.unloaded.window, **postgres(fair.unloaded)
        )
        report(options.out / "fairness-loaded.json", fair.loaded.window, **postgres(fair.loaded))
        (options.out / "fairness-flood.json").write_text(
            json.dumps(fair.flood.ghz(), indent=2) + "\n"
        )
        print_window(fair.unloaded)
        print_window(fair.loaded)
        rows += judge_fairness(fair)
    print_summary(rows, options)
    (options.out / "summary.json").write_text(
        json.dumps([row.__dict__ for row in rows], indent=2) + "\n"
    )
    log(f"reports: {options.out}/")
    return Suite(rows, gate, gate_why)


def on_stack(
    name: str, scenario: Callable[[Stack], Coroutine[Any, Any, T]], pg_stats: bool = False
) -> T:
    """Runs one scenario on a private stack, in an event loop of its own (uvloop); with
    `pg_stats`, its PostgreSQL loads pg_stat_statements."""
    import uvloop

    print(f"\n== {name}: load average {load_average()} before the stack", flush=True)
    quiet = bool(os.environ.get("LOADTEST_QUIET"))
    log = (lambda line: None) if quiet else (lambda line: print(f"[stack] {line}", flush=True))
    settings = pgstats.SETTINGS if pg_stats else None
    with private_stack(STACK_ENV, log, postgres_settings=settings) as stack:
        if pg_stats:
            pgstats.enable(stack.database_admin_url)
        print(f"== {name}: load average {load_average()} before the run", flush=True)
        started = time.monotonic()
        result = uvloop.run(scenario(stack))
        print(f"== {name}: {time.monotonic() - started:.0f} s", flush=True)
        return result


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def report(path: Path, window: Window, **extra: Any) -> None:
    path.write_text(json.dumps({**window.ghz(), **extra}, indent=2) + "\n")


def postgres(measured: Measured) -> dict[str, Any]:
    """With --pg-stats, the window's statements for its report: the p95 bound of all the calls
    together and each statement's (pgstats.py)."""
    if not measured.statements:
        return {}
    return {
        "postgres": {
            "calls": sum(s.calls for s in measured.statements),
            "p95BoundMs": pgstats.overall_p95_bound_ms(measured.statements),
            "statements": [
                {
                    "query": s.short_query(200),
                    "calls": s.calls,
                    "meanMs": s.mean_ms,
                    "maxMs": s.max_ms,
                    "p95BoundMs": s.p95_bound_ms,
                }
                for s in measured.statements
            ],
        }
    }


# ---------------------------------------------------------------------------- judging
def judge_seed(run: SeedRun, options: Options) -> list[Row]:
    result = run.measured.result
    p95, p99 = result.percentile_ms(95), result.percentile_ms(99)
    per_min = result.count / result.total_s * 60 if result.total_s else 0.0
    errors = result.error_count + run.errors_outside
    where = f"{run.users} users, {result.total_s:.0f} s"
    slow = slowest(run.measured.window)
    busy = cpu.format_cores(run.measured.cores)
    return [
        Row(
            f"gate: seed p95 < {GATE_P95_MS:.0f} ms",
            f"{p95:.1f} ms ({where})",
            p95 < GATE_P95_MS,
            f"slowest routes: {slow}; {busy}",
        ),
        Row(
            "gate: seed 0 errors",
            f"{errors} of {result.count} (+ {outside_count(run.outside)} outside the window)",
            errors == 0,
            first_failures(run.measured.window, run.outside),
        ),
        Row(
            f"seed >= {SEED_RATE_PER_MIN:,} requests/min",
            f"{per_min:,.0f} requests/min ({where})",
            per_min >= SEED_RATE_PER_MIN * (run.users / SEED_USERS),
            f"{run.users} users think 1-4 s between requests",
        ),
        Row(
            f"seed p95 <= {TARGET_P95_MS:.0f} ms overall",
            f"{p95:.1f} ms",
            p95 <= TARGET_P95_MS,
            f"slowest routes: {slow}; {busy}",
        ),
        Row(
            f"seed p99 <= {TARGET_P99_MS:.0f} ms overall",
            f"{p99:.1f} ms",
            p99 <= TARGET_P99_MS,
            f"slowest routes (p99): {slowest(run.measured.window, 99)}; {busy}",
        ),
    ]


def judge_queries(measured: Measured) -> list[Row]:
    """The seed's query-time targets from pg_stat_statements (an upper bound on the p95 of all
    the services' statements together: pgstats.overall_p95_bound_ms)."""
    if not measured.statements:
        return []
    bound = pgstats.overall_p95_bound_ms(measured.statements)
    calls = sum(s.calls for s in measured.statements)
    worst = pgstats.worst(measured.statements)
    why = (
        f"highest statement: {worst.short_query(80)} p95 <= {worst.p95_bound_ms:.2f} ms"
        if worst
        else ""
    )
    result = f"p95 <= {bound:.2f} ms over {calls:,} statements"
    return [
        Row(f"seed: query p95 < {QUERY_BAR_P95_MS:.0f} ms", result, bound < QUERY_BAR_P95_MS, why),
        Row(
            f"seed: query p95 <= {TARGET_QUERY_P95_MS:.0f} ms",
            result,
            bound <= TARGET_QUERY_P95_MS,
            why,
        ),
    ]


def judge_capacity(steps: list[Step], options: Options) -> Row:
    target_users = options.steps[-1] // 2 if options.quick else TARGET_USERS
    held = [step for step in steps if step.held]
    best = held[-1] if held else None
    broke = next((step for step in steps if not step.held), None)
    text = (
        f"held {best.users} users, {best.measured.result.rps:.1f} req/s, p95 "
        f"{best.measured.result.percentile_ms(95):.1f} ms"
        if best
        else "no step held"
    )
    if broke is None:
        text += f" (the last step; p95 never crossed {GATE_P95_MS:.0f} ms)"
        why = ""
    else:
        text += f"; not {broke.users}"
        r = broke.measured.result
        why = (
            f"at {broke.users} users p95 {r.percentile_ms(95):.0f} ms, {broke.errors} errors"
            f" {first_failures(broke.measured.window, [broke.joining])}; slowest routes: "
            f"{slowest(broke.measured.window)}; {cpu.format_cores(broke.measured.cores)}"
        )
    return Row(
        f"capacity >= {target_users} users at p95 < {GATE_P95_MS:.0f} ms, no errors",
        text,
        best is not None and best.users >= target_users,
        why,
    )


def judge_fairness(run: FairnessRun) -> list[Row]:
    before = run.unloaded.result.percentile_ms(95)
    during = run.loaded.result.percentile_ms(95)
    ratio = during / before if before else float("inf")
    errors = run.unloaded.result.error_count + run.loaded.result.error_count + run.errors_outside
    flood = run.flood
    flood_text = (
        f"flood: {run.flood_clients} clients, {flood.count} requests, "
        f"{dict(sorted(flood.statuses.items()))}"
    )
    return [
        Row(
            f"fairness: others' p95 <= {FAIRNESS_RATIO:g}x unloaded",
            f"{before:.1f} -> {during:.1f} ms ({ratio:.2f}x); {flood_text}",
            ratio <= FAIRNESS_RATIO,
            f"slowest routes in the flood: {slowest(run.loaded.window)}; "
            f"{cpu.format_cores(run.loaded.cores)}",
        ),
        Row(
            "fairness: none of the others' requests fail",
            f"{errors} of {run.unloaded.result.count + run.loaded.result.count}"
            f" (+ {outside_count(run.outside)} outside the windows)",
            errors == 0,
            first_failures(run.loaded.window, [run.unloaded.window, *run.outside]),
        ),
    ]


def slowest(window: Window, percentile: float = 95, n: int = 3) -> str:
    ranked = sorted(window.routes.values(), key=lambda r: -r.percentile_ns(percentile))
    return ", ".join(f"{r.name} {r.percentile_ms(percentile):.0f} ms" for r in ranked[:n])


def outside_count(windows: list[Window]) -> int:
    return sum(w.overall.count for w in windows)


def first_failures(window: Window, others: list[Window]) -> str:
    failures = [w.overall.first_failure for w in (window, *others) if w.overall.first_failure]
    return f"first: {failures[0][:200]}" if failures else ""


# ---------------------------------------------------------------------------- printing
def print_window(measured: Measured) -> None:
    window = measured.window
    result = window.overall
    total = window.reads + window.writes
    print(
        f"\n{window.name}: {result.count} requests in {result.total_s:.0f} s "
        f"({result.rps:.1f}/s), reads {window.reads / max(1, total):.0%}, writes "
        f"{window.writes / max(1, total):.0%}"
    )
    print(f"{'route':<44} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in [*sorted(window.routes.values(), key=lambda r: r.name), result]:
        print(
            f"{r.name:<44} {r.count:>6} {r.percentile_ms(50):>8.1f} {r.percentile_ms(95):>8.1f}"
            f" {r.percentile_ms(99):>8.1f} {r.error_count:>6}"
        )
    print("\n".join(cpu.format_table({window.name: measured.cpu_ms})))
    print(cpu.format_cores(measured.cores))
    if result.first_failure:
        print(f"first failure: {result.first_failure}")
    if measured.statements:
        bound = pgstats.overall_p95_bound_ms(measured.statements)
        calls = sum(s.calls for s in measured.statements)
        print(f"PostgreSQL: {calls} statements of the services, p95 <= {bound:.3f} ms together")
        print("\n".join(pgstats.format_table(measured.statements, limit=8)))


def print_steps(steps: list[Step]) -> None:
    print(
        f"\n{'users':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}"
        f" {'joining':>7}"
    )
    for step in steps:
        r = step.measured.result
        print(
            f"{step.users:>6} {r.rps:>7.1f} {r.percentile_ms(50):>8.1f} "
            f"{r.percentile_ms(95):>8.1f} {r.percentile_ms(99):>8.1f} {r.error_count:>6} "
            f"{step.joining.overall.error_count:>7}  {'held' if step.held else 'NOT held'}"
        )
        failure = first_failures(step.measured.window, [step.joining])
        if failure:
            print(f"{'':>6} {failure}")
    rows = {f"capacity {s.users} users": s.measured.cpu_ms for s in steps}
    print("\n".join(cpu.format_table(rows)))
    for step in steps:
        print(f"{step.users:>6} users: {cpu.format_cores(step.measured.cores)}")


def print_summary(rows: list[Row], options: Options) -> None:
    print("\n== summary" + (" (--quick: fewer users, shorter windows)" if options.quick else ""))
    width = max((len(row.target) for row in rows), default=10)
    for row in rows:
        print(f"{row.target:<{width}}  {'MET ' if row.met else 'NOT '} {row.result}")
        if not row.met and row.why:
            print(f"{'':<{width}}        why: {row.why}")
    think = f"{journeys.THINK_S[0]:g}-{journeys.THINK_S[1]:g} s"
    print(f"(users think {think} between requests; the journeys: loadtest/journeys.py)")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(list(sys.argv[1:] if argv is None else argv))
    suite = run_suite(options)
    return 0 if suite.seed_gate else 1
