"""CPU time of the run's stack: every process descended from this one (Linux /proc).

The gate's stack is started by this process (devstack's children: PostgreSQL and its backends,
Redis, the services and their compute workers, Envoy), so its descendants are exactly the
stack, whatever else runs on the machine; this process itself, the load generator, is left
out. CPU time, unlike throughput, does not fall when another engineer's build takes a core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system seconds of the process and of its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None  # gone meanwhile
    return int(fields[1]), sum(int(value) for value in fields[11:15]) * _TICK_S


def stack_cpu_s() -> float:
    """CPU seconds used so far by every descendant of this process."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _stat(p))}
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def settle(idle_share: float = 0.15, window_s: float = 0.2, timeout_s: float = 5.0) -> bool:
    """Waits until the stack has used less than `idle_share` of one core over `window_s`:
    work that follows the last answer (batched result writes, group commits, flushes) belongs
    to the measurement before, not to the next. False when `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    before = stack_cpu_s()
    while time.monotonic() < deadline:
        time.sleep(window_s)
        after = stack_cpu_s()
        if after - before < idle_share * window_s:
            return True
        before = after
    return False
