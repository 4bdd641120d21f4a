"""REST vs its ceiling: authenticated GET /v1/lattices/{id} against GET /.well-known/jwks.json.

Both go through the same Envoy of the run's stack, over one keep-alive connection, in
alternating bursts. The ceiling is the cheapest RPC there is (public, answered from memory by
`auth` through the same interceptor chain). The figure is the ceiling's stack CPU per request
÷ the GET's: what a GET costs beyond the gateway's floor, as a share (the req/s share of
docs/performance.md, "REST through the gateway", is the same idea under load). CPU, unlike
req/s, does not move when another process takes a core; one connection, unlike many, leaves
out how well the services batch concurrent requests, which moves with the machine's load
(medians 13% apart over three runs at 32 connections, 4% at one).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx

from loadtest.rest import create_lattice, register_and_login
from perf.cpu import settle, stack_cpu_s
from perf.model import Context, Direction, Measurement

CEILING_PATH = "/.well-known/jwks.json"


class RequestFailed(RuntimeError):
    """A request in a measured burst did not answer 200: there is no figure to judge."""


@dataclass(frozen=True)
class Burst:
    """What one burst counted: requests, seconds, and the stack's CPU seconds."""

    requests: int
    seconds: float
    cpu_s: float

    @property
    def cpu_per_request_ms(self) -> float:
        return self.cpu_s / self.requests * 1e3


async def burst(
    url: str, path: str, token: str | None, connections: int, seconds: float, work: int = 1
) -> Burst:
    """`connections` workers, one keep-alive connection each, requests back to back for
    `seconds`; then the stack's CPU until it is idle again. A counted request is `work`
    requests in a row (a planted regression). Any answer but 200 raises RequestFailed. The
    client's own CPU is not the stack's, so its cost does not enter the figure."""
    headers = {"accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    counted = 0
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=30, trust_env=False
    ) as client:
        await asyncio.gather(*(client.get(path) for _ in range(connections)))  # connect
        cpu_before = stack_cpu_s()
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal counted
            while time.perf_counter() < deadline:
                for _ in range(work):
                    reply = await client.get(path)
                    if reply.status_code != 200:
                        raise RequestFailed(f"GET {path}: {reply.status_code} {reply.text[:300]}")
                counted += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    await asyncio.to_thread(settle)
    return Burst(counted, elapsed, stack_cpu_s() - cpu_before)


@dataclass(frozen=True)
class RestVsCeiling:
    """Ceiling CPU per request ÷ GET CPU per request, from `repeats` alternating pairs of
    bursts of `seconds`."""

    name: str
    connections: int = 1
    seconds: float = 2.0
    repeats: int = 7
    direction: Direction = Direction.HIGHER
    needs_stack: bool = True

    @property
    def ratio(self) -> str:
        return (
            "stack CPU per GET /.well-known/jwks.json (the ceiling) ÷ per authenticated"
            f" GET /v1/lattices/{{id}}, same Envoy, {self.connections} keep-alive connection(s),"
            f" median of {self.repeats} pairs of {self.seconds:g} s bursts"
        )

    def measure(self, context: Context) -> Measurement:
        url = context.stack().gateway_url
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            token = register_and_login(client)
            lattice_id = create_lattice(client, token, 10, 0.0)
        return asyncio.run(self._measure(url, token, f"/v1/lattices/{lattice_id}", context))

    async def _measure(self, url: str, token: str, path: str, context: Context) -> Measurement:
        # Warm-up: connections, the verified-token cache, the services' plan cache.
        await burst(url, path, token, self.connections, 1.0)
        await burst(url, CEILING_PATH, None, self.connections, 0.5)
        gets: list[Burst] = []
        ceilings: list[Burst] = []
        for i in range(self.repeats):
            # Alternate which goes first, so that a drift in load falls on both sides.
            for which in ("get", "ceiling") if i % 2 == 0 else ("ceiling", "get"):
                if which == "get":
                    gets.append(
                        await burst(
                            url, path, token, self.connections, self.seconds, context.work_factor
                        )
                    )
                else:
                    ceilings.append(
                        await burst(url, CEILING_PATH, None, self.connections, self.seconds)
                    )
        return Measurement.median_of(
            tuple(
                c.cpu_per_request_ms / g.cpu_per_request_ms
                for g, c in zip(gets, ceilings, strict=True)
            ),
            {
                "get_cpu_ms": statistics.median(g.cpu_per_request_ms for g in gets),
                "ceiling_cpu_ms": statistics.median(c.cpu_per_request_ms for c in ceilings),
                "get_rps": statistics.median(g.requests / g.seconds for g in gets),
                "ceiling_rps": statistics.median(c.requests / c.seconds for c in ceilings),
            },
        )
