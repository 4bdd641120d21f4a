"""Virtual users who follow real journeys through the gateway, with think time.

One user is one tenant's owner: it registers once, then works in sessions. A session:

1. log in (first: register + log in; later: refresh the kept token, or log in again after a
   log-out), then `GET /v1/users/me` and the lattice list;
2. revisit one lattice kept from an earlier session: read it, a UNIT and a FIELD path, analyse;
3. in 30% of sessions, register a webhook on the loopback receiver and list the webhooks;
4. create a lattice of one of several sizes, read it, read two pages of its field (and pick
   path ends among the open vertices found there), analyse, a UNIT and a FIELD path, transform
   it with `if_version`, read it, undo the transform with the returned inverse (again with
   `if_version`), a FIELD path on the restored field;
5. refresh the access token, list the lattices;
6. with a webhook: send it a test event, list its deliveries, delete it;
7. delete the oldest lattice beyond two kept, and log out in 25% of sessions.

Between two requests a user thinks for 1 to 4 s (uniform), between sessions 5 to 10 s. That
is about 22 requests per session, 70% reads (GETs, paths, analysis) and 30% writes (auth
tokens, creates, transforms, deletes, webhooks); every user's randomness comes from its own
seeded generator, so a run is repeatable up to timing.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from loadtest import http1
from loadtest.report import Result

THINK_S = (1.0, 4.0)
PAUSE_S = (5.0, 10.0)
WEBHOOK_SHARE = 0.3
LOGOUT_SHARE = 0.25
KEEP_LATTICES = 2
REQUEST_TIMEOUT_S = 60.0
EVENT_TYPES = ["lattice.created", "lattice.transformed", "lattice.deleted", "path.computed"]


@dataclass(frozen=True)
class Shape:
    """A lattice size users create, and how often (weights add up to 100)."""

    dimensions: int
    size: int
    weight: int

    @property
    def vertices(self) -> int:
        return int(self.size**self.dimensions)


# Within the starter plan (100,000 vertices). 16^4 = 65,536 is the largest light job
# (COMPUTE_LIGHT_VERTICES); 45^3 = 91,125 goes to the heavy lane.
SHAPES = (
    Shape(2, 50, 35),
    Shape(3, 20, 25),
    Shape(3, 32, 20),
    Shape(4, 16, 10),
    Shape(3, 45, 10),
)
BLOCKED_FRACTIONS = (0.0, 0.05, 0.1)


class Failed(Exception):
    """A request of the journey failed (already recorded); the session ends here."""


@dataclass
class Window:
    """Every request that started within one measured window, overall and by route."""

    name: str
    started: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    overall: Result = field(init=False)
    routes: dict[str, Result] = field(default_factory=dict)
    reads: int = 0
    writes: int = 0

    def __post_init__(self) -> None:
        self.overall = Result(self.name, self.started)

    def add(self, route: str, write: bool, latency_ns: int, status: int | None, why: str) -> None:
        for result in (self.overall, self.routes.setdefault(route, Result(route, time.time()))):
            result.add(latency_ns, status, error=why, failure=why and f"{route}: {why}")
        if write:
            self.writes += 1
        else:
            self.reads += 1

    def close(self) -> Window:
        elapsed = time.perf_counter() - self.t0
        for result in (self.overall, *self.routes.values()):
            result.total_s = elapsed
        return self

    def ghz(self) -> dict[str, Any]:
        """ghz's report of the whole window, with one ghz report per route under `routes`."""
        return {
            **self.overall.ghz(),
            "reads": self.reads,
            "writes": self.writes,
            "firstFailure": self.overall.first_failure,
            "routes": {name: self.routes[name].ghz() for name in sorted(self.routes)},
        }


@dataclass
class Load:
    """What the users of a run share: where the gateway and the receiver are, and the window
    requests are counted in (switched by the scenario as it goes)."""

    host: str
    port: int
    receiver_url: str
    window: Window
    stopping: bool = False
    # The admin URL whose pg_stat_statements each window resets and reads; "" for none.
    pg_stats: str = ""
    # Between two requests of a session; (0, 0): none (perf/seed.py's back-to-back journeys).
    think_s: tuple[float, float] = THINK_S

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Kept:
    """A lattice a user holds: its version and two open vertices to find paths between."""

    id: str
    shape: Shape
    version: int
    start: list[int]
    end: list[int]


class VirtualUser:
    """One user: one keep-alive connection, one request at a time."""

    def __init__(self, number: int, load: Load, seed: int) -> None:
        self.number = number
        self.load = load
        self.rng = random.Random(seed)  # noqa: S311 - think times and choices, no secret
        self.conn = http1.Conn(load.host, load.port)
        self.busy = False
        self.email = f"user{number}-{seed}@load.example.com"
        self.tenant_name = f"load user {number}"
        self.password = f"load passphrase {seed} {number} staple"
        self.registered = False
        self.access = ""
        self.refresh_token = ""
        self.kept: list[Kept] = []
        self.sessions = 0
        self.first_request = True

    async def run(self, delay_s: float) -> None:
        """Sessions until the run stops (the scenario cancels the task while it thinks)."""
        await asyncio.sleep(delay_s)
        try:
            while True:
                try:
                    await self.session()
                except Failed:
                    # Start the next session from a fresh log-in, whatever failed.
                    self.access = self.refresh_token = ""
                self.sessions += 1
                if self.load.stopping:
                    return
                await asyncio.sleep(self.rng.uniform(*PAUSE_S))
                self.first_request = True
        finally:
            self.conn.close()

    # ------------------------------------------------------------------ the journey
    async def session(self) -> None:
        await self.sign_in()
        await self.get("GET /v1/users/me", "/v1/users/me")
        await self.get("GET /v1/lattices", "/v1/lattices?page_size=20")
        if self.kept:
            await self.revisit(self.rng.choice(self.kept))
        webhook = None
        if self.rng.random() < WEBHOOK_SHARE:
            url = f"{self.load.receiver_url}/u{self.number}"
            body = {"url": url, "event_types": EVENT_TYPES, "description": "load"}
            reply = await self.post("POST /v1/webhooks", "/v1/webhooks", body)
            webhook = reply["webhook"]["id"]
            await self.get("GET /v1/webhooks", "/v1/webhooks")
        await self.work_on(await self.create())
        await self.refresh()
        await self.get("GET /v1/lattices", "/v1/lattices?page_size=20")
        if webhook is not None:
            await self.post("POST /v1/webhooks/{id}/test", f"/v1/webhooks/{webhook}/test", {})
            await self.get("GET /v1/webhooks/{id}/deliveries", f"/v1/webhooks/{webhook}/deliveries")
            await self.call("DELETE /v1/webhooks/{id}", "DELETE", f"/v1/webhooks/{webhook}")
        while len(self.kept) > KEEP_LATTICES:
            oldest = self.kept.pop(0)
            await self.call("DELETE /v1/lattices/{id}", "DELETE", f"/v1/lattices/{oldest.id}")
        if self.rng.random() < LOGOUT_SHARE:
            body = {"refresh_token": self.refresh_token}
            await self.post("POST /v1/auth/logout", "/v1/auth/logout", body)
            self.access = self.refresh_token = ""

    async def sign_in(self) -> None:
        if not self.registered:
            body = {"email": self.email, "password": self.password, "tenant_name": self.tenant_name}
            await self.post("POST /v1/auth/register", "/v1/auth/register", body, auth=False)
            self.registered = True
        if self.refresh_token:
            await self.refresh()
            return
        body = {"email": self.email, "password": self.password}
        self.tokens(await self.post("POST /v1/auth/login", "/v1/auth/login", body, auth=False))

    async def refresh(self) -> None:
        body = {"refresh_token": self.refresh_token}
        self.tokens(await self.post("POST /v1/auth/refresh", "/v1/auth/refresh", body, auth=False))

    def tokens(self, reply: dict[str, Any]) -> None:
        self.access, self.refresh_token = reply["access_token"], reply["refresh_token"]

    async def revisit(self, lattice: Kept) -> None:
        await self.get("GET /v1/lattices/{id}", f"/v1/lattices/{lattice.id}")
        await self.path(lattice, "UNIT")
        await self.path(lattice, "FIELD")
        await self.get("GET /v1/lattices/{id}/analysis", f"/v1/lattices/{lattice.id}/analysis")

    async def create(self) -> Kept:
        shape = self.rng.choices(SHAPES, weights=[s.weight for s in SHAPES])[0]
        body = {
            "name": f"load {shape.size}^{shape.dimensions}",
            "dimensions": shape.dimensions,
            "size": shape.size,
            "random": {
                "seed": self.rng.randrange(2**32),
                "low": 1.0,
                "high": 2.0,
                "blocked_fraction": self.rng.choice(BLOCKED_FRACTIONS),
            },
        }
        created = await self.post("POST /v1/lattices", "/v1/lattices", body)
        lattice_id = created["id"]
        await self.get("GET /v1/lattices/{id}", f"/v1/lattices/{lattice_id}")
        # Two pages of the field: the path's ends are open vertices found in them.
        page = min(shape.vertices, 4 * shape.size)
        first = await self.field(lattice_id, 0, page)
        last = await self.field(lattice_id, shape.vertices - page, page)
        start = open_vertex(first, 0, shape, reverse=False)
        end = open_vertex(last, shape.vertices - page, shape, reverse=True)
        kept = Kept(lattice_id, shape, int(created["version"]), start, end)
        self.kept.append(kept)
        return kept

    async def work_on(self, lattice: Kept) -> None:
        await self.get("GET /v1/lattices/{id}/analysis", f"/v1/lattices/{lattice.id}/analysis")
        await self.path(lattice, "UNIT")
        await self.path(lattice, "FIELD")
        op = self.rng.choice(
            (
                {"xor": {"key": self.rng.randrange(1, 2**32)}},
                {"flip": {"axis": self.rng.randrange(lattice.shape.dimensions)}},
                {"rotate": {"axis_a": 0, "axis_b": 1, "quarter_turns": self.rng.randint(1, 3)}},
            )
        )
        inverse = await self.transform(lattice, op)
        await self.get("GET /v1/lattices/{id}", f"/v1/lattices/{lattice.id}")
        await self.transform(lattice, inverse)  # the field is as created again
        await self.path(lattice, "FIELD")

    async def transform(self, lattice: Kept, op: dict[str, Any]) -> dict[str, Any]:
        body = {**op, "if_version": str(lattice.version)}
        target = f"/v1/lattices/{lattice.id}/transform"
        reply = await self.post("POST /v1/lattices/{id}/transform", target, body)
        lattice.version = int(reply["lattice"]["version"])
        inverse: dict[str, Any] = reply["inverse"]
        return inverse

    async def path(self, lattice: Kept, cost: str) -> None:
        query = "&".join([f"start={c}" for c in lattice.start] + [f"end={c}" for c in lattice.end])
        route = f"GET /v1/lattices/{{id}}/path {cost}"
        await self.get(route, f"/v1/lattices/{lattice.id}/path?{query}&cost={cost}")

    async def field(self, lattice_id: str, offset: int, limit: int) -> array.array[float]:
        target = f"/v1/lattices/{lattice_id}/field?offset={offset}&limit={limit}"
        reply = await self.get("GET /v1/lattices/{id}/field", target)
        values = array.array("f", base64.b64decode(reply.get("values", "")))
        if sys.byteorder != "little":
            values.byteswap()
        return values

    # ------------------------------------------------------------------ requests
    async def get(self, route: str, target: str) -> dict[str, Any]:
        return await self.call(route, "GET", target)

    async def post(
        self, route: str, target: str, body: dict[str, Any], *, auth: bool = True
    ) -> dict[str, Any]:
        return await self.call(route, "POST", target, body, auth=auth)

    async def call(
        self,
        route: str,
        method: str,
        target: str,
        body: dict[str, Any] | None = None,
        *,
        auth: bool = True,
    ) -> dict[str, Any]:
        """Thinks, then sends one request and records it in the current window; Failed when
        it did not answer 200."""
        if not self.first_request and self.load.think_s[1] > 0:
            await asyncio.sleep(self.rng.uniform(*self.load.think_s))
        self.first_request = False
        if self.load.stopping:
            raise Failed("the run is over")
        headers = {"Authorization": f"Bearer {self.access}"} if auth else {}
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        raw = http1.encode(method, self.load.authority, target, headers, payload)
        window = self.load.window
        self.busy = True
        started = time.perf_counter_ns()
        try:
            reply = await asyncio.wait_for(self.conn.request(raw), REQUEST_TIMEOUT_S)
        except http1.TRANSPORT_ERRORS as exc:
            self.conn.close()
            why = type(exc).__name__
            window.add(route, method != "GET", time.perf_counter_ns() - started, None, why)
            raise Failed(route) from exc
        finally:
            self.busy = False
        latency = time.perf_counter_ns() - started
        why = "" if reply.status == 200 else f"{reply.status} {reply.body[:300]!r}"
        window.add(route, method != "GET", latency, reply.status, why)
        if reply.status != 200:
            raise Failed(route)
        answer: dict[str, Any] = reply.json() if reply.body else {}
        return answer


def open_vertex(
    values: array.array[float], offset: int, shape: Shape, *, reverse: bool
) -> list[int]:
    """Coordinates of the first (or last) vertex of a field page that is open and whose
    neighbours, and their neighbours, within the page are open too, so that it is all but
    certainly in the lattice's large open component and a path from it exists (a vertex with
    only its own neighbours open was once in a pocket: 1 "no path" in 4,500 paths); the page's
    first (last) vertex when none is."""
    n = len(values)

    def neighbours(i: int) -> list[int]:
        around = [i - shape.size, i + shape.size]
        if (offset + i) % shape.size:
            around.append(i - 1)
        if (offset + i + 1) % shape.size:
            around.append(i + 1)
        return [j for j in around if 0 <= j < n]

    order = range(n - 1, -1, -1) if reverse else range(n)
    chosen = order[0]
    for i in order:
        ring = {i, *neighbours(i)}
        ring |= {k for j in list(ring) for k in neighbours(j)}
        if all(is_open(values[j]) for j in ring):
            chosen = i
            break
    index = offset + chosen
    coordinates = []
    for _ in range(shape.dimensions):
        index, c = divmod(index, shape.size)
        coordinates.append(c)
    return coordinates[::-1]


def is_open(value: float) -> bool:
    """Not blocked: finite, without its sign bit (the API's convention)."""
    return math.isfinite(value) and math.copysign(1.0, value) > 0
