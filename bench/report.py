"""Timing statistics, the run's header (machine, versions, command) and markdown tables."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("numpy", "numba", "xxhash", "scipy", "igraph", "rustworkx", "networkx")


@dataclass
class Stats:
    """Repeated timings of one thing, in seconds."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": len(self.samples),
            "min_s": self.min,
            "median_s": self.median,
            "samples_s": self.samples,
        }


class Progress:
    """Progress lines on stderr, with the time since the run began (tables go to stdout)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", file=sys.stderr, flush=True)


def header(argv: Sequence[str]) -> dict[str, Any]:
    """Machine, software and command of this run."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "bench", *argv]),
        "make": "make bench" if os.environ.get("MAKELEVEL") else None,
        "git": _git_revision(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": versions,
    }


def print_header(info: dict[str, Any]) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print("# Lattice engine benchmarks")
    print()
    print(f"- date: {info['date']}")
    via = " (via `make bench`)" if info["make"] else ""
    print(f"- command: `{info['command']}`{via}")
    if info["git"]:
        print(f"- source: {info['git']}")
    print(
        f"- machine: {info['cpu']}, {info['logical_cpus']} logical CPUs"
        f" ({info['cpus_available']} available to this process), {info['memory_gib']:.1f} GiB RAM,"
        f" Linux {info['kernel']} {info['machine']}"
    )
    load = ", ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    print(f"- load average at start (1, 5, 15 min): {load}")
    print(f"- software: {versions}")
    print()


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, padded so that it also reads well in a terminal."""
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), rule, *(line(r) for r in rows)])


def ms(seconds: float) -> str:
    """Milliseconds with about three significant digits."""
    value = seconds * 1000
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ms_pair(stats: Stats | None) -> str:
    """'min / median' in milliseconds; a dash for nothing."""
    if stats is None:
        return "—"
    if len(stats.samples) == 1:
        return ms(stats.min)
    return f"{ms(stats.min)} / {ms(stats.median)}"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.1f}"


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _cpu_model(info: dict[str, str] | None = None) -> str:
    """The processor's model name (from `info`, the parsed /proc/cpuinfo, when given)."""
    info = _cpuinfo() if info is None else info
    return info.get("model name") or platform.processor() or "unknown CPU"


def cpu_identity() -> str:
    """The model name with its family and model numbers, e.g. "AMD EPYC (family 25, model 1)":
    virtual machines often report a generic name ("AMD EPYC") over processors of different
    generations, whose ratios to a peer differ (ADR 71). The name alone where they are unknown.
    """
    info = _cpuinfo()
    name = _cpu_model(info)
    if "cpu family" in info and "model" in info:
        return f"{name} (family {info['cpu family']}, model {info['model']})"
    return name


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _git_revision() -> str | None:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"git {revision}" + (" with uncommitted changes" if dirty else "")
