"""Just enough of Redis's RESP3 protocol for the invalidation feed (invalidation.py).

`encode` writes a command; `Parser` reads replies and push messages out of whatever bytes
the socket gave, keeping an incomplete one for the next feed. Every RESP3 type is read
(https://redis.io/docs/latest/develop/reference/protocol-spec/); attributes are dropped.

>>> parser = Parser()
>>> parser.feed(b">2\\r\\n$10\\r\\ninvalidate\\r\\n*1\\r\\n$3\\r\\nk:1\\r\\n+PO")
[Push(kind='invalidate', data=[[b'k:1']])]
>>> parser.feed(b"NG\\r\\n")
['PONG']
"""

from __future__ import annotations

from dataclasses import dataclass


class ProtocolError(Exception):
    """Bytes that are not RESP3: the connection can no longer be read and must be dropped."""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply (`-ERR ...`, `!<len>`): the command failed."""

    message: str


@dataclass(frozen=True, slots=True)
class Push:
    """An out-of-band message (`>`): `kind` is its first element, `data` the rest."""

    kind: str
    data: list[object]


def encode(*parts: str | bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Incomplete(Exception):
    """The buffer ends inside a message: wait for more bytes."""


_AGGREGATES = frozenset(b"*>~%|")


class Parser:
    """Incremental: feed() returns every message the bytes so far complete, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[object]:
        self._buffer += data
        messages: list[object] = []
        position = 0
        while position < len(self._buffer):
            try:
                message, position = self._value(position)
            except _Incomplete:
                break
            if message is not _ATTRIBUTE:
                messages.append(message)
        del self._buffer[:position]
        return messages

    def _line(self, position: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", position)
        if end < 0:
            raise _Incomplete
        return bytes(self._buffer[position:end]), end + 2

    def _value(self, position: int) -> tuple[object, int]:
        if position >= len(self._buffer):
            raise _Incomplete
        kind = self._buffer[position]
        line, position = self._line(position + 1)
        if kind in _AGGREGATES:
            return self._aggregate(kind, _number(line), position)
        if kind in (ord("$"), ord("="), ord("!")):
            return self._blob(kind, _number(line), position)
        return _simple(kind, line), position

    def _blob(self, kind: int, length: int, position: int) -> tuple[object, int]:
        if length < 0:  # RESP2's null bulk string
            return None, position
        end = position + length
        if end + 2 > len(self._buffer):
            raise _Incomplete
        raw = bytes(self._buffer[position:end])
        if kind == ord("!"):
            return ErrorReply(raw.decode(errors="replace")), end + 2
        if kind == ord("="):  # verbatim string: "txt:" and the text
            raw = raw[4:]
        return raw, end + 2

    def _aggregate(self, kind: int, count: int, position: int) -> tuple[object, int]:
        if count < 0:  # RESP2's null array
            return None, position
        items: list[object] = []
        for _ in range(count * 2 if kind in (ord("%"), ord("|")) else count):
            item, position = self._value(position)
            items.append(item)
        if kind == ord("|"):
            return _ATTRIBUTE, position
        if kind == ord("%"):
            return dict(zip(items[::2], items[1::2], strict=True)), position
        if kind == ord(">"):
            first = items[0] if items else b""
            name = first.decode() if isinstance(first, bytes) else str(first)
            return Push(name, items[1:]), position
        return items, position


_ATTRIBUTE = object()


def _number(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not a length: {line!r}") from None


def _simple(kind: int, line: bytes) -> object:
    text = line.decode(errors="replace")
    if kind == ord("+"):
        return text
    if kind == ord("-"):
        return ErrorReply(text)
    if kind in (ord(":"), ord("(")):
        return _number(line)
    if kind == ord("_"):
        return None
    if kind == ord("#"):
        return text == "t"
    if kind == ord(","):
        return float(text)
    raise ProtocolError(f"unknown RESP type byte {kind!r}")
