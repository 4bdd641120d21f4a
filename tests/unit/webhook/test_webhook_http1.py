"""The attempt's HTTP/1.1: framing of answers, keep-alive reuse, stale connections, odd servers.

Each test runs a raw asyncio server on 127.0.0.1 that answers with exact bytes, so the client
sees what a misbehaving or minimal endpoint really sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from services.webhook.http1 import ProtocolError, encode_request, parse_head
from services.webhook.ssrf import IPNetwork
from services.webhook.transport import GuardedClient, guarded_client

from .support import FixedResolver

LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Server:
    """Answers each request on a connection with the next of `answers` (bytes, or None to
    close without answering); counts connections and requests."""

    answers: Callable[[int, int], bytes | None]
    # Close each connection right after its first answer.
    close_after_answer: bool = False
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            for number in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers(connection, number)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    answers: Callable[[int, int], bytes | None], *, close_after_answer: bool = False
) -> AsyncIterator[Server]:
    server = Server(answers, close_after_answer)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


@asynccontextmanager
async def client(keepalive_s: float = 30.0) -> AsyncIterator[GuardedClient]:
    async with guarded_client(FixedResolver({}), LOOPBACK, connect_timeout_s=2) as http:
        http._keepalive_s = keepalive_s
        yield http


async def post(http: GuardedClient, server: Server, cap: int = 4096) -> tuple[int, bytes, bool]:
    answer = await http.post(
        f"http://127.0.0.1:{server.port}/hook?x=1",
        b'{"a":1}',
        {"webhook-id": "evt_1"},
        cap=cap,
    )
    return answer.status, answer.body, answer.reusable


def always(answer: bytes) -> Callable[[int, int], bytes | None]:
    return lambda connection, number: answer


async def test_a_request_is_one_well_formed_write() -> None:
    async with serving(always(OK)) as server, client() as http:
        assert await post(http, server) == (200, b"ok", True)

    [request] = server.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?x=1 HTTP/1.1"
    assert f"host: 127.0.0.1:{server.port}".encode() in lines
    assert b"content-length: 7" in lines
    assert b"webhook-id: evt_1" in lines
    assert any(line.startswith(b"user-agent: Catalytic-Webhooks/") for line in lines)
    assert body == b'{"a":1}'


async def test_keep_alive_connections_are_reused() -> None:
    async with serving(always(OK)) as server, client() as http:
        for _ in range(5):
            assert (await post(http, server))[0] == 200
        assert server.connections == 1
        # Concurrent requests need connections of their own, which are then kept.
        await asyncio.gather(*(post(http, server) for _ in range(4)))
        before = server.connections
        await asyncio.gather(*(post(http, server) for _ in range(4)))
        assert server.connections == before


async def test_a_kept_connection_the_endpoint_closed_is_replaced_once() -> None:
    # The first connection answers once and then closes as the second request arrives.
    def answers(connection: int, number: int) -> bytes | None:
        return None if connection == 1 and number == 1 else OK

    async with serving(answers) as server, client() as http:
        assert (await post(http, server))[0] == 200
        assert (await post(http, server))[0] == 200
    assert server.connections == 2


async def test_a_new_connection_closed_without_answer_is_an_error() -> None:
    async with serving(lambda connection, number: None) as server, client() as http:
        with pytest.raises(ConnectionError):
            await post(http, server)
    assert server.connections == 1, "no retry on a fresh connection"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Interim answers are skipped.
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, (200, b"ok", True)),
        # Chunked, with extensions and trailers.
        (
            b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: 1\r\n\r\n",
            (202, b"abcde", True),
        ),
        # The endpoint asks to close: not reused.
        (
            b"HTTP/1.1 503 Busy\r\nconnection: close\r\nretry-after: 7\r\n"
            b"content-length: 0\r\n\r\n",
            (503, b"", False),
        ),
        # No body, whatever the headers say.
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n", (204, b"", True)),
        # Bare LF line ends and a repeated, equal content-length.
        (b"HTTP/1.1 200 OK\ncontent-length: 2\ncontent-length: 2\n\nok", (200, b"ok", True)),
        # HTTP/1.0 answers are not kept.
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", (200, b"ok", False)),
    ],
)
async def test_answer_framing(answer: bytes, expected: tuple[int, bytes, bool]) -> None:
    async with serving(always(answer)) as server, client() as http:
        assert await post(http, server) == expected


async def test_only_the_start_of_a_long_body_is_read_and_the_connection_dropped() -> None:
    long = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"".join(b"400\r\n" + b"y" * 1024 + b"\r\n" for _ in range(64))
        + b"0\r\n\r\n"
    )
    for answer, byte in ((long, b"x"), (chunked, b"y")):
        async with serving(always(answer)) as server, client() as http:
            assert await post(http, server, cap=4096) == (200, byte * 4096, False)
            assert (await post(http, server, cap=4096))[0] == 200
        assert server.connections == 2


async def test_a_body_until_close_is_read_up_to_the_cap() -> None:
    def answers(connection: int, number: int) -> bytes | None:
        return b"HTTP/1.1 200 OK\r\n\r\nuntil close"

    async with serving(answers) as server, client() as http:
        status, body, reusable = await post(http, server, cap=5)
    assert (status, body, reusable) == (200, b"until", False)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 200\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
async def test_answers_that_are_not_http_are_protocol_errors(answer: bytes) -> None:
    async with serving(always(answer)) as server, client() as http:
        with pytest.raises(ProtocolError):
            await post(http, server)


async def test_an_answer_cut_short_is_a_protocol_error() -> None:
    short = always(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
    async with serving(short, close_after_answer=True) as server, client() as http:
        with pytest.raises(ProtocolError):
            await post(http, server)


async def test_a_slow_body_is_waited_for() -> None:
    short = always(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
    async with serving(short) as server, client() as http:
        # The rest never comes: only the attempt's own timeout ends the wait.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await post(http, server)


def test_parse_head_joins_repeated_headers() -> None:
    status, keep_alive, headers = parse_head(
        b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nX-A: 1\r\nx-a: 2"
    )
    assert (status, keep_alive) == (429, True)
    assert headers == {"retry-after": "7", "x-a": "1, 2"}


@pytest.mark.parametrize(
    "headers", [{"x": "a\r\nevil: 1"}, {"x": "a\nb"}, {"x": "a\rb"}, {"x": "\0"}]
)
def test_requests_that_would_break_framing_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        encode_request("/", "h", headers, b"")


async def test_non_ascii_paths_are_percent_encoded() -> None:
    async with serving(always(OK)) as server, client() as http:
        await http.post(f"http://127.0.0.1:{server.port}/café", b"", {}, cap=10)
    assert server.requests[0].startswith(b"POST /caf%C3%A9 HTTP/1.1\r\n")
