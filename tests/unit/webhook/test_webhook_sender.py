"""One attempt over the guarded client, against a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from services.webhook.endpoints import new_secret
from services.webhook.policy import AttemptResult
from services.webhook.sender import RESPONSE_BODY_CAP, HttpSender
from services.webhook.ssrf import IPNetwork
from services.webhook.transport import guarded_client

from .receiver import Receiver, Reply, running_receiver, self_signed
from .support import FixedResolver

LOOPBACK: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"),)
SECRET = new_secret()
BODY = b'{"type":"webhook.test","timestamp":"2026-01-01T00:00:00.000000Z","data":{}}'


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as server:
        yield server


@asynccontextmanager
async def sender(
    resolver: FixedResolver | None = None,
    allowed: Sequence[IPNetwork] = LOOPBACK,
    *,
    timeout_s: float = 5.0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[HttpSender]:
    client = guarded_client(
        resolver or FixedResolver({}),
        allowed,
        connect_timeout_s=min(timeout_s, 5.0),
        ssl_context=ssl_context,
    )
    async with client:
        yield HttpSender(client, connect_timeout_s=min(timeout_s, 5.0), timeout_s=timeout_s)


async def send(http: HttpSender, url: str) -> AttemptResult:
    return await http.send(url, "evt_1", BODY, [SECRET])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_signed_post_with_the_exact_body(receiver: Receiver) -> None:
    receiver.script("/ok", Reply(202, b"x" * (RESPONSE_BODY_CAP * 3)))
    async with sender() as http:
        result = await send(http, receiver.url("/ok"))

    assert result.succeeded
    assert (result.status_code, result.error) == (202, "")
    assert result.body == "x" * RESPONSE_BODY_CAP
    assert result.duration_s > 0
    [request] = receiver.received("/ok")
    assert request.body == BODY
    assert request.headers["webhook-id"] == "evt_1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("Catalytic-Webhooks/")
    Verifier(SECRET).verify(request.body, request.headers)


async def test_answers_that_are_failures(receiver: Receiver) -> None:
    receiver.script("/moved", Reply(302, headers={"location": "http://169.254.169.254/"}))
    receiver.script("/busy", Reply(429, b"slow down", {"retry-after": "7"}))
    receiver.script("/nul", Reply(500, b"a\x00b\xff"))
    async with sender() as http:
        moved = await send(http, receiver.url("/moved"))
        busy = await send(http, receiver.url("/busy"))
        nul = await send(http, receiver.url("/nul"))

    assert moved.status_code == 302
    assert "redirects are not followed" in moved.error
    assert len(receiver.received("/")) == 0, "the redirect was not followed"
    assert (busy.status_code, busy.error, busy.body, busy.retry_after_s) == (
        429,
        "HTTP 429",
        "slow down",
        7,
    )
    assert nul.body == "a\ufffdb\ufffd"


@pytest.mark.parametrize(
    ("allowed", "url_host", "answers", "reason"),
    [
        ((), "127.0.0.1", {}, "loopback"),
        ((), "hooks.example.test", {"hooks.example.test": ["127.0.0.1"]}, "loopback"),
        # One bad address in the answer refuses the whole name.
        (
            (),
            "mixed.example.test",
            {"mixed.example.test": ["93.184.215.14", "10.0.0.7"]},
            "private",
        ),
        ((), "[::ffff:127.0.0.1]", {}, "loopback"),
        (LOOPBACK, "public.example.test", {"public.example.test": ["93.184.215.14"]}, "https"),
    ],
)
async def test_the_guard_refuses_before_connecting(
    receiver: Receiver,
    allowed: Sequence[IPNetwork],
    url_host: str,
    answers: dict[str, list[str]],
    reason: str,
) -> None:
    async with sender(FixedResolver(answers), allowed) as http:
        result = await send(http, receiver.url("/guarded", host=url_host))

    assert result.status_code == 0
    assert result.error.startswith("refused")
    assert reason in result.error
    assert receiver.received("/guarded") == []


async def test_every_checked_address_is_tried_in_turn(receiver: Receiver) -> None:
    # Nothing listens on 127.0.0.2 at the receiver's port; 127.0.0.1 answers.
    resolver = FixedResolver({"two.example.test": ["127.0.0.2", "127.0.0.1"]})
    async with sender(resolver) as http:
        result = await send(http, receiver.url("/two", host="two.example.test"))

    assert result.succeeded, result.error
    assert receiver.received("/two")[0].headers["host"] == f"two.example.test:{receiver.port}"


async def test_network_failures_are_explained(receiver: Receiver, tmp_path: Path) -> None:
    receiver.script("/slow", Reply(200, delay_s=1.0))
    server_tls, _ = self_signed(tmp_path, ["127.0.0.1"])
    with running_receiver(server_tls) as untrusted:
        async with sender(FixedResolver({}), timeout_s=0.3) as http:
            results = await asyncio.gather(
                send(http, f"http://127.0.0.1:{closed_port()}/"),
                send(http, receiver.url("/dns", host="nowhere.example.test")),
                send(http, receiver.url("/slow")),
                send(http, untrusted.url("/tls", scheme="https")),
            )

    errors = [result.error for result in results]
    assert errors[0] == "connection refused"
    assert errors[1].startswith("DNS:")
    assert errors[2] == "timeout: no complete answer within 0.3 s"
    assert errors[3].startswith("TLS error: certificate verification failed")
    assert all(result.status_code == 0 for result in results)


async def test_tls_is_verified_for_the_name_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    server_tls, ca = self_signed(tmp_path, ["hooks.example.test"])
    trust = ssl.create_default_context(cafile=str(ca))
    resolver = FixedResolver(
        {"hooks.example.test": ["127.0.0.1"], "alias.example.test": ["127.0.0.1"]}
    )
    with running_receiver(server_tls) as tls:
        async with sender(resolver, ssl_context=trust) as http:
            good = await send(http, tls.url("/", scheme="https", host="hooks.example.test"))
            # Same address, another name: the certificate does not cover it.
            wrong = await send(http, tls.url("/", scheme="https", host="alias.example.test"))

    assert good.succeeded, good.error
    assert wrong.error.startswith("TLS error")
