"""A real in-process grpc.aio server built by the shared factory, with a generic test service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from services.common import context as rpc_context
from services.common import errors
from services.common.config import ServiceConfig
from services.common.server import RunningService, build_server

SERVICE = "test.Echo"
SERVICE_NAME = "echotest"

FAILURES: dict[str, Callable[[], errors.DomainError]] = {
    "invalid": lambda: errors.InvalidArgument.of(
        [("name", "must not be empty"), ("size", "must be at most 100")]
    ),
    "not_found": lambda: errors.NotFound("no such lattice"),
    "exists": lambda: errors.AlreadyExists("email taken"),
    "denied": lambda: errors.PermissionDenied("owners only"),
    "unauthenticated": lambda: errors.Unauthenticated("token expired"),
    "precondition": lambda: errors.FailedPrecondition("webhook disabled"),
    "aborted": lambda: errors.Aborted("version moved on"),
    "exhausted": lambda: errors.ResourceExhausted("slow down", retry_after_s=2.5),
    "unavailable": lambda: errors.Unavailable("database down"),
    "deadline": lambda: errors.DeadlineExceeded("took too long"),
    "unimplemented": lambda: errors.Unimplemented("not yet"),
}


async def _ok(request: bytes, context: Any) -> bytes:
    return request


async def _fail(request: bytes, context: Any) -> bytes:
    raise FAILURES[request.decode()]()


async def _boom(request: bytes, context: Any) -> bytes:
    raise RuntimeError("secret detail")


async def _whoami(request: bytes, context: Any) -> bytes:
    return f"{rpc_context.request_id.get()} {rpc_context.rpc_method.get()}".encode()


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(3):
        yield b"%d" % i
    if request == b"fail":
        raise errors.NotFound("gone mid-stream")


async def _write_stream(request: bytes, context: Any) -> None:
    for i in range(2):
        await context.write(b"w%d" % i)


async def _slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(float(request.decode()))
    return b"done"


def register_echo(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Ok": grpc.unary_unary_rpc_method_handler(_ok),
                    "Fail": grpc.unary_unary_rpc_method_handler(_fail),
                    "Boom": grpc.unary_unary_rpc_method_handler(_boom),
                    "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami),
                    "Stream": grpc.unary_stream_rpc_method_handler(_stream),
                    "WriteStream": grpc.unary_stream_rpc_method_handler(_write_stream),
                    "Slow": grpc.unary_unary_rpc_method_handler(_slow),
                },
            )
        ]
    )


def make_config() -> ServiceConfig:
    return ServiceConfig(
        service_name=SERVICE_NAME,
        grpc_port=0,
        metrics_port=0,
        database_url="postgresql://app:pw@127.0.0.1:1/unused",
        redis_url="redis://127.0.0.1:1/0",
    )


@pytest.fixture
async def running() -> AsyncIterator[RunningService]:
    service = await build_server(make_config(), service_names=[SERVICE], register=register_echo)
    await service.set_serving()
    try:
        yield service
    finally:
        await service.stop(0)


@pytest.fixture
async def channel(running: RunningService) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as chan:
        yield chan


async def eventually(check: Callable[[], bool], within_s: float = 2.0) -> None:
    """Server-side bookkeeping after an abort may finish just after the client has its status."""
    for _ in range(int(within_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    assert check()
