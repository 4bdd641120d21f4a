"""A minimal HTTP/1.1 keep-alive client over raw asyncio streams, for the load generators.

It shares the cores with the stack it measures, so it does as little as it can per request:
no pool, no redirects, no cookies, no decompression, one connection that its owner uses for one
request at a time. httpx costs several times more client CPU per request (ADR 59).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

# What a load request can fail with below HTTP: the connection refused, reset or closed early,
# a malformed answer, or no answer in time.
TRANSPORT_ERRORS = (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError)


@dataclass(frozen=True)
class Reply:
    """One response: the status, the headers (lower-case names) and the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def encode(
    method: str,
    host: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """The bytes of one request; a body gets its content-length (and JSON content-type unless
    another is given)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept: application/json"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        if not any(name.lower() == "content-type" for name in headers or {}):
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + body if body is not None else head


class Conn:
    """One HTTP/1.1 keep-alive connection; reopened on the next request after a close."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, raw: bytes) -> Reply:
        """Sends `raw` (from encode()) and reads the whole answer. Any exception leaves the
        connection in an unknown state: the caller closes it."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Reply(status, headers, body)
