"""Running the gate: one private stack shared by the benchmarks, the verdicts, the history line."""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from loadtest.rest import STACK_ENV as REST_STACK_ENV
from loadtest.stack import LOAD_GATEWAY_RATE_LIMIT_PER_S
from perf.model import Benchmark, Measurement, judge
from perf.store import TooNoisy, append_history, baselines_for, record, save_baselines

if TYPE_CHECKING:
    from devstack import Stack

# Set by a test (or by hand) to prove the gate catches a regression: NAME or NAME:FACTOR,
# comma-separated; the named benchmark's subject does its work FACTOR (default 2) times per
# counted unit. A planted run writes no history.
PLANT_VARIABLE = "PERF_PLANT_REGRESSION"
# The budget of `make perf-check`: reported with every run.
BUDGET_S = 180.0

# The shared stack: loadtest's REST settings (rate limits out of the way, quiet logs) and
# the webhook worker's of `python -m loadtest webhooks` (no per-endpoint limit, 128 in flight).
STACK_ENV = {
    **REST_STACK_ENV,
    "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
    "WEBHOOK_ENDPOINT_RATE_PER_S": "0",
    "WEBHOOK_WORKER_CONCURRENCY": "128",
    "DB_POOL_MAX": "72",
}


class Progress:
    """Progress lines on stderr with the seconds since the run began."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.started = time.monotonic()
        self.out = out

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", file=self.out or sys.stderr, flush=True)


def parse_plant(text: str, known: Sequence[str]) -> dict[str, int]:
    """PERF_PLANT_REGRESSION's value as {name: factor}; an unknown name is an error, so that a
    typo cannot make a planted regression pass unnoticed."""
    plant: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, factor = item.partition(":")
        if name not in known:
            raise ValueError(f"{PLANT_VARIABLE}: unknown benchmark {name!r}; known: {known}")
        plant[name] = int(factor) if factor else 2
        if plant[name] < 1:
            raise ValueError(f"{PLANT_VARIABLE}: {item!r}: the factor must be at least 1")
    return plant


@dataclass
class Session:
    """The run's private devstack (free ports, a temporary directory), started on first use."""

    progress: Callable[[str], None]
    _stack: Stack | None = None
    _dir: str | None = None

    def stack(self) -> Stack:
        if self._stack is None:
            from devstack import Stack, StackPorts

            self._dir = tempfile.mkdtemp(prefix="catalytic-perf-")
            os.chmod(self._dir, 0o755)  # noqa: S103 - PostgreSQL may run as another account
            started = time.monotonic()
            self.progress("starting a private stack (PostgreSQL, Redis, services, Envoy)")
            stack = Stack(
                self._dir,
                StackPorts.free(),
                fast_postgres=True,
                # Envoy's backstop (2,000 req/s by default) would answer part of a fast
                # machine's ceiling burst with 429: lifted, as the services' limits are.
                gateway_rate_limit_per_s=LOAD_GATEWAY_RATE_LIMIT_PER_S,
                extra_env=STACK_ENV,
                log=lambda line: None,
            )
            self._stack = stack.start()
            self.progress(f"stack up in {time.monotonic() - started:.1f} s")
        return self._stack

    def close(self, *, keep: bool = False) -> None:
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
        if self._dir is not None:
            if keep:
                self.progress(f"stack logs kept in {self._dir}/logs")
            else:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@dataclass
class BenchmarkContext:
    """What one benchmark gets (perf.model.Context)."""

    session: Session
    work_factor: int = 1
    progress: Callable[[str], None] = field(default=print)

    def stack(self) -> Stack:
        return self.session.stack()


def measure_all(
    benchmarks: Sequence[Benchmark], plant: Mapping[str, int], progress: Progress
) -> dict[str, Measurement]:
    """Each benchmark once, in order, sharing one stack; raises when one cannot measure."""
    session = Session(progress)
    ok = False
    try:
        results = {}
        for benchmark in benchmarks:
            factor = plant.get(benchmark.name, 1)
            planted = f" (PLANTED: the subject works {factor}x)" if factor != 1 else ""
            progress(f"{benchmark.name}{planted}: {benchmark.ratio}")
            context = BenchmarkContext(session, factor, progress)
            m = benchmark.measure(context)
            results[benchmark.name] = m
            details = ", ".join(f"{k} {v:.4g}" for k, v in m.details.items())
            samples = " ".join(f"{s:.4g}" for s in m.samples)
            progress(f"{benchmark.name}: {m.figure:.4g} (samples {samples}; {details})")
        ok = True
        return results
    finally:
        session.close(keep=not ok)


def machine() -> dict[str, Any]:
    from bench.report import cpu_identity, header

    info = header([])
    return {
        "cpu": info["cpu"],
        "cpu_id": cpu_identity(),
        "logical_cpus": info["logical_cpus"],
        "cpus_available": info["cpus_available"],
        "memory_gib": round(info["memory_gib"], 1),
        "kernel": info["kernel"],
        "python": info["versions"]["python"],
        "git": info["git"],
    }


def baseline_keys(info: Mapping[str, Any]) -> list[str]:
    """Where this machine's baselines are looked up, the most precise first: its family and
    model, then the model name alone (baselines recorded before ADR 71, or on a machine that
    gives no numbers)."""
    return list(dict.fromkeys([info["cpu_id"], info["cpu"]]))


@dataclass(frozen=True)
class Run:
    """One pass over the benchmarks, with when, how long and how busy the machine was."""

    date: str
    results: Mapping[str, Measurement]
    elapsed_s: float
    load_before: list[float]
    load_after: list[float]

    def history_entry(self, kind: str, passed: bool | None) -> dict[str, Any]:
        """The history line (perf/README.md, "History and the dashboard")."""
        return {
            "date": self.date,
            "kind": kind,
            "machine": machine(),
            "load_average": {"before": self.load_before, "after": self.load_after},
            "elapsed_s": round(self.elapsed_s, 1),
            "ratios": {
                name: {
                    "figure": round(m.figure, 6),
                    "samples": [round(s, 6) for s in m.samples],
                    "details": {k: round(v, 3) for k, v in m.details.items()},
                }
                for name, m in self.results.items()
            },
            "passed": passed,
        }


def run_once(benchmarks: Sequence[Benchmark], plant: Mapping[str, int], progress: Progress) -> Run:
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    load_before = list(os.getloadavg())
    results = measure_all(benchmarks, plant, progress)
    return Run(date, results, time.monotonic() - started, load_before, list(os.getloadavg()))


def check(
    benchmarks: Sequence[Benchmark],
    baselines: Path,
    *,
    history: Path | None,
    plant: Mapping[str, int],
    out: TextIO = sys.stdout,
    progress: Progress | None = None,
) -> int:
    """Measures, judges against the baselines, prints the verdicts and appends the history
    line (not for a planted run). 0 when every benchmark is within its tolerance, else 1."""
    run = run_once(benchmarks, plant, progress or Progress())
    info = machine()
    keys = baseline_keys(info)
    chosen = baselines_for(keys, benchmarks, baselines)
    verdicts = [judge(b, chosen.get(b.name), run.results[b.name], keys) for b in benchmarks]
    print(file=out)
    print(
        "perf-check: each figure is the median of its samples; baselines of "
        + ", else ".join(keys),
        file=out,
    )
    for v in verdicts:
        print(f"  {'PASS' if v.passed else 'FAIL'}  {v.message()}", file=out)
        if v.improved:
            print(
                f"        {v.name} is better than its baseline by more than the tolerance:"
                " record it with `make perf-baseline`",
                file=out,
            )
    over = " — OVER BUDGET" if run.elapsed_s > BUDGET_S else ""
    print(
        f"perf-check: measured in {run.elapsed_s:.0f} s (budget {BUDGET_S:.0f} s){over}", file=out
    )
    if plant:
        print(f"perf-check: planted regression {dict(plant)}: no history written", file=out)
    elif history is not None:
        append_history(run.history_entry("check", all(v.passed for v in verdicts)), history)
        print(f"perf-check: appended this run to {history}", file=out)
    failed = [v for v in verdicts if not v.passed]
    for v in failed:
        print(f"perf-check: FAILED {v.message()}", file=out)
    return 1 if failed else 0


def baseline(
    benchmarks: Sequence[Benchmark],
    runs: int,
    path: Path,
    *,
    history: Path | None,
    out: TextIO = sys.stdout,
    progress: Progress | None = None,
) -> int:
    """Measures the benchmarks `runs` times, each run with a fresh stack as `make perf-check`
    has, appends each run to the history, and records each benchmark's median and the rule's
    tolerance (perf/store.py) in `path`. 1, recording nothing, when a benchmark spreads too
    widely to gate."""
    progress = progress or Progress()
    figures: dict[str, list[float]] = {b.name: [] for b in benchmarks}
    for n in range(runs):
        progress(f"run {n + 1} of {runs}")
        run = run_once(benchmarks, {}, progress)
        progress(f"run {n + 1} of {runs} took {run.elapsed_s:.0f} s")
        for name, m in run.results.items():
            figures[name].append(m.figure)
        if history is not None:
            append_history(run.history_entry("baseline", None), history)
    info = machine()
    where = (
        f"{datetime.datetime.now(datetime.UTC).date().isoformat()}, {info['git']},"
        f" {info['cpu_id']}, {info['cpus_available']} CPUs, {runs} runs of `make perf-baseline`"
    )
    recorded, noisy = {}, []
    for name, values in figures.items():
        try:
            recorded[name] = record(values, where)
        except TooNoisy as exc:
            noisy.append(f"{name}: {exc}")
    print(file=out)
    for name, values in figures.items():
        runs_text = " ".join(f"{v:.4g}" for v in values)
        if name in recorded:
            r = recorded[name]
            print(
                f"  {name}: {r.baseline.value:.4g} ± {r.baseline.tolerance:.0%}"
                f" (spread {r.spread:.1%}; runs {runs_text})",
                file=out,
            )
    for line in noisy:
        print(f"perf-baseline: NOT RECORDED {line}", file=out)
    if noisy:
        return 1
    save_baselines(recorded, info["cpu_id"], path)
    print(f"perf-baseline: wrote {', '.join(recorded)} for {info['cpu_id']} to {path}", file=out)
    return 0
