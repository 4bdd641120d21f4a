"""One delivery attempt over HTTP: sign, POST, read a capped answer, explain any failure."""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import httpx

from services.webhook.policy import AttemptResult, parse_retry_after
from services.webhook.signing import webhook_headers
from services.webhook.ssrf import DestinationError, HostNotResolved
from services.webhook.transport import PlainHttpRefused

RESPONSE_BODY_CAP = 4096


class Sender(Protocol):
    """Makes one attempt (an HTTP client in production, a fake in domain tests)."""

    async def send(
        self, url: str, message_id: str, body: bytes, secrets: Sequence[str]
    ) -> AttemptResult:
        """POSTs `body` to `url`, signed with every secret; never raises for delivery
        failures, which come back as the result's error."""


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def explain(exc: BaseException, *, connect_timeout_s: float, timeout_s: float) -> str:
    """A short, tenant-facing reason for a failed attempt (no internals, no stack)."""
    if isinstance(exc, HostNotResolved):
        return "DNS: the host name does not resolve"
    if isinstance(exc, PlainHttpRefused):
        return f"refused: {exc} (use https)"
    if isinstance(exc, DestinationError):
        return f"refused by the SSRF guard: {exc}"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timeout: no connection within {connect_timeout_s:g} s"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return f"timeout: no complete answer within {timeout_s:g} s"
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS error: certificate verification failed ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the endpoint"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed: the endpoint could not be reached"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "protocol error: the endpoint's answer was not valid HTTP"
    if isinstance(exc, httpx.HTTPError):
        return f"request failed ({type(exc).__name__})"
    return f"request failed ({type(exc).__name__})"


def _status_error(response: httpx.Response) -> str:
    if response.is_success:
        return ""
    if response.is_redirect:
        location = response.headers.get("location", "")[:200]
        return f"HTTP {response.status_code}: redirects are not followed (location {location!r})"
    return f"HTTP {response.status_code}"


class HttpSender:
    """Sender over the guarded httpx client (services/webhook/transport.py)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        connect_timeout_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._clock = clock

    async def send(
        self, url: str, message_id: str, body: bytes, secrets: Sequence[str]
    ) -> AttemptResult:
        # The timestamp is the time of this attempt: receivers refuse old ones (replays).
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            # The answer is read raw and capped: a compressed one could inflate without limit.
            "accept-encoding": "identity",
            **webhook_headers(secrets, message_id, timestamp, body),
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                response, answer, retry_after = await self._post(url, body, headers)
        except Exception as exc:
            return AttemptResult(
                status_code=0,
                error=explain(
                    exc, connect_timeout_s=self._connect_timeout_s, timeout_s=self._timeout_s
                ),
                duration_s=time.perf_counter() - started,
            )
        return AttemptResult(
            status_code=response.status_code,
            error=_status_error(response),
            body=answer,
            retry_after_s=retry_after,
            duration_s=time.perf_counter() - started,
        )

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[httpx.Response, str, float | None]:
        async with self._client.stream("POST", url, content=body, headers=headers) as response:
            retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
            chunks: list[bytes] = []
            size = 0
            # Only the start of the answer is kept; the rest is never read (the connection is
            # closed rather than drained, so a huge or endless answer costs nothing).
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= RESPONSE_BODY_CAP:
                    break
        answer = b"".join(chunks)[:RESPONSE_BODY_CAP].decode("utf-8", errors="replace")
        # PostgreSQL text cannot hold NUL.
        return response, answer.replace("\x00", "\ufffd"), retry_after
