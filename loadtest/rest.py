"""REST through Envoy: authenticated GET /v1/lattices/{id} against a no-op ceiling.

Starts a private devstack on free ports, registers a tenant, creates a lattice, then drives
HTTP/1.1 keep-alive requests over N connections for a bounded time with a raw-asyncio client
(lower overhead than httpx; it still shares the machine's cores with the stack). Writes one
ghz-format JSON report per scenario and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from loadtest import cpu, http1, pgstats
from loadtest.report import Result, ceiling_rps
from loadtest.stack import private_stack

# The request-path targets, all relative or per request, measured in the same run (they
# replaced absolute ones): our GET at least as fast as the one-process FastAPI peer
# (loadtest/peer.py) doing the same work, its p99 at most 1.5 times the peer's, and at least
# 70% of the no-op ceiling through the same Envoy; the default path's end-to-end p50 at most
# 1.5 ms above the engine's own, and at most 2 ms of CPU a path request outside the engine,
# summed over every process but the load generator.
TARGET_CEILING_SHARE = 0.70
TARGET_PEER_RATIO = 1.0
TARGET_PEER_P99_RATIO = 1.5
TARGET_PATH_OVERHEAD_MS = 1.5
TARGET_PATH_CPU_MS = 2.0
# Target 3: an event nobody subscribes to (the paths' `path.computed`: the run's tenant has no
# webhook) costs the webhook service at most this much CPU; with a subscriber, see
# `loadtest webhooks --event-cost`.
TARGET_UNSUBSCRIBED_EVENT_MS = 0.1
# Target 4: a FIELD path through REST (end-to-end p50) at most half the time of scipy's
# Dijkstra query on the same lattice, corner to corner, timed in the driver after the stack
# has stopped (median of SCIPY_REPEATS).
TARGET_SCIPY_RATIO = 0.5
SCIPY_REPEATS = 5
# The GET scenario's lattice (10^3, nothing blocked), also the serial floor's small path.
FLOOR_LATTICE_SIZE = 10
PEER_START_TIMEOUT_S = 30.0

STACK_ENV = {
    "DEFAULT_PLAN": "enterprise",
    "RATE_LIMIT_MULTIPLIER": "1000",
    "TENANT_RATE_LIMIT_ENTERPRISE_PER_S": "1000000",
    "TENANT_RATE_LIMIT_ENTERPRISE_BURST": "1000000",
    "LOG_LEVEL": "WARNING",
}


def raw_get(host: str, port: int, path: str, token: str | None, body: bytes | None = None) -> bytes:
    """The bytes of a GET (or, with a JSON `body`, a POST) request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    method = "GET" if body is None else "POST"
    return http1.encode(method, f"{host}:{port}", path, headers, body)


async def drive(
    name: str,
    url: str,
    path: str,
    token: str | None,
    connections: int,
    duration: float,
    engine_field: str | None = None,
    max_requests: int = 0,
    body: bytes | None = None,
) -> Result:
    """N workers, one keep-alive connection each, back to back until the deadline; a POST of
    `body` when one is given."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raw = raw_get(host, port, path, token, body)
    result = Result(name, time.time())
    conns = [http1.Conn(host, port) for _ in range(connections)]
    await asyncio.gather(*(c.open() for c in conns))
    issued = 0
    deadline = time.perf_counter() + duration

    async def worker(conn: http1.Conn) -> None:
        nonlocal issued
        while time.perf_counter() < deadline and (not max_requests or issued < max_requests):
            issued += 1
            t0 = time.perf_counter_ns()
            try:
                reply = await asyncio.wait_for(conn.request(raw), timeout=30)
            except http1.TRANSPORT_ERRORS as exc:
                result.errors[type(exc).__name__] += 1
                conn.close()
                continue
            status, body = reply.status, reply.body
            result.latencies_ns.append(time.perf_counter_ns() - t0)
            result.statuses[str(status)] += 1
            if status != 200 and not result.first_failure:
                result.first_failure = f"{status} {body[:300].decode(errors='replace')}"
            if engine_field and status == 200:
                reply = json.loads(body)
                camel = "".join(
                    w.title() if i else w for i, w in enumerate(engine_field.split("_"))
                )
                result.engine_ms.append(float(reply.get(engine_field, reply.get(camel, 0.0))))

    t_start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    result.total_s = time.perf_counter() - t_start
    for c in conns:
        c.close()
    return result


@contextmanager
def running_peer(stack: Any, token: str, lattice_id: str) -> Iterator[str]:
    """The FastAPI peer (loadtest/peer.py) as a process of its own on a free port, against the
    stack's PostgreSQL (as the application role), Redis and keys; its URL once it answers the
    GET it will be driven with."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DATABASE_URL": stack.env["DATABASE_URL"],
        "REDIS_URL": stack.env["REDIS_URL"],
        "JWKS_URL": f"{stack.gateway_url}/.well-known/jwks.json",
    }
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "loadtest.peer", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + PEER_START_TIMEOUT_S
        with httpx.Client(base_url=url, timeout=5, trust_env=False) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the FastAPI peer exited with {process.returncode}")
                try:
                    reply = client.get(
                        f"/v1/lattices/{lattice_id}", headers={"authorization": f"Bearer {token}"}
                    )
                    if reply.status_code == 200:
                        break
                    raise RuntimeError(
                        f"the FastAPI peer answered {reply.status_code}: {reply.text}"
                    )
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the FastAPI peer did not start") from None
                    time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def register_and_login(client: httpx.Client) -> str:
    unique = uuid.uuid4().hex[:12]
    email, password = f"load-{unique}@example.com", f"load passphrase {unique} staple"
    reply = client.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "tenant_name": f"load-{unique}"},
    )
    reply.raise_for_status()
    reply = client.post("/v1/auth/login", json={"email": email, "password": password})
    reply.raise_for_status()
    return str(reply.json()["access_token"])


def path_query(size: int) -> str:
    n = size - 1
    return f"start=0&start=0&start=0&end={n}&end={n}&end={n}"  # opposite corners


def create_path_lattice(client: httpx.Client, token: str, size: int) -> tuple[str, int]:
    """A size^3 lattice, 20% blocked, whose opposite corners are open and connected, and the
    seed of its fill: seeds are tried in order (at most 10) and a probe FindPath must answer
    200."""
    auth = {"authorization": f"Bearer {token}"}
    for seed in range(1, 11):
        lattice_id = create_lattice(client, token, size, 0.2, seed=seed)
        reply = client.get(f"/v1/lattices/{lattice_id}/path?{path_query(size)}", headers=auth)
        if reply.status_code == 200:
            return lattice_id, seed
        client.delete(f"/v1/lattices/{lattice_id}", headers=auth)
    raise RuntimeError(f"no seed in 1..10 gave a connected corner-to-corner path: {reply.text}")


def create_lattice(
    client: httpx.Client, token: str, size: int, blocked: float, seed: int = 7
) -> str:
    reply = client.post(
        "/v1/lattices",
        headers={"authorization": f"Bearer {token}"},
        json={
            "name": f"load-{size}",
            "dimensions": 3,
            "size": size,
            "random": {"seed": seed, "low": 1.0, "high": 2.0, "blocked_fraction": blocked},
        },
        timeout=120,
    )
    if reply.status_code != 200:
        raise RuntimeError(f"CreateLattice {reply.status_code}: {reply.text}")
    return str(reply.json()["id"])


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def print_table(results: list[Result], ceiling: Result | None) -> None:
    ceiling_at = ceiling_rps(ceiling) if ceiling else None
    print(f"{'scenario':<34} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'ceiling':>8}")
    for r in results:
        share = f"{r.rps / ceiling_at:.0%}" if ceiling_at else "-"
        if r is ceiling and ceiling_at is None:
            share = "invalid"
        print(
            f"{r.name:<34} {r.rps:>9.0f} {ms(r.percentile_ns(50)):>8} "
            f"{ms(r.percentile_ns(99)):>8} {r.error_count:>7} {share:>8}"
        )


def ceiling_verdict(get: Result, ceiling: Result) -> tuple[str, bool, str]:
    """The "share of the ceiling" check; a ceiling run with errors is no ceiling, so the share
    is not judged (FAIL, saying why) rather than computed against a rate that was refused."""
    ceiling_at = ceiling_rps(ceiling)
    if ceiling_at is None:
        return (
            f"share of ceiling >= {TARGET_CEILING_SHARE:.0%}",
            False,
            f"the ceiling run is invalid: {ceiling.error_count} of {ceiling.count} requests "
            f"failed ({dict(ceiling.statuses)}, {dict(ceiling.errors)}); a run with errors is "
            "never a ceiling",
        )
    share = get.rps / ceiling_at
    return (
        f"{share:.0%} of ceiling >= {TARGET_CEILING_SHARE:.0%}",
        share >= TARGET_CEILING_SHARE,
        f"short by {TARGET_CEILING_SHARE - share:.0%} points",
    )


def peer_verdicts(get: Result, peer: Result) -> list[tuple[str, bool, str]]:
    """Ours against the FastAPI peer: throughput ratio, and p99 ratio (lower is better)."""
    if not peer.rps or peer.error_count:
        why = f"the peer's run is invalid: {peer.error_count} of {peer.count} requests failed"
        return [(f"rps >= {TARGET_PEER_RATIO:.1f}x the FastAPI peer's", False, why)]
    ratio = get.rps / peer.rps
    p99_ratio = get.percentile_ns(99) / max(1, peer.percentile_ns(99))
    return [
        (
            f"rps {ratio:.2f}x the FastAPI peer's >= {TARGET_PEER_RATIO:.1f}x",
            ratio >= TARGET_PEER_RATIO,
            f"short by {TARGET_PEER_RATIO - ratio:.2f}x",
        ),
        (
            f"p99 {p99_ratio:.2f}x the FastAPI peer's <= {TARGET_PEER_P99_RATIO:.1f}x",
            p99_ratio <= TARGET_PEER_P99_RATIO,
            f"over by {p99_ratio - TARGET_PEER_P99_RATIO:.2f}x",
        ),
    ]


def path_overhead_ms(path: Result) -> float:
    """End-to-end p50 minus the engine's own p50 (its `elapsed_ms`)."""
    engine = sorted(path.engine_ms)
    return path.percentile_ns(50) / 1e6 - engine[len(engine) // 2]


def path_cpu_outside_engine_ms(row: dict[str, float]) -> float:
    """CPU a path request cost every process but the engine's workers, the load generator and
    the FastAPI peer (idle by then, but running)."""
    return sum(ms for kind, ms in row.items() if kind not in ("client", "compute", "peer"))


def path_verdicts(path: Result, cpu_row: dict[str, float] | None) -> list[tuple[str, bool, str]]:
    overhead = path_overhead_ms(path)
    checks = [
        (
            f"path p50 overhead {overhead:.2f} ms <= {TARGET_PATH_OVERHEAD_MS:g} ms",
            overhead <= TARGET_PATH_OVERHEAD_MS,
            f"over by {overhead - TARGET_PATH_OVERHEAD_MS:.2f} ms",
        )
    ]
    if cpu_row:
        webhook = cpu_row.get("webhook", 0.0)
        checks.append(
            (
                f"webhook CPU per unsubscribed path event {webhook:.3f} ms"
                f" <= {TARGET_UNSUBSCRIBED_EVENT_MS:g} ms",
                webhook <= TARGET_UNSUBSCRIBED_EVENT_MS,
                f"over by {webhook - TARGET_UNSUBSCRIBED_EVENT_MS:.3f} ms",
            )
        )
        outside = path_cpu_outside_engine_ms(cpu_row)
        checks.append(
            (
                f"path CPU outside the engine {outside:.2f} ms <= {TARGET_PATH_CPU_MS:g} ms",
                outside <= TARGET_PATH_CPU_MS,
                f"over by {outside - TARGET_PATH_CPU_MS:.2f} ms",
            )
        )
    return checks


def scipy_field_query_ms(size: int, seed: int) -> float:
    """scipy's Dijkstra from corner to corner on the path lattice (the same fill as the
    service's), median wall ms; the graph is built once, outside the timing (bench/methods.py).
    """
    from bench.lattice import make_lattice
    from bench.methods import METHODS

    lattice = make_lattice(3, size, pairs=0, seed=seed)
    method = METHODS["field/scipy"]
    graph = method.build(lattice) if method.build is not None else None
    last = lattice.grid.vertex_count - 1
    times = []
    for _ in range(SCIPY_REPEATS):
        started = time.perf_counter()
        method.query(graph, lattice, 0, last)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def scipy_verdict(field_path: Result, scipy_ms: float) -> tuple[str, bool, str]:
    ratio = field_path.percentile_ns(50) / 1e6 / scipy_ms
    return (
        f"FIELD path p50 {ratio:.2f}x scipy's Dijkstra query ({scipy_ms:.1f} ms)"
        f" <= {TARGET_SCIPY_RATIO:g}x",
        ratio <= TARGET_SCIPY_RATIO,
        f"over by {ratio - TARGET_SCIPY_RATIO:.2f}x",
    )


def verdicts(
    get: Result,
    ceiling: Result,
    path: Result | None,
    peer: Result | None = None,
    path_cpu: dict[str, float] | None = None,
    field_path: Result | None = None,
    scipy_ms: float | None = None,
) -> list[str]:
    out = []
    checks = [
        (f"errors {get.error_count} == 0", get.error_count == 0, f"{get.error_count} errors"),
        ceiling_verdict(get, ceiling),
    ]
    if peer is not None:
        checks += peer_verdicts(get, peer)
    if path is not None and path.engine_ms:
        checks += path_verdicts(path, path_cpu)
    if field_path is not None and field_path.count and scipy_ms:
        checks.append(scipy_verdict(field_path, scipy_ms))
    for text, ok, miss in checks:
        out.append(f"{text}: PASS" if ok else f"{text}: FAIL ({miss})")
    return out


def outside_share(r: Result) -> float:
    wall_ms = sum(r.latencies_ns) / 1e6
    return 1 - sum(r.engine_ms) / wall_ms if wall_ms else 0.0


async def measured(cpu_rows: dict[str, dict[str, float]], scenario: Awaitable[Result]) -> Result:
    """Runs a scenario and records its CPU time per request by process kind."""
    before = cpu.snapshot()
    result = await scenario
    cpu_rows[result.name] = cpu.per_request_ms(before, cpu.snapshot(), result.count)
    return result


PEER_SCENARIO = "peer FastAPI GET /v1/lattices/{id}"
# Requests per step of the serial floor (one connection, back to back).
FLOOR_REQUESTS = 500


async def serial_floor(
    url: str, token: str, lattice_id: str, size: int, requests: int = FLOOR_REQUESTS
) -> list[str]:
    """What one request costs on this machine before any of our work, one connection, p50:
    Envoy answering alone (/healthz), a no-op RPC through Envoy (the JWKS), the GET, and a path
    corner to corner on the small `size`^3 lattice `lattice_id` (the engine's part all but
    nothing: its overhead is a path's fixed cost). The path target's 1.5 ms sits above these;
    where the no-op round trip alone comes near it, the machine's wake-ups rather than the
    mesh's work decide that verdict (docs/performance.md). A step with failures says so."""
    query = path_query(size)
    steps = (
        ("Envoy alone (/healthz)", "/healthz", None, None),
        ("a no-op RPC through Envoy (JWKS)", "/.well-known/jwks.json", None, None),
        ("the authenticated GET", f"/v1/lattices/{lattice_id}", token, None),
        (f"a path on {size}^3", f"/v1/lattices/{lattice_id}/path?{query}", token, "elapsed_ms"),
    )
    parts = []
    for label, path, auth, engine_field in steps:
        r = await drive(label, url, path, auth, 1, 30.0, engine_field, requests)
        text = f"{label} {ms(r.percentile_ns(50))} ms"
        if r.engine_ms:
            engine = sorted(r.engine_ms)[len(r.engine_ms) // 2]
            text += f" (engine {engine:.2f} ms, overhead {path_overhead_ms(r):.2f} ms)"
        if r.error_count:
            failure = r.first_failure or dict(r.errors)
            text += f" [{r.error_count} of {r.count} failed: {failure}]"
        parts.append(text)
    return parts


async def run_all(
    args: argparse.Namespace,
    url: str,
    token: str,
    ids: dict[str, str],
    cpu_rows: dict[str, Any],
    peer_url: str = "",
    floor: list[str] | None = None,
) -> list[Result]:
    """The scenarios' results; with `floor`, the serial floor's lines are put in it."""
    results = []
    # Warm-up: connections, Envoy's JWT cache, the services' plan cache.
    await drive("warmup", url, f"/v1/lattices/{ids['get']}", token, args.connections, 1.0)
    results.append(
        await measured(
            cpu_rows,
            drive(
                "rest GET /v1/lattices/{id}",
                url,
                f"/v1/lattices/{ids['get']}",
                token,
                args.connections,
                args.duration,
            ),
        )
    )
    results.append(
        await measured(
            cpu_rows,
            drive(
                "ceiling GET /.well-known/jwks.json",
                url,
                "/.well-known/jwks.json",
                None,
                args.connections,
                args.duration,
            ),
        )
    )
    if peer_url:
        path = f"/v1/lattices/{ids['get']}"
        await drive("peer-warmup", peer_url, path, token, args.connections, 1.0)
        results.append(
            await measured(
                cpu_rows,
                drive(PEER_SCENARIO, peer_url, path, token, args.connections, args.duration),
            )
        )
    if ids.get("path"):
        q = path_query(args.path_size)
        # The judged scenario (AUTO, UNIT: what a tenant gets by default), then FIELD cost with
        # Dijkstra: the same fixed overhead around a search that takes longer.
        for name, extra in (
            (f"path {args.path_size}^3 20% blocked", ""),
            (f"path-field {args.path_size}^3 DIJKSTRA FIELD", "&algorithm=DIJKSTRA&cost=FIELD"),
        ):
            results.append(
                await measured(
                    cpu_rows,
                    drive(
                        name,
                        url,
                        f"/v1/lattices/{ids['path']}/path?{q}{extra}",
                        token,
                        args.path_connections,
                        args.path_duration,
                        engine_field="elapsed_ms",
                        max_requests=args.path_requests,
                    ),
                )
            )
    if floor is not None:
        floor += await serial_floor(url, token, ids["get"], FLOOR_LATTICE_SIZE)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest rest", description=__doc__)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--out", type=Path, default=Path("loadtest-reports"))
    parser.add_argument("--no-path", action="store_true", help="skip the FindPath scenario")
    parser.add_argument("--path-size", type=int, default=100)
    parser.add_argument("--path-connections", type=int, default=1)
    parser.add_argument("--path-duration", type=float, default=15.0)
    parser.add_argument("--path-requests", type=int, default=1000)
    parser.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the FastAPI peer (loadtest/peer.py; needs the bench extra: make bench)",
    )
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="load pg_stat_statements and print the services' query times over the scenarios",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 1024 or not 0 < args.duration <= 300:
        parser.error("bounded: 1..1024 connections, 0..300 s")

    args.out.mkdir(parents=True, exist_ok=True)
    log = (lambda line: None) if os.environ.get("LOADTEST_QUIET") else print
    settings = pgstats.SETTINGS if args.pg_stats else None
    with private_stack(STACK_ENV, log, postgres_settings=settings) as stack:
        url = stack.gateway_url
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as client:
            token = register_and_login(client)
            ids = {"get": create_lattice(client, token, FLOOR_LATTICE_SIZE, 0.0)}
            path_seed = 0
            if not args.no_path:
                ids["path"], path_seed = create_path_lattice(client, token, args.path_size)
        if args.pg_stats:
            # After the set-up: the figures are those of the measured scenarios.
            pgstats.enable(stack.database_admin_url)
            pgstats.reset(stack.database_admin_url)
        cpu_rows: dict[str, dict[str, float]] = {}
        with contextlib.ExitStack() as resources:
            peer_url = (
                ""
                if args.no_peer
                else resources.enter_context(running_peer(stack, token, ids["get"]))
            )
            floor: list[str] = []
            results = asyncio.run(run_all(args, url, token, ids, cpu_rows, peer_url, floor))
        statements = pgstats.read(stack.database_admin_url) if args.pg_stats else []
    get, ceiling = results[0], results[1]
    peer = next((r for r in results if r.name == PEER_SCENARIO), None)
    paths = [r for r in results[2:] if r is not peer]
    path = paths[0] if paths else None
    for r in results:
        slug = r.name.split()[0]
        (args.out / f"{slug}.json").write_text(json.dumps(r.ghz(), indent=2) + "\n")
    print(f"\nmachine: {machine()}; load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{args.connections} connections, {args.duration:g} s each; path: ", end="")
    print(f"{args.path_connections} connection(s), at most {args.path_requests} requests")
    print_table(results, ceiling)
    cpu_lines = cpu.format_table(cpu_rows)
    if cpu_lines:
        print()
        print("\n".join(cpu_lines))
    for r in results:
        if r.first_failure:
            print(f"{r.name}: first failure: {r.first_failure}")
    for r in paths:
        if not r.engine_ms:
            continue
        engine = sorted(r.engine_ms)
        print(
            f"\n{r.name.split()[0]}: {r.count} requests, end-to-end p50 "
            f"{ms(r.percentile_ns(50))} ms, p99 {ms(r.percentile_ns(99))} ms; engine elapsed_ms "
            f"p50 {engine[len(engine) // 2]:.2f} ms; overhead {path_overhead_ms(r):.2f} ms"
            f" ({outside_share(r):.1%} of the wall time outside the engine)"
        )
    if statements:
        print("\nPostgreSQL, the services' statements over the scenarios (pg_stat_statements):")
        print("\n".join(pgstats.format_table(statements)))
        print(
            f"all {sum(s.calls for s in statements)} statement calls: p95 <="
            f" {pgstats.overall_p95_bound_ms(statements):.3f} ms (bound, pgstats.py)"
        )
        worst = pgstats.worst(statements)
        if worst is not None:
            print(
                f"highest p95 bound (statements called >= 20 times): {worst.p95_bound_ms:.3f} ms"
                f" (mean {worst.mean_ms:.3f}, max {worst.max_ms:.3f}): {worst.short_query(70)}"
            )
    if floor:
        print("\nserial floor, one connection, p50: " + "; ".join(floor))
    print()
    path_cpu = cpu_rows.get(path.name) if path is not None else None
    field_path = paths[1] if len(paths) > 1 else None
    scipy_ms = scipy_field_query_ms(args.path_size, path_seed) if field_path else None
    if scipy_ms is not None:
        print(f"scipy dijkstra on the same lattice, corner to corner: {scipy_ms:.1f} ms (median)")
    for line in verdicts(get, ceiling, path, peer, path_cpu, field_path, scipy_ms):
        print(line)
    print(f"\nreports: {args.out}/")
    return 0
