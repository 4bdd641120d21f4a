"""The load generator's own cost: client CPU per request, our raw-stream client vs httpx.

`python -m loadtest clientcost [--requests N] [--connections C]`. A small asyncio HTTP/1.1
server in a child process answers every request with the same 200 JSON body (about the size of
a lattice's metadata); this process sends N GETs over C keep-alive connections with each client
in turn, on uvloop as the API suite does, and prints the CPU time this process used per request
(time.process_time). The server's CPU is not counted: what matters is what the generator takes
from the stack it shares the cores with (ADR 59).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

from loadtest import http1

_BODY = b'{"id":"6f1c","name":"load","dimensions":3,"size":20,"vertex_count":"8000","x":"%s"}' % (
    b"y" * 150
)
_ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_BODY)
    + _BODY
)


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(_ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve() -> None:
    """The server (the child process): prints its port, answers until killed."""
    server = await asyncio.start_server(_answer, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def with_http1(port: int, requests: int, connections: int) -> None:
    raw = http1.encode("GET", f"127.0.0.1:{port}", "/v1/lattices/6f1c", {"Authorization": "x"})
    left = requests

    async def worker() -> None:
        nonlocal left
        conn = http1.Conn("127.0.0.1", port)
        try:
            while left > 0:
                left -= 1
                reply = await conn.request(raw)
                reply.json()
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


async def with_httpx(port: int, requests: int, connections: int) -> None:
    left = requests
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, trust_env=False
    ) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                reply = await client.get("/v1/lattices/6f1c", headers={"authorization": "x"})
                reply.json()

        await asyncio.gather(*(worker() for _ in range(connections)))


def measure(run: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) for one run."""
    import uvloop

    cpu, wall = time.process_time(), time.perf_counter()
    uvloop.run(run())  # type: ignore[arg-type]
    return time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest clientcost", description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    server = subprocess.Popen(
        [sys.executable, "-m", "loadtest", "clientcost", "--serve"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        n, c = args.requests, args.connections
        measure(lambda: with_http1(port, 200, c))  # warm both (imports, first connections)
        measure(lambda: with_httpx(port, 200, c))
        print(f"{n} GETs over {c} keep-alive connections, client CPU per request:")
        for name, run in (
            ("loadtest/http1.py (raw asyncio streams)", lambda: with_http1(port, n, c)),
            ("httpx.AsyncClient", lambda: with_httpx(port, n, c)),
        ):
            cpu, wall = measure(run)
            print(f"  {name:<40} {cpu / n * 1000:.3f} ms  ({n / wall:,.0f} req/s)")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0
