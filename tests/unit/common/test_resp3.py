"""The RESP3 reader of the invalidation feed, fed byte by byte and in one piece."""

from __future__ import annotations

import pytest

from services.common.resp3 import ErrorReply, Parser, ProtocolError, Push, encode

HELLO = b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*0\r\n"
INVALIDATE = b">2\r\n$10\r\ninvalidate\r\n*2\r\n$5\r\nk:one\r\n$5\r\nk:two\r\n"
FLUSH = b">2\r\n$10\r\ninvalidate\r\n_\r\n"
EXPECTED = [
    {b"server": b"redis", b"proto": 3, b"modules": []},
    "OK",
    Push("invalidate", [[b"k:one", b"k:two"]]),
    Push("invalidate", [None]),
    ErrorReply("ERR unknown"),
    "PONG",
    True,
    1.5,
    b"text",
]
STREAM = (
    HELLO
    + b"+OK\r\n"
    + INVALIDATE
    + FLUSH
    + b"-ERR unknown\r\n"
    + b"|1\r\n+key\r\n+value\r\n+PONG\r\n"  # an attribute before a reply is dropped
    + b"#t\r\n,1.5\r\n=8\r\ntxt:text\r\n"
)


def test_one_piece() -> None:
    assert Parser().feed(STREAM) == EXPECTED


def test_byte_by_byte() -> None:
    parser = Parser()
    messages: list[object] = []
    for index in range(len(STREAM)):
        messages += parser.feed(STREAM[index : index + 1])
    assert messages == EXPECTED


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Parser().feed(b"?what\r\n")


def test_encode() -> None:
    assert encode("CLIENT", b"TRACKING") == b"*2\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n"
