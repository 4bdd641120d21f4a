"""CPU time per request, by process kind, read from /proc around a scenario.

On a small machine the load generator, Envoy, the services, PostgreSQL and Redis share the
cores, so requests per second alone cannot say where the time goes. Every process's user +
system CPU ticks are read before and after a scenario and grouped by what the process is; the
`other` group is everything else on the machine (other users' work: contention).
Linux only; elsewhere `snapshot()` returns nothing and the table is skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

# (substring of the command line, group), the first match wins.
GROUPS = (
    ("services.lattice", "lattice"),
    ("services.auth", "auth"),
    ("services.webhook", "webhook"),
    ("envoy", "envoy"),
    ("redis-server", "redis"),
    ("postgres", "postgres"),
)
ORDER = ("client", "envoy", "lattice", "auth", "webhook", "postgres", "redis", "other")

Snapshot = dict[int, tuple[int, str]]


def snapshot() -> Snapshot:
    """pid -> (CPU ticks used so far, group)."""
    found: Snapshot = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat.rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])
        pid = int(entry.name)
        group = "client" if pid == me else _group(command or stat.split()[1])
        found[pid] = (ticks, group)
    return found


def _group(command: str) -> str:
    return next((group for needle, group in GROUPS if needle in command), "other")


def per_request_ms(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by group between two snapshots (processes that started
    in between count from zero)."""
    if not requests:
        return {}
    hz = os.sysconf("SC_CLK_TCK")
    used: Counter[str] = Counter()
    for pid, (ticks, group) in after.items():
        used[group] += ticks - before.get(pid, (0, group))[0]
    return {group: used[group] * 1000 / hz / requests for group in ORDER if used[group] > 0}


def format_table(rows: dict[str, dict[str, float]]) -> list[str]:
    """One line per scenario: CPU ms per request by group, and the total."""
    if not rows:
        return []
    groups = [g for g in ORDER if any(g in row for row in rows.values())]
    lines = [f"{'CPU ms per request':<34} " + " ".join(f"{g:>8}" for g in groups) + "    total"]
    for name, row in rows.items():
        cells = " ".join(f"{row.get(g, 0.0):>8.3f}" for g in groups)
        lines.append(f"{name:<34} {cells} {sum(row.values()):>8.3f}")
    return lines
