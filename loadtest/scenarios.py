"""The API suite's scenarios on a running stack: seed, capacity and fairness.

Each runs virtual users (`loadtest/journeys.py`) against the stack's gateway and measures
windows: every request that starts inside a window counts in it; requests outside one (users
joining, the settling after, the drain at the end) are kept too, so that no error goes unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from devstack import Stack
from loadtest import cpu, http1, pgstats, rest
from loadtest.journeys import Load, VirtualUser, Window
from loadtest.report import Result
from loadtest.webhooks import Arrivals, receive

REPO_ROOT = Path(__file__).resolve().parent.parent
GATE_P95_MS = 500.0
SETTLE_S = 5.0
# The flooding tenant's plan and what it sends: the heaviest work that plan allows.
FLOOD_PLAN = "professional"
FLOOD_SIZE = 100  # 100^3 = 1,000,000 vertices: the professional plan's largest lattice
FLOOD_RETRY_S = 0.25  # after a 429: sooner than its retry-after (1 s) says, as a flood would


@dataclass
class Measured:
    """One measured window with the CPU that each kind of process used in it (and, with
    --pg-stats, the services' statements in it)."""

    window: Window
    cpu_ms: dict[str, float]
    cores: dict[str, float]
    statements: list[pgstats.Statement] = field(default_factory=list)

    @property
    def result(self) -> Result:
        return self.window.overall


class Crowd:
    """The virtual users of a run: started a few at a time, stopped together."""

    def __init__(self, load: Load, seed: int) -> None:
        self.load = load
        self.seed = seed
        self.users: list[VirtualUser] = []
        self.tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self.users)

    def grow(self, total: int, over_s: float) -> None:
        """Users up to `total`, the new ones starting evenly over `over_s` seconds."""
        new = total - len(self.users)
        for k in range(new):
            number = len(self.users)
            user = VirtualUser(number, self.load, seed=self.seed * 100_003 + number)
            self.users.append(user)
            self.tasks.append(asyncio.create_task(user.run(over_s * k / max(1, new))))

    async def stop(self) -> None:
        """Each user ends after its request in flight; one that is thinking ends at once."""
        self.load.stopping = True
        pending = {task for task in self.tasks if not task.done()}
        while pending:
            for user, task in zip(self.users, self.tasks, strict=True):
                if task in pending and not user.busy:
                    task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in self.tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def measure(load: Load, name: str, seconds: float) -> Measured:
    """A window of `seconds`; the load's window is `name-after` once it closes. With
    `load.pg_stats` (an admin URL), pg_stat_statements is reset before and read after it."""
    if load.pg_stats:
        await asyncio.to_thread(pgstats.reset, load.pg_stats)
    before = cpu.snapshot()
    load.window = window = Window(name)
    await asyncio.sleep(seconds)
    load.window = Window(f"{name} (after)")
    window.close()
    after = cpu.snapshot()
    statements = await asyncio.to_thread(pgstats.read, load.pg_stats) if load.pg_stats else []
    return Measured(
        window,
        cpu.per_request_ms(before, after, window.overall.count),
        cpu.cores_used(before, after, window.overall.total_s),
        statements,
    )


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, Arrivals]]:
    """An HTTP/1.1 webhook receiver on 127.0.0.1 in this event loop; answers 200."""
    arrivals = Arrivals(expected=sys.maxsize)
    server = await asyncio.start_server(
        lambda reader, writer: receive(reader, writer, arrivals), "127.0.0.1", 0, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hooks", arrivals
    finally:
        # The webhook service keeps its connections open: close them before the server.
        server.close()
        for writer in arrivals.connections:
            writer.close()
        await asyncio.gather(
            *(task for task in arrivals.connections.values() if task), return_exceptions=True
        )
        await server.wait_closed()


def new_load(stack: Stack, receiver_url: str, name: str, pg_stats: bool) -> Load:
    """The users' shared state; `pg_stats`: the stack was started with pgstats.SETTINGS and the
    extension enabled, and each window reads its statements."""
    parts = urlsplit(stack.gateway_url)
    load = Load(parts.hostname or "127.0.0.1", parts.port or 80, receiver_url, Window(name))
    load.pg_stats = stack.database_admin_url if pg_stats else ""
    return load


# ---------------------------------------------------------------------------- seed
@dataclass
class SeedRun:
    users: int
    measured: Measured
    outside: list[Window]
    deliveries: int

    @property
    def errors_outside(self) -> int:
        return sum(w.overall.error_count for w in self.outside)


async def seed(
    stack: Stack, users: int, ramp_s: float, seconds: float, pg_stats: bool = False
) -> SeedRun:
    """`users` users join over `ramp_s`, then one window of `seconds`."""
    async with receiver() as (url, arrivals):
        load = new_load(stack, url, "seed (ramp)", pg_stats)
        ramp = load.window
        crowd = Crowd(load, seed=1)
        crowd.grow(users, ramp_s)
        await asyncio.sleep(ramp_s + SETTLE_S)
        measured = await measure(load, "seed", seconds)
        drain = load.window
        await crowd.stop()
    return SeedRun(users, measured, [ramp.close(), drain.close()], len(arrivals.first))


# ---------------------------------------------------------------------------- capacity
@dataclass
class Step:
    users: int
    measured: Measured
    joining: Window

    @property
    def errors(self) -> int:
        return self.measured.result.error_count + self.joining.overall.error_count

    @property
    def held(self) -> bool:
        """p95 below the gate and not one error, joining included: a step with errors is
        never a level the stack held."""
        return self.errors == 0 and self.measured.result.percentile_ms(95) < GATE_P95_MS


async def capacity(
    stack: Stack, steps: list[int], join_per_s: float, seconds: float, pg_stats: bool = False
) -> list[Step]:
    """The same users, more at each step (joining `join_per_s` a second), until a step is not
    held (or the steps end)."""
    done: list[Step] = []
    async with receiver() as (url, _):
        load = new_load(stack, url, "capacity (join)", pg_stats)
        crowd = Crowd(load, seed=2)
        try:
            for users in steps:
                load.window = joining = Window(f"capacity {users} (join)")
                join_s = (users - len(crowd)) / join_per_s
                crowd.grow(users, join_s)
                await asyncio.sleep(join_s + SETTLE_S)
                joining.close()
                step = Step(users, await measure(load, f"capacity {users}", seconds), joining)
                done.append(step)
                print(f"[capacity] {step_line(step)}", file=sys.stderr, flush=True)
                if not step.held:
                    break
        finally:
            await crowd.stop()
    return done


def step_line(step: Step) -> str:
    r = step.measured.result
    return (
        f"{step.users} users: {r.rps:.1f} req/s, p50 {r.percentile_ms(50):.1f} ms, p95 "
        f"{r.percentile_ms(95):.1f} ms, p99 {r.percentile_ms(99):.1f} ms, {step.errors} errors; "
        f"{cpu.format_cores(step.measured.cores)}"
    )


# ---------------------------------------------------------------------------- fairness
@dataclass
class Flood:
    """One tenant's clients sending heavy paths and transforms back to back."""

    load: Load
    token: str
    path_lattice: str
    transform_lattice: str
    result: Result = field(default_factory=lambda: Result("flood", time.time()))
    stopping: bool = False

    async def client(self, number: int) -> None:
        rng = random.Random(number)  # noqa: S311 - which request next, no secret
        conn = http1.Conn(self.load.host, self.load.port)
        auth = {"Authorization": f"Bearer {self.token}"}
        query = f"{rest.path_query(FLOOD_SIZE)}&algorithm=DIJKSTRA&cost=FIELD"
        path = http1.encode(
            "GET", self.load.authority, f"/v1/lattices/{self.path_lattice}/path?{query}", auth
        )
        try:
            while not self.stopping:
                if rng.random() < 2 / 3:
                    raw, route = path, "GET /v1/lattices/{id}/path DIJKSTRA FIELD"
                else:
                    body = f'{{"xor":{{"key":{rng.randrange(1, 2**32)}}}}}'.encode()
                    target = f"/v1/lattices/{self.transform_lattice}/transform"
                    raw = http1.encode("POST", self.load.authority, target, auth, body)
                    route = "POST /v1/lattices/{id}/transform XOR"
                started = time.perf_counter_ns()
                try:
                    reply = await asyncio.wait_for(conn.request(raw), 120)
                except http1.TRANSPORT_ERRORS as exc:
                    conn.close()
                    self.result.add(0, None, error=type(exc).__name__)
                    continue
                why = "" if reply.status in (200, 429) else f"{route}: {reply.status}"
                self.result.add(time.perf_counter_ns() - started, reply.status, failure=why)
                if reply.status == 429:
                    await asyncio.sleep(FLOOD_RETRY_S)
        finally:
            conn.close()


def flood_tenant(stack: Stack) -> tuple[str, str, str]:
    """A tenant on the flood plan with a path lattice (corners connected) and a transform
    lattice of the plan's largest size: (token, path lattice id, transform lattice id)."""
    with httpx.Client(base_url=stack.gateway_url, timeout=120, trust_env=False) as client:
        token = rest.register_and_login(client)
        me = client.get("/v1/users/me", headers={"authorization": f"Bearer {token}"})
        me.raise_for_status()
        tenant_id = me.json()["tenant_id"]
        subprocess.run(  # noqa: S603 - our own admin command line, arguments we built
            [sys.executable, "-m", "services.auth.admin", "set-plan", tenant_id, FLOOD_PLAN],
            env=stack.env,
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            timeout=60,
        )
        path_lattice, _ = rest.create_path_lattice(client, token, FLOOD_SIZE)
        transform_lattice = rest.create_lattice(client, token, FLOOD_SIZE, 0.2)
    return token, path_lattice, transform_lattice


@dataclass
class FairnessRun:
    users: int
    unloaded: Measured
    loaded: Measured
    outside: list[Window]
    flood: Result
    flood_clients: int

    @property
    def errors_outside(self) -> int:
        return sum(w.overall.error_count for w in self.outside)


async def fairness(
    stack: Stack,
    flood_setup: tuple[str, str, str],
    users: int,
    ramp_s: float,
    seconds: float,
    flood_clients: int,
    pg_stats: bool = False,
) -> FairnessRun:
    """`users` users; a window without the flood, then one with it."""
    async with receiver() as (url, _):
        load = new_load(stack, url, "fairness (ramp)", pg_stats)
        ramp = load.window
        crowd = Crowd(load, seed=3)
        crowd.grow(users, ramp_s)
        await asyncio.sleep(ramp_s + SETTLE_S)
        unloaded = await measure(load, "fairness unloaded", seconds)
        between = load.window
        flood = Flood(load, *flood_setup)
        clients = [asyncio.create_task(flood.client(n)) for n in range(flood_clients)]
        await asyncio.sleep(SETTLE_S)
        flood.result = Result("flood", time.time())  # counted from the loaded window on
        started = time.perf_counter()
        loaded = await measure(load, "fairness loaded", seconds)
        flood.result.total_s = time.perf_counter() - started
        flood.stopping = True
        drain = load.window
        await crowd.stop()
        await asyncio.gather(*clients)
    return FairnessRun(
        users,
        unloaded,
        loaded,
        [ramp.close(), between.close(), drain.close()],
        flood.result,
        flood_clients,
    )
