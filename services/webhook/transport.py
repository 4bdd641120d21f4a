"""The worker's HTTP client: every new connection goes through the SSRF guard, after DNS, pinned.

For each new connection the client resolves the host itself, checks every address
(services/webhook/ssrf.py) and connects to a checked address, so a name cannot resolve to
something else between the check and the connect (DNS rebinding). The request keeps the host
name, so TLS verifies the certificate for that name (SNI) and `Host` is unchanged. Idle
keep-alive connections are pooled by (scheme, name, port): one checked connection serves later
requests to the same URL origin for KEEPALIVE_S.

It speaks only what an attempt needs (services/webhook/http1.py): no redirects, no proxies, no
cookies, no compression; its cost per request is a small fraction of a general-purpose client's,
which matters at hundreds of deliveries per second (ADR "Webhook delivery throughput").
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from urllib.parse import quote, urlsplit

import httpx

from services.webhook.http1 import Answer, ClosedWithoutAnswer, Connection, encode_request
from services.webhook.ssrf import DestinationError, IPNetwork, Resolver, is_allowed
from services.webhook.ssrf import resolve_destination as resolve_checked

USER_AGENT = "Catalytic-Webhooks/1.0 (+https://www.standardwebhooks.com/)"
DEFAULT_PORTS = {"http": 80, "https": 443}
# How long an idle connection is kept for the next delivery to the same origin.
KEEPALIVE_S = 30.0
# Idle connections kept per origin and in all; attempts in flight (WEBHOOK_WORKER_CONCURRENCY)
# bound the connections in use.
MAX_IDLE_PER_ORIGIN = 128
MAX_IDLE = 1000

Origin = tuple[str, str, int]
# Visible ASCII stays as it is in a request target (percent-escapes included).
_VISIBLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))


class PlainHttpRefused(DestinationError):
    """Plain http to a destination outside the allow list (https is required there)."""


class ConnectTimeout(Exception):
    """No connection (TCP and, for https, TLS) within the connect timeout."""


class ConnectFailed(Exception):
    """No checked address of the destination accepted a connection (the cause says why)."""


def _target(path: str, query: str) -> str:
    # Registration refused whitespace and control characters; anything else outside visible
    # ASCII (e.g. é) is percent-encoded, as browsers and httpx do.
    target = (path or "/") + (f"?{query}" if query else "")
    if target.isascii() and target.isprintable() and " " not in target:
        return target
    return quote(target, safe=_VISIBLE_ASCII)


def _host_header(host: str, port: int, scheme: str) -> str:
    name = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    return name if port == DEFAULT_PORTS[scheme] else f"{name}:{port}"


class GuardedClient:
    """POSTs over pooled HTTP/1.1 connections opened through the SSRF guard.

    https goes to any checked public address, plain http only to allow-listed ones.
    """

    def __init__(
        self,
        resolver: Resolver,
        allowed: Sequence[IPNetwork],
        *,
        connect_timeout_s: float,
        ssl_context: ssl.SSLContext,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._resolver = resolver
        self._allowed = tuple(allowed)
        self._connect_timeout_s = connect_timeout_s
        self._ssl_context = ssl_context
        self._keepalive_s = keepalive_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._closed = False

    async def __aenter__(self) -> GuardedClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes every idle connection; requests still running close theirs when they end."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.abort()
        self._idle.clear()
        self._idle_count = 0

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, cap: int) -> Answer:
        """POSTs `body` to `url`; the answer keeps at most `cap` bytes of its body.

        Raises DestinationError (the guard), ConnectTimeout, ConnectFailed, ssl.SSLError,
        OSError and http1.ProtocolError; the caller bounds the whole call with its timeout.
        """
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        if scheme not in DEFAULT_PORTS or not host:
            raise DestinationError("not an absolute http or https URL")
        port = parts.port or DEFAULT_PORTS[scheme]
        origin = (scheme, host, port)
        request = encode_request(
            _target(parts.path, parts.query),
            _host_header(host, port, scheme),
            {"user-agent": USER_AGENT, **headers},
            body,
        )
        connection = self._take_idle(origin)
        if connection is not None:
            try:
                return await self._exchange(origin, connection, request, cap)
            except ClosedWithoutAnswer:
                # The endpoint closed the kept-alive connection before answering (it had
                # timed it out): the request goes once more, on a new connection.
                pass
        connection = await self._connect(origin)
        return await self._exchange(origin, connection, request, cap)

    async def _exchange(
        self, origin: Origin, connection: Connection, request: bytes, cap: int
    ) -> Answer:
        try:
            answer = await connection.exchange(request, cap)
        except BaseException:
            connection.abort()
            raise
        if answer.reusable:
            self._keep(origin, connection)
        else:
            connection.abort()
        return answer

    # ------------------------------------------------------------------ the pool
    def _take_idle(self, origin: Origin) -> Connection | None:
        connections = self._idle.get(origin)
        now = time.monotonic()
        while connections:
            connection = connections.pop()  # the most recently used: the likeliest alive
            self._idle_count -= 1
            if connection.reusable and connection.idle_until > now:
                return connection
            connection.abort()
        return None

    def _keep(self, origin: Origin, connection: Connection) -> None:
        connections = self._idle.setdefault(origin, [])
        now = time.monotonic()
        # The oldest connections sit first; drop those whose time is up.
        while connections and (connections[0].idle_until <= now or not connections[0].reusable):
            connections.pop(0).abort()
            self._idle_count -= 1
        if self._closed or len(connections) >= MAX_IDLE_PER_ORIGIN or self._idle_count >= MAX_IDLE:
            connection.abort()
            return
        connection.idle_until = now + self._keepalive_s
        connections.append(connection)
        self._idle_count += 1

    # ------------------------------------------------------------------ new connections
    async def _connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        addresses = await resolve_checked(host, port, self._resolver, self._allowed)
        tls = scheme == "https"
        if not tls and not all(is_allowed(address, self._allowed) for address in addresses):
            raise PlainHttpRefused("plain http is allowed only to allow-listed destinations")
        loop = asyncio.get_running_loop()
        failure: BaseException | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    _, connection = await loop.create_connection(
                        Connection,
                        str(address),
                        port,
                        ssl=self._ssl_context if tls else None,
                        server_hostname=host if tls else None,
                    )
                return connection
            except TimeoutError:
                failure = ConnectTimeout(f"no connection within {self._connect_timeout_s:g} s")
            except ssl.SSLError:
                # The address answered; its certificate or TLS is what failed.
                raise
            except OSError as exc:
                failure = exc
        if isinstance(failure, ConnectTimeout):
            raise failure
        raise ConnectFailed("no address accepted the connection") from failure


def guarded_client(
    resolver: Resolver,
    allowed: Sequence[IPNetwork],
    *,
    connect_timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> GuardedClient:
    """The client the worker sends with; `ssl_context` replaces the default CA store (tests)."""
    context = ssl_context if ssl_context is not None else httpx.create_ssl_context()
    return GuardedClient(
        resolver, allowed, connect_timeout_s=connect_timeout_s, ssl_context=context
    )
