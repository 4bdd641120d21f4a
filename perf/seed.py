"""The seed's user journeys against the gateway's ceiling, in the same run.

The load suite's virtual users (`loadtest/journeys.py`: log in or refresh, list, create a
lattice, read it and its field, analyse, UNIT and FIELD paths, transform and undo with
`if_version`, webhooks on a loopback receiver, delete, log out) each run whole sessions back to
back, without think time, in bursts that alternate with bursts of the JWKS ceiling
(`perf/rest.py`). The figure is the ceiling's stack CPU per request ÷ the journeys' stack CPU
per request, higher is better: what a request of the seed's mix costs beyond the gateway's
floor. It guards every route the users take at once, the lattice service's field handling and
the webhook deliveries the journeys cause (the stack is idle again, `settle`, before a burst's
CPU is read).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadtest.journeys import Failed, Load, VirtualUser, Window
from loadtest.scenarios import receiver
from perf.cpu import settle, stack_cpu_s
from perf.model import Context, Direction, Measurement
from perf.rest import CEILING_PATH, Burst, RequestFailed, burst

NO_THINK = (0.0, 0.0)


@dataclass(frozen=True)
class SeedVsCeiling:
    """Ceiling CPU per request ÷ journey CPU per request, from `repeats` alternating pairs:
    `users` users each running `sessions` sessions, and a `ceiling_s` burst of the ceiling."""

    name: str
    users: int = 6
    sessions: int = 2
    repeats: int = 5
    ceiling_s: float = 1.5
    direction: Direction = Direction.HIGHER
    needs_stack: bool = True

    @property
    def ratio(self) -> str:
        return (
            "stack CPU per GET /.well-known/jwks.json (the ceiling, one connection) ÷ per request"
            f" of the seed's user journeys ({self.users} users x {self.sessions} sessions back to"
            f" back, no think time), median of {self.repeats} pairs"
        )

    def measure(self, context: Context) -> Measurement:
        return asyncio.run(self._measure(context.stack().gateway_url, context))

    async def _measure(self, url: str, context: Context) -> Measurement:
        parts = urlsplit(url)
        async with receiver() as (hooks, _):
            load = Load(parts.hostname or "127.0.0.1", parts.port or 80, hooks, Window("seed"))
            load.think_s = NO_THINK
            users = [VirtualUser(n, load, seed=7_919 * (n + 1)) for n in range(self.users)]
            try:
                # Warm-up: registration, connections, caches; not counted.
                await self._journeys(load, users, 1)
                await burst(url, CEILING_PATH, None, 1, 0.5)
                journeys: list[Burst] = []
                ceilings: list[Burst] = []
                for i in range(self.repeats):
                    for which in ("seed", "ceiling") if i % 2 == 0 else ("ceiling", "seed"):
                        if which == "seed":
                            journeys.append(
                                await self._journeys(
                                    load, users, self.sessions, context.work_factor
                                )
                            )
                        else:
                            ceilings.append(await burst(url, CEILING_PATH, None, 1, self.ceiling_s))
                    context.progress(
                        f"pair {i + 1}/{self.repeats}: journeys"
                        f" {journeys[-1].cpu_per_request_ms:.2f} ms CPU per request,"
                        f" ceiling {ceilings[-1].cpu_per_request_ms:.3f}"
                    )
            finally:
                for user in users:
                    user.conn.close()
        return Measurement.median_of(
            tuple(
                c.cpu_per_request_ms / j.cpu_per_request_ms
                for j, c in zip(journeys, ceilings, strict=True)
            ),
            {
                "journey_cpu_ms": statistics.median(j.cpu_per_request_ms for j in journeys),
                "ceiling_cpu_ms": statistics.median(c.cpu_per_request_ms for c in ceilings),
                "journey_rps": statistics.median(j.requests / j.seconds for j in journeys),
                "ceiling_rps": statistics.median(c.requests / c.seconds for c in ceilings),
            },
        )

    async def _journeys(
        self, load: Load, users: list[VirtualUser], sessions: int, work: int = 1
    ) -> Burst:
        """Every user runs `sessions` sessions (`work` times each: a planted regression counts
        one); then the stack's CPU until it is idle again. Any failed request raises
        RequestFailed naming it."""
        load.window = window = Window("seed")
        cpu_before = stack_cpu_s()
        started = time.perf_counter()

        async def user_sessions(user: VirtualUser) -> None:
            for _ in range(sessions * work):
                try:
                    await user.session()
                except Failed:
                    first = window.overall.first_failure
                    raise RequestFailed(f"a seed journey failed: {first}") from None
                user.first_request = True

        await asyncio.gather(*(user_sessions(u) for u in users))
        elapsed = time.perf_counter() - started
        await asyncio.to_thread(settle)
        cpu_s = stack_cpu_s() - cpu_before
        # A planted regression does each session `work` times but counts its requests once.
        requests = max(1, window.overall.count // work)
        return Burst(requests, elapsed, cpu_s)
