"""CPU time per request, by process kind, read from /proc around a scenario.

On a small machine the load generator, Envoy, the services, PostgreSQL and Redis share the
cores, so requests per second alone cannot say where the time goes. Every process's user +
system CPU ticks are read before and after a scenario and grouped by what the process is; the
`other` group is everything else on the machine (other users' work, another stack: contention);
only the processes this one started count as the stack's.
Linux only; elsewhere `snapshot()` returns nothing and the table is skipped.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

# (substring of the command line, group), the first match wins.
GROUPS = (
    # The FastAPI yardstick (loadtest/peer.py), a child of the load generator.
    ("loadtest.peer", "peer"),
    # The lattice service's compute workers (forkserver or spawn children; their command line
    # names the preloaded services.lattice modules too, so this comes first).
    ("multiprocessing.", "compute"),
    ("services.lattice", "lattice"),
    ("services.auth", "auth"),
    ("services.webhook", "webhook"),
    ("envoy", "envoy"),
    ("redis-server", "redis"),
    ("postgres", "postgres"),
)
ORDER = (
    "client",
    "peer",
    "envoy",
    "lattice",
    "compute",
    "auth",
    "webhook",
    "postgres",
    "redis",
    "other",
)

Snapshot = dict[int, tuple[int, str]]
# The whole machine's busy ticks ride in a snapshot under a pid no process has: processes that
# start and end between two snapshots (another engineer's test run) are not in any per-process
# reading, but they are in the machine's, so `other` is the machine's use less the stack's.
MACHINE = 0


def snapshot() -> Snapshot:
    """pid -> (CPU ticks used so far, group). Only this process's descendants (the stack it
    started) are grouped by what they are; every other process is `other`, so that another
    stack on the same machine (another engineer's PostgreSQL) is never counted as ours."""
    found: Snapshot = {}
    me = os.getpid()
    seen: dict[int, tuple[int, int, str]] = {}  # pid -> (ticks, parent, command)
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
        seen[int(entry.name)] = (ticks, int(fields[1]), command or stat.split()[1])
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in seen.items():
        children.setdefault(parent, []).append(pid)
    ours, todo = set(), [me]
    while todo:
        pid = todo.pop()
        ours.add(pid)
        todo.extend(children.get(pid, ()))
    for pid, (ticks, _, command) in seen.items():
        if pid == me:
            group = "client"
        elif pid in ours:
            group = _group(command)
        else:
            group = "other"
        found[pid] = (ticks, group)
    found[MACHINE] = (_machine_busy_ticks(), "machine")
    return found


def _machine_busy_ticks() -> int:
    """Busy ticks of every core since boot (/proc/stat: user, nice, system, irq, softirq,
    steal); 0 where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def _group(command: str) -> str:
    return next((group for needle, group in GROUPS if needle in command), "other")


def _used(before: Snapshot, after: Snapshot) -> Counter[str]:
    """Ticks by group between two snapshots (processes that started in between count from
    zero); `other` is at least the machine's busy ticks less the groups of the stack."""
    used: Counter[str] = Counter()
    for pid, (ticks, group) in after.items():
        if pid != MACHINE:
            used[group] += ticks - before.get(pid, (0, group))[0]
    if MACHINE in before and MACHINE in after:
        machine = after[MACHINE][0] - before[MACHINE][0]
        ours = sum(n for group, n in used.items() if group != "other")
        used["other"] = max(used["other"], machine - ours)
    return used


def per_request_ms(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by group between two snapshots."""
    if not requests:
        return {}
    hz = os.sysconf("SC_CLK_TCK")
    used = _used(before, after)
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


def cores_used(before: Snapshot, after: Snapshot, seconds: float) -> dict[str, float]:
    """CPU cores each group kept busy on average between two snapshots `seconds` apart."""
    if seconds <= 0:
        return {}
    hz = os.sysconf("SC_CLK_TCK")
    used = _used(before, after)
    return {group: used[group] / hz / seconds for group in ORDER if used[group] > 0}


def format_cores(cores: dict[str, float]) -> str:
    """'1.84 of 2 cores busy: lattice 0.61, envoy 0.32, ...' (largest first)."""
    busy = sum(cores.values())
    parts = ", ".join(f"{g} {c:.2f}" for g, c in sorted(cores.items(), key=lambda kv: -kv[1]))
    return f"{busy:.2f} of {os.cpu_count()} cores busy: {parts}"
