"""A TCP port that accepts connections and never answers: a hung Redis, as the client sees one."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def silent_server() -> Iterator[str]:
    """A redis:// URL whose server completes the TCP handshake (the kernel's backlog does) and
    then reads and answers nothing."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
