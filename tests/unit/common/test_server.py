"""The server factory and interceptor chain, exercised through a real in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterable

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from services.common.server import RunningService, build_server, serve_until_signal
from services.common.status import STATUS_CODES

from .conftest import FAILURES, SERVICE, SERVICE_NAME, eventually, make_config, register_echo

EXPECTED_CODES = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "exists": grpc.StatusCode.ALREADY_EXISTS,
    "denied": grpc.StatusCode.PERMISSION_DENIED,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "aborted": grpc.StatusCode.ABORTED,
    "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "deadline": grpc.StatusCode.DEADLINE_EXCEEDED,
    "unimplemented": grpc.StatusCode.UNIMPLEMENTED,
}


def _requests(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "catalytic_grpc_server_requests_total",
        {"service": SERVICE_NAME, "method": method, "code": code},
    )
    return value or 0.0


def _call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(f"/{SERVICE}/{method}")


async def _collect(responses: AsyncIterable[bytes], into: list[bytes]) -> None:
    async for response in responses:
        into.append(response)


async def test_ok_echoes_and_returns_request_id(channel: grpc.aio.Channel) -> None:
    call = _call(channel, "Ok")(b"hello")
    assert await call == b"hello"
    metadata = dict(await call.trailing_metadata())
    assert len(metadata["x-request-id"]) == 32


async def test_caller_request_id_reaches_handler_and_comes_back(channel: grpc.aio.Channel) -> None:
    call = _call(channel, "WhoAmI")(b"", metadata=(("x-request-id", "req-123"),))
    assert await call == f"req-123 /{SERVICE}/WhoAmI".encode()
    assert dict(await call.trailing_metadata())["x-request-id"] == "req-123"


async def test_malformed_request_id_is_replaced(channel: grpc.aio.Channel) -> None:
    call = _call(channel, "WhoAmI")(b"", metadata=(("x-request-id", "bad id " + "x" * 200),))
    request_id = (await call).decode().split()[0]
    assert request_id
    assert "bad" not in request_id
    assert dict(await call.trailing_metadata())["x-request-id"] == request_id


def test_every_domain_error_class_is_in_the_table() -> None:
    assert set(STATUS_CODES) >= {type(make()) for make in FAILURES.values()}


@pytest.mark.parametrize("failure", sorted(EXPECTED_CODES))
async def test_domain_errors_map_to_status_codes(channel: grpc.aio.Channel, failure: str) -> None:
    before = _requests("Fail", EXPECTED_CODES[failure].name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Fail")(failure.encode())
    assert caught.value.code() == EXPECTED_CODES[failure]
    await eventually(lambda: _requests("Fail", EXPECTED_CODES[failure].name) == before + 1)


async def test_invalid_argument_names_every_field(channel: grpc.aio.Channel) -> None:
    call = _call(channel, "Fail")(b"invalid")
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == ["name", "size"]


async def test_resource_exhausted_says_when_to_retry(channel: grpc.aio.Channel) -> None:
    call = _call(channel, "Fail")(b"exhausted")
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    trailers = dict(await call.trailing_metadata())
    assert trailers["retry-after"] == "3"
    # The error's own trailers do not replace the request id.
    assert len(trailers["x-request-id"]) == 32
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 2500


async def test_unexpected_exception_is_internal_without_its_text(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    before = _requests("Boom", "INTERNAL")
    call = _call(channel, "Boom")(b"", metadata=(("x-request-id", "boom-1"),))
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in (caught.value.details() or "")
    assert "boom-1" in (caught.value.details() or "")
    assert dict(caught.value.trailing_metadata() or ())["x-request-id"] == "boom-1"
    await eventually(lambda: _requests("Boom", "INTERNAL") == before + 1)
    await eventually(lambda: any(r.exc_info for r in caplog.records))
    assert "secret detail" in caplog.text


async def test_access_log_line_has_code_and_duration(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="catalytic.rpc.access"):
        await _call(channel, "Ok")(b"x", metadata=(("x-request-id", "log-1"),))
        with pytest.raises(grpc.aio.AioRpcError):
            await _call(channel, "Fail")(b"not_found")
        await eventually(lambda: len(caplog.records) >= 2)
    ok, failed = (vars(record) for record in caplog.records[:2])
    assert (ok["levelno"], ok["code"], ok["rpc_method"]) == (logging.INFO, "OK", f"/{SERVICE}/Ok")
    assert ok["duration_ms"] >= 0
    assert (failed["levelno"], failed["code"]) == (logging.WARNING, "NOT_FOUND")


async def test_unary_stream_handlers_pass_through_the_chain(channel: grpc.aio.Channel) -> None:
    stream = channel.unary_stream(f"/{SERVICE}/Stream")
    assert [r async for r in stream(b"")] == [b"0", b"1", b"2"]
    call = stream(b"fail")
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _collect(call, received)
    assert received == [b"0", b"1", b"2"]
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    writer = channel.unary_stream(f"/{SERVICE}/WriteStream")
    assert [r async for r in writer(b"")] == [b"w0", b"w1"]
    await eventually(lambda: _requests("Stream", "NOT_FOUND") >= 1)


async def test_deadline_and_cancellation_are_counted_apart(channel: grpc.aio.Channel) -> None:
    before = _requests("Slow", "DEADLINE_EXCEEDED"), _requests("Slow", "CANCELLED")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Slow")(b"5", timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    call = _call(channel, "Slow")(b"5")
    await asyncio.sleep(0.2)
    call.cancel()
    await eventually(
        lambda: (
            (_requests("Slow", "DEADLINE_EXCEEDED"), _requests("Slow", "CANCELLED"))
            == (before[0] + 1, before[1] + 1)
        )
    )


async def test_unknown_method_is_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, "Nope")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_follows_serving_state(
    running: RunningService, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await running.set_not_serving()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_starts_not_serving() -> None:
    service = await build_server(make_config(), service_names=[SERVICE], register=register_echo)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
            health = health_pb2_grpc.HealthStub(chan)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await service.stop(0)


async def test_stop_turns_health_not_serving_then_closes_resources() -> None:
    resources = contextlib.AsyncExitStack()
    closed: list[str] = []

    async def close() -> None:
        closed.append("db")

    resources.push_async_callback(close)
    service = await build_server(
        make_config(), service_names=[SERVICE], register=register_echo, resources=resources
    )
    await service.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
        watch = health_pb2_grpc.HealthStub(chan).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE)
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(service.stop(1.0))
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not closed
        await stopping
    assert closed == ["db"]


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_serve_until_signal_stops_gracefully() -> None:
    resources = contextlib.AsyncExitStack()
    closed: list[bool] = []
    resources.callback(lambda: closed.append(True))
    service = await build_server(
        make_config(), service_names=[SERVICE], register=register_echo, resources=resources
    )
    await service.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as chan:
        serving = asyncio.create_task(serve_until_signal(service, grace=5.0))
        await asyncio.sleep(0)
        slow = asyncio.ensure_future(_call(chan, "Slow")(b"0.3"))
        await asyncio.sleep(0.1)
        # The handler is installed by now; SIGINT (not SIGTERM) keeps a failure survivable.
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(serving, 10)
        assert await slow == b"done"
    assert closed == [True]


async def test_port_conflict_fails_loudly(running: RunningService) -> None:
    config = make_config()
    taken = type(config)(
        service_name=config.service_name,
        grpc_port=running.port,
        metrics_port=0,
        database_url=config.database_url,
        redis_url=config.redis_url,
    )
    with pytest.raises(RuntimeError, match=str(running.port)):
        await build_server(taken, service_names=[SERVICE], register=register_echo)


def test_the_event_loop_is_uvloop_unless_asked_otherwise() -> None:
    import asyncio

    import uvloop

    from services.common.config import ConfigError
    from services.common.server import event_loop_factory

    assert event_loop_factory({}) is uvloop.new_event_loop
    assert event_loop_factory({"EVENT_LOOP": "asyncio"}) is asyncio.new_event_loop
    with pytest.raises(ConfigError, match="EVENT_LOOP"):
        event_loop_factory({"EVENT_LOOP": "trio"})


async def test_the_server_sets_its_build_info(channel: grpc.aio.Channel) -> None:
    (sample,) = (
        sample
        for family in REGISTRY.collect()
        if family.name == "catalytic_build_info"
        for sample in family.samples
        if sample.labels["service"] == SERVICE_NAME
    )
    assert sample.value == 1
    assert sample.labels["version"]
    assert sample.labels["git_sha"]
