"""One delivery attempt over HTTP: sign, POST, read a capped answer, explain any failure."""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from services.webhook.http1 import Answer, ClosedWithoutAnswer, ProtocolError
from services.webhook.policy import AttemptResult, parse_retry_after
from services.webhook.signing import webhook_headers
from services.webhook.ssrf import DestinationError, HostNotResolved
from services.webhook.transport import (
    ConnectFailed,
    ConnectTimeout,
    GuardedClient,
    PlainHttpRefused,
)

RESPONSE_BODY_CAP = 4096
# What httpx and browsers follow as redirects; they are reported, never followed.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    "content-type": "application/json",
    # The answer is read raw and capped: a compressed one could inflate without limit.
    "accept-encoding": "identity",
}


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
    if isinstance(exc, ConnectTimeout):
        return f"connect timeout: no connection within {connect_timeout_s:g} s"
    if isinstance(exc, TimeoutError):
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
    if isinstance(exc, ConnectFailed):
        return "connection failed: the endpoint could not be reached"
    if isinstance(exc, ClosedWithoutAnswer):
        return "connection closed by the endpoint without an answer"
    if isinstance(exc, ProtocolError):
        return "protocol error: the endpoint's answer was not valid HTTP"
    return f"request failed ({type(exc).__name__})"


def _status_error(answer: Answer) -> str:
    if 200 <= answer.status < 300:
        return ""
    if answer.status in REDIRECT_STATUSES and "location" in answer.headers:
        location = answer.headers["location"][:200]
        return f"HTTP {answer.status}: redirects are not followed (location {location!r})"
    return f"HTTP {answer.status}"


class HttpSender:
    """Sender over the guarded client (services/webhook/transport.py)."""

    def __init__(
        self,
        client: GuardedClient,
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
        headers = {**_HEADERS, **webhook_headers(secrets, message_id, timestamp, body)}
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                # Only the start of the answer is read; past it the connection is closed
                # rather than drained, so a huge or endless answer costs nothing.
                answer = await self._client.post(url, body, headers, cap=RESPONSE_BODY_CAP)
        except Exception as exc:
            return AttemptResult(
                status_code=0,
                error=explain(
                    exc, connect_timeout_s=self._connect_timeout_s, timeout_s=self._timeout_s
                ),
                duration_s=time.perf_counter() - started,
            )
        text = answer.body.decode("utf-8", errors="replace")
        return AttemptResult(
            status_code=answer.status,
            error=_status_error(answer),
            # PostgreSQL text cannot hold NUL.
            body=text.replace("\x00", "\ufffd"),
            retry_after_s=parse_retry_after(answer.headers.get("retry-after"), datetime.now(UTC)),
            duration_s=time.perf_counter() - started,
        )
