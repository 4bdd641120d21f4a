"""An httpx client whose every connection goes through the SSRF guard, after DNS, pinned.

httpcore opens connections through a network backend; ours resolves the host itself, checks
every address (services/webhook/ssrf.py) and connects to a checked address, so a name cannot
resolve to something else between the check and the connect (DNS rebinding). The URL keeps its
host name, so TLS verifies the certificate for that name (SNI) and `Host` is unchanged, and
pooled connections are keyed by name: one checked connection serves later requests to it.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Sequence

import httpcore
import httpx

from services.webhook.ssrf import DestinationError, IPNetwork, Resolver, is_allowed
from services.webhook.ssrf import resolve_destination as resolve_checked

USER_AGENT = "Catalytic-Webhooks/1.0 (+https://www.standardwebhooks.com/)"
# Far above WEBHOOK_WORKER_CONCURRENCY, which is what bounds attempts in flight; idle
# keep-alive connections to an endpoint are reused by its next deliveries for a while.
MAX_CONNECTIONS_PER_CLIENT = 1000
KEEPALIVE_S = 30.0


class PlainHttpRefused(DestinationError):
    """Plain http to a destination outside the allow list (https is required there)."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks the host, then connects to a checked address (never re-resolving).

    With `allow_listed_only` (the plain-http client) every address must be in `allowed`.
    """

    def __init__(
        self,
        resolver: Resolver,
        allowed: Sequence[IPNetwork],
        *,
        allow_listed_only: bool,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolver = resolver
        self._allowed = tuple(allowed)
        self._allow_listed_only = allow_listed_only
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, self._resolver, self._allowed)
        if self._allow_listed_only and not all(
            is_allowed(address, self._allowed) for address in addresses
        ):
            raise PlainHttpRefused("plain http is allowed only to allow-listed destinations")
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve_checked returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationError("webhooks are never sent over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that connects through a GuardedBackend."""

    def __init__(self, backend: GuardedBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx takes no network backend, so its pool is rebuilt with ours; everything else
        # (request/response mapping, exception mapping) stays httpx's own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=MAX_CONNECTIONS_PER_CLIENT,
            max_keepalive_connections=MAX_CONNECTIONS_PER_CLIENT // 4,
            keepalive_expiry=KEEPALIVE_S,
            network_backend=backend,
        )


def guarded_client(
    resolver: Resolver,
    allowed: Sequence[IPNetwork],
    *,
    connect_timeout_s: float,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """The client the worker sends with: no redirects, no proxies from the environment, https
    to any checked public address, http only to allow-listed ones."""
    context = ssl_context if ssl_context is not None else httpx.create_ssl_context()

    def transport(*, allow_listed_only: bool) -> GuardedTransport:
        backend = GuardedBackend(resolver, allowed, allow_listed_only=allow_listed_only)
        return GuardedTransport(backend, context)

    return httpx.AsyncClient(
        mounts={
            "https://": transport(allow_listed_only=False),
            "http://": transport(allow_listed_only=True),
        },
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )
