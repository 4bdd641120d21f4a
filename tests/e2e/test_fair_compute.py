"""Fair compute through the gateway: a tenant flooding the compute pool with
expensive searches neither refuses nor slows down another tenant's small ones.

The reproduction is the issue's, bounded: an enterprise tenant's clients loop A*/FIELD paths
on a 40^4 lattice with 25% blocked (seconds each), retrying 0.5 s after a 429, while a
professional tenant asks for DIJKSTRA/FIELD paths on a 50^3 lattice (milliseconds, but a HEAVY
job: more vertices than the light lane takes). Before fair compute the flood filled the one
shared queue, and the small tenant's paths were refused or waited behind the searches.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import Tenant, register_and_login, set_plan

pytestmark = pytest.mark.e2e

HEAVY_CLIENTS = 8
RETRY_AFTER_429_S = 0.5
# The heavy searches give up after this (a gRPC deadline, through the gateway), so that the
# flood drains within seconds once the test stops it.
HEAVY_TIMEOUT = "5S"
SAMPLES = 30
# The flood's searches keep the pool's workers busy, and on a 2-core machine the light tenant's
# requests share those cores with them: a few tens of milliseconds of time-sharing are the
# machine's, not the queue's (a clean-clone CI run saw p95 26 -> 72 ms). Unfairness looks
# different: a light request queued behind one heavy search waits the search out, a second or
# more. The allowance is far below that.
CPU_SHARING_ALLOWANCE_S = 0.1


def create(gateway: httpx.Client, tenant: Tenant, dimensions: int, size: int, **fill: Any) -> str:
    reply = gateway.post(
        "/v1/lattices",
        json={"name": "fair", "dimensions": dimensions, "size": size, "random": fill},
        headers=tenant.headers,
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    lattice_id: str = reply.json()["id"]
    return lattice_id


def path_query(dimensions: int, size: int, algorithm: str) -> list[tuple[str, Any]]:
    corners = [("start", 0)] * dimensions + [("end", size - 1)] * dimensions
    return [*corners, ("algorithm", algorithm), ("cost", "FIELD")]


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


class Flood:
    """Clients of one tenant looping an expensive path, as the issue's enterprise tenant did."""

    def __init__(self, url: str, tenant: Tenant, lattice_id: str) -> None:
        self._url = url
        self._headers = {**tenant.headers, "grpc-timeout": HEAVY_TIMEOUT}
        self._route = f"/v1/lattices/{lattice_id}/path"
        self._query = path_query(4, 40, "ASTAR")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self._threads = [threading.Thread(target=self._client) for _ in range(HEAVY_CLIENTS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self, status: int) -> int:
        with self._lock:
            return self.statuses[status]

    def _client(self) -> None:
        with httpx.Client(base_url=self._url, timeout=60, trust_env=False) as client:
            while not self._stop.is_set():
                reply = client.get(self._route, params=self._query, headers=self._headers)
                with self._lock:
                    self.statuses[reply.status_code] += 1
                if reply.status_code == 429:
                    self._stop.wait(RETRY_AFTER_429_S)


def test_a_flooding_tenant_neither_refuses_nor_slows_another_tenants_paths(
    stack: Any, gateway: httpx.Client
) -> None:
    heavy = register_and_login(gateway)
    set_plan(stack, heavy, "enterprise")
    light = register_and_login(gateway)
    set_plan(stack, light, "professional")
    # Seed 1 leaves both corners of the 40^4 lattice open (the fill is deterministic).
    heavy_lattice = create(gateway, heavy, 4, 40, seed=1, low=0, high=1, blocked_fraction=0.25)
    light_lattice = create(gateway, light, 3, 50, seed=7, low=0, high=1, blocked_fraction=0)
    light_route = f"/v1/lattices/{light_lattice}/path"
    light_query = path_query(3, 50, "DIJKSTRA")

    def light_path() -> tuple[int, float]:
        started = time.perf_counter()
        reply = gateway.get(light_route, params=light_query, headers=light.headers)
        return reply.status_code, time.perf_counter() - started

    for _ in range(3):  # the field into the cache, the connections open
        assert light_path()[0] == 200
    unloaded = [light_path() for _ in range(SAMPLES)]

    flood = Flood(stack.gateway_url, heavy, heavy_lattice)
    flood.start()
    try:
        # The flood is on once the heavy tenant is over its share: it has been refused.
        deadline = time.monotonic() + 30
        while flood.count(429) == 0:
            assert time.monotonic() < deadline, f"the flood never went over: {flood.statuses}"
            time.sleep(0.05)
        loaded = [light_path() for _ in range(SAMPLES)]
        still_flooding = flood.count(429)
    finally:
        flood.stop()

    assert [status for status, _ in unloaded] == [200] * SAMPLES
    assert [status for status, _ in loaded] == [200] * SAMPLES, Counter(s for s, _ in loaded)
    # The heavy tenant was refused throughout (over its share), not just once at the start.
    assert still_flooding > 1, flood.statuses
    before = [elapsed for _, elapsed in unloaded]
    during = [elapsed for _, elapsed in loaded]
    summary = (
        f"light tenant p50/p95 unloaded {sorted(before)[SAMPLES // 2] * 1000:.1f}/"
        f"{p95(before) * 1000:.1f} ms, loaded {sorted(during)[SAMPLES // 2] * 1000:.1f}/"
        f"{p95(during) * 1000:.1f} ms; heavy tenant {dict(flood.statuses)}"
    )
    print(summary)
    assert p95(during) <= 2 * p95(before) + CPU_SHARING_ALLOWANCE_S, summary
