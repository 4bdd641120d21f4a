"""Redis tells each replica which of its cached answers just went stale (ADR 68).

`InvalidationFeed` holds one connection of its own to Redis in RESP3 with broadcast client
tracking on the prefixes of its caches (`CLIENT TRACKING ON BCAST PREFIX ...`): every write to
a key under them, by any client, is pushed to it as an `invalidate` message; a FLUSHALL or
FLUSHDB as a reset. Each message drops the matching entry from the LocalCache registered for
that prefix (local_cache.py).

Why a revocation still holds at once: Redis queues the push before it answers the write that
caused it, and a cache drains the feed's socket (a non-blocking read) before every lookup. A
caller told "logged out" has therefore caused bytes that are already in this replica's socket
buffer when its next request arrives, and they are read before that request is judged.

Fail closed: the feed is live only while connected with tracking on and answering the
heartbeat PING within `stale_after_s`. When it is not, every cache is emptied, answers nothing
and keeps nothing, and callers ask Redis (and PostgreSQL) every time, as without the feed;
the feed reconnects in the background and the caches start empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

from prometheus_client import Counter, Gauge
from redis.connection import parse_url

from services.common.local_cache import LocalCache
from services.common.resp3 import ErrorReply, Parser, ProtocolError, Push, encode

logger = logging.getLogger("catalytic.invalidation")

DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_CONNECT_TIMEOUT_S = 2.0
# Reconnection back-off: from the first to the last, doubling.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
_READ_CHUNK = 65536

FEED_UP = Gauge(
    "catalytic_invalidation_feed_up",
    "1 while the service's Redis invalidation feed is live (its local caches are trusted),"
    " 0 while it is not (every lookup goes to Redis and PostgreSQL).",
    ["service"],
)
FEED_LOSSES = Counter(
    "catalytic_invalidation_feed_losses_total",
    "Times the Redis invalidation feed was lost (connection closed, protocol error, heartbeat"
    " unanswered), emptying the local caches.",
    ["service"],
)


class InvalidationFeed:
    """One Redis connection pushing invalidations to the caches made with cache()."""

    def __init__(
        self,
        url: str,
        *,
        service: str,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    ) -> None:
        self._settings: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._service = service
        self._heartbeat_s = heartbeat_s
        self._stale_after_s = 3 * heartbeat_s
        self._connect_timeout_s = connect_timeout_s
        self._caches: list[tuple[str, LocalCache[Any]]] = []
        self._sock: socket.socket | None = None
        self._parser = Parser()
        self._tracking = False
        self._last_pong = 0.0
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._went_live = asyncio.Event()
        self._up = FEED_UP.labels(service)
        self._losses = FEED_LOSSES.labels(service)
        self._up.set(0)

    def cache(
        self, name: str, prefix: str, *, max_entries: int, max_age_s: float
    ) -> LocalCache[Any]:
        """A cache whose entries are named by Redis keys under `prefix` (before start())."""
        if self._task is not None:
            raise RuntimeError("register every cache before the feed starts")
        cache: LocalCache[Any] = LocalCache(
            self, name, max_entries=max_entries, max_age_s=max_age_s
        )
        self._caches.append((prefix, cache))
        return cache

    @property
    def live(self) -> bool:
        return self._tracking and time.monotonic() - self._last_pong < self._stale_after_s

    async def start(self, *, wait_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        """Connects in the background; waits up to `wait_s` for the feed to go live (without
        it the service still serves, through Redis)."""
        if "connection_class" in self._settings and "path" not in self._settings:
            logger.warning("no invalidation feed over TLS; local caches stay off")
            return
        self._task = asyncio.create_task(self._run(), name=f"{self._service}-invalidation-feed")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._went_live.wait()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._drop()

    def drain(self) -> None:
        """Reads and applies whatever the socket holds now, without waiting."""
        sock = self._sock
        if sock is None or not self._tracking:
            return
        while True:
            try:
                data = sock.recv(_READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(f"read failed: {exc}")
                return
            if not data:
                self._fail("Redis closed the connection")
                return
            try:
                messages = self._parser.feed(data)
            except ProtocolError as exc:
                self._fail(str(exc))
                return
            for message in messages:
                self._handle(message)

    def _handle(self, message: object) -> None:
        if isinstance(message, Push):
            if message.kind == "invalidate":
                self._invalidate(message.data[0] if message.data else None)
        elif message == "PONG":
            self._last_pong = time.monotonic()
        elif isinstance(message, ErrorReply):
            self._fail(f"Redis refused the feed: {message.message}")

    def _invalidate(self, keys: object) -> None:
        if not isinstance(keys, list):
            # FLUSHALL / FLUSHDB: everything may have changed.
            self._reset_all()
            return
        for raw in keys:
            key = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            for prefix, cache in self._caches:
                if key.startswith(prefix):
                    cache.invalidate(key)

    def _reset_all(self) -> None:
        for _, cache in self._caches:
            cache.reset()

    def _fail(self, reason: str) -> None:
        if self._tracking:
            self._losses.inc()
            logger.warning("invalidation feed lost (%s); local caches off until it is back", reason)
        self._drop()
        self._lost.set()

    def _drop(self) -> None:
        was_tracking, self._tracking = self._tracking, False
        self._went_live.clear()
        self._up.set(0)
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self._parser = Parser()
        if was_tracking or sock is not None:
            self._reset_all()

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            self._lost.clear()
            try:
                await self._connect()
            except (OSError, TimeoutError, ProtocolError, ConnectionError) as exc:
                logger.debug("invalidation feed could not connect: %s", exc)
                self._drop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_FIRST_S
            await self._heartbeat()
            await asyncio.sleep(delay)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        path = self._settings.get("path")
        if path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = path
        else:
            host = self._settings.get("host", "localhost")
            port = int(self._settings.get("port", 6379))
            info = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, address = info[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self._sock = sock
        self._parser = Parser()
        async with asyncio.timeout(self._connect_timeout_s):
            await loop.sock_connect(sock, address)
            hello: list[str] = ["HELLO", "3"]
            if self._settings.get("password") is not None:
                hello += ["AUTH", self._settings.get("username") or "default"]
                hello.append(self._settings["password"])
            await self._request(sock, "HELLO", encode(*hello))
            name = f"{self._service}-invalidation"
            await self._request(sock, "CLIENT SETNAME", encode("CLIENT", "SETNAME", name))
            prefixes = [part for prefix, _ in self._caches for part in ("PREFIX", prefix)]
            tracking = encode("CLIENT", "TRACKING", "ON", "BCAST", *prefixes)
            await self._request(sock, "CLIENT TRACKING", tracking)
        # From here on the socket is read by drain(): on readiness, and before every lookup.
        self._reset_all()
        self._last_pong = time.monotonic()
        self._tracking = True
        self._up.set(1)
        self._went_live.set()
        loop.add_reader(sock.fileno(), self.drain)
        logger.info("invalidation feed live: %s", ", ".join(p for p, _ in self._caches))

    async def _request(self, sock: socket.socket, name: str, command: bytes) -> object:
        """Sends a handshake command and waits for its one reply (no push can come before
        tracking is on). Errors name the command by `name` only: HELLO carries the password."""
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, command)
        while True:
            data = await loop.sock_recv(sock, _READ_CHUNK)
            if not data:
                raise ConnectionError("Redis closed the connection during the handshake")
            messages = self._parser.feed(data)
            if messages:
                reply = messages[0]
                if isinstance(reply, ErrorReply):
                    raise ConnectionError(f"Redis refused {name}: {reply.message}")
                return reply

    async def _heartbeat(self) -> None:
        """PINGs every heartbeat; returns when the feed is lost (drain() saw it, or no PONG)."""
        ping = encode("PING")
        while self._tracking:
            sock = self._sock
            if sock is None:
                break
            try:
                sock.send(ping)
            except OSError as exc:
                self._fail(f"write failed: {exc}")
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._heartbeat_s):
                    await self._lost.wait()
            self.drain()
            if self._tracking and not self.live:
                self._fail(f"no answer to PING within {self._stale_after_s:g} s")
