"""HTTP/1.1 on one connection, as much as a webhook attempt needs: a POST written whole, then
the answer's status, headers and the start of its body (RFC 9112 framing).

A connection is an asyncio Protocol with its own buffer (not a StreamReader): it knows at any
moment whether the endpoint has sent anything or closed, which decides whether an idle
keep-alive connection may carry the next request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

# The status line and headers together; larger heads are not valid answers for our purpose.
MAX_HEAD_BYTES = 64 * 1024
# What may pile up unread (a flood while we are busy); the connection is dropped past it.
MAX_BUFFERED_BYTES = 1024 * 1024
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?")
# Header names are tokens (RFC 9110 §5.6.2).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Answers that never have a body, whatever their headers say (RFC 9112 §6.3).
_NO_BODY = frozenset({204, 304})
_UNSAFE = re.compile(r"[\r\n\0]")


class ProtocolError(Exception):
    """The endpoint's answer is not valid HTTP/1.1."""


class ClosedWithoutAnswer(ConnectionError):
    """The endpoint closed the connection before the first byte of an answer."""


@dataclass(frozen=True)
class Answer:
    """What the endpoint answered."""

    status: int
    # Lower-case names; a repeated header's values joined with ", ".
    headers: dict[str, str]
    # The start of the body, at most the cap the caller gave.
    body: bytes
    # True when the whole answer was read and the connection may carry another request.
    reusable: bool


def encode_request(target: str, host: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """`POST target HTTP/1.1` with `host`, `headers` and a content-length, then `body`.

    ValueError when a part of the head would break its framing (CR, LF or NUL in it).
    """
    fields = [("host", host), *headers.items(), ("content-length", str(len(body)))]
    parts = [target, *(part for field in fields for part in field)]
    if any(_UNSAFE.search(part) for part in parts):
        raise ValueError("a request line or header contains CR, LF or NUL")
    head = "".join(f"{name}: {value}\r\n" for name, value in fields)
    return f"POST {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def parse_head(head: bytes) -> tuple[int, bool, dict[str, str]]:
    """(status, HTTP/1.1?, headers) of a status line and header block (without the blank line)."""
    lines = _LINE_END.split(head)
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("bad status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # No folded lines (RFC 9112 §5.2) and no space before the colon (§5.1).
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError("bad header line")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(match[2]), match[1] == b"1", headers


def _content_length(value: str) -> int:
    # "5, 5" (a repeated header) is one length; anything else not a single number is invalid.
    values = {item.strip() for item in value.split(",")}
    if len(values) != 1:
        raise ProtocolError("conflicting content-length")
    [text] = values
    if not text.isdigit():
        raise ProtocolError("bad content-length")
    return int(text)


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection (plain or TLS): one exchange at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        # Why the connection was lost, when it was an error (a reset, say).
        self._lost: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._busy = False
        # monotonic time after which an idle connection is not reused (set by the pool).
        self.idle_until = 0.0

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (asyncio's or uvloop's, which does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self._busy or len(self._buffer) + len(data) > MAX_BUFFERED_BYTES:
            # Bytes nobody asked for (on an idle connection), or a flood: unusable.
            self._eof = True
            self.abort()
        else:
            self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ------------------------------------------------------------------ state
    @property
    def reusable(self) -> bool:
        """Idle, open, and nothing received since the last answer."""
        return (
            not self._busy
            and not self._eof
            and not self._buffer
            and self._transport is not None
            and not self._transport.is_closing()
        )

    def abort(self) -> None:
        """Closes at once, without waiting for anything to be sent or acknowledged."""
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------------ one exchange
    async def exchange(self, request: bytes, cap: int) -> Answer:
        """Sends `request` and reads the answer, keeping at most `cap` bytes of its body.

        The connection is reusable afterwards only when the answer's end was read and the
        endpoint did not ask to close; otherwise (and on any error) the caller must abort it.
        """
        assert self._transport is not None, "exchange on a connection not made"
        assert not self._busy, "one exchange at a time"
        self._busy = True
        try:
            self._transport.write(request)
            status, keep_alive, headers = await self._read_head()
            body, complete = await self._read_body(status, headers, cap)
        finally:
            self._busy = False
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        reusable = complete and keep_alive and "close" not in tokens and not self._buffer
        return Answer(status, headers, body, reusable)

    async def _more(self) -> None:
        if self._eof:
            raise ProtocolError("the answer ended early") from self._lost
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _read_head(self) -> tuple[int, bool, dict[str, str]]:
        while True:
            while (end := _HEAD_END.search(self._buffer)) is None:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("the answer's head is too large")
                if self._eof and not self._buffer:
                    raise ClosedWithoutAnswer("closed before answering") from self._lost
                await self._more()
            head = bytes(self._buffer[: end.start()])
            del self._buffer[: end.end()]
            status, keep_alive, headers = parse_head(head)
            if status >= 200:
                return status, keep_alive, headers
            if status == 101:
                raise ProtocolError("unexpected protocol switch")
            # 1xx: an interim answer (100 Continue, 103 Early Hints); the real one follows.

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            await self._more()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("a chunk line is too long")
            await self._more()
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line.rstrip(b"\r\n")

    async def _read_body(
        self, status: int, headers: dict[str, str], cap: int
    ) -> tuple[bytes, bool]:
        """(the first `cap` bytes, whether the body's end was read)."""
        if status in _NO_BODY:
            return b"", True
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                return await self._read_chunked(cap)
            return await self._read_until_close(cap), False
        if "content-length" in headers:
            length = _content_length(headers["content-length"])
            body = await self._read_exactly(min(length, cap))
            return body, len(body) == length
        return await self._read_until_close(cap), False

    async def _read_chunked(self, cap: int) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            size_text = (await self._read_line()).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if size_text.startswith((b"-", b"+", b"0x", b"0X")):
                raise ProtocolError("bad chunk size")
            if size == 0:
                while await self._read_line():  # trailer fields, up to the blank line
                    pass
                return bytes(body), True
            if len(body) + size > cap:
                body += await self._read_exactly(cap - len(body))
                return bytes(body), False
            body += await self._read_exactly(size)
            if await self._read_line():
                raise ProtocolError("chunk data longer than its size")

    async def _read_until_close(self, cap: int) -> bytes:
        while len(self._buffer) < cap and not self._eof:
            await self._more()
        body = bytes(self._buffer[:cap])
        del self._buffer[:cap]
        return body
