"""The one gRPC server factory: interceptors, health, reflection, binding and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.build_info import record_build_info
from services.common.config import ConfigError, ServiceConfig
from services.common.errors import DependencyUnavailableError
from services.common.interceptors import RpcInterceptor, default_interceptors

logger = logging.getLogger("catalytic.server")

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@dataclass
class RunningService:
    """A started server with the health servicer that reports on it and what it must close."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    resources: contextlib.AsyncExitStack
    stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    _stop_task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def _set_all(self, status: int) -> None:
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def set_serving(self) -> None:
        """Tells load balancers and probes that every service is ready for traffic."""
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)

    async def set_not_serving(self) -> None:
        """Takes every service out of rotation (e.g. while a dependency is down)."""
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING for good, let in-flight RPCs finish for `grace` s, then close resources.

        Safe to call more than once: later calls wait for the first one to finish.
        """
        self.stopping.set()
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(grace))
        # Shielded: a cancelled caller must not leave the server half stopped.
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        try:
            await self.server.stop(grace)
        finally:
            # Closed only now: in-flight RPCs may still use the database during the grace.
            await self.resources.aclose()


def _server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # The gateway caps request headers at 8 KiB and adds ~1 KiB of its own: gRPC's default
        # 8 KiB metadata limit would reject some of those at random with RESOURCE_EXHAUSTED.
        ("grpc.max_metadata_size", 64 * 1024),
        ("grpc.absolute_max_metadata_size", 64 * 1024),
        # Two processes must never share a port silently: a second start fails loudly instead.
        ("grpc.so_reuseport", 0),
        # Find dead peers behind NATs and idle load balancers.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Accept the client keepalive pings our channels send (every 30 s, even when idle)
        # instead of answering them with GOAWAY "too_many_pings".
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def build_server(
    config: ServiceConfig,
    *,
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    resources: contextlib.AsyncExitStack | None = None,
    auth_interceptor: RpcInterceptor | None = None,
    permission_interceptor: RpcInterceptor | None = None,
    rate_limit_interceptor: RpcInterceptor | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> RunningService:
    """Builds, binds and starts the server; health stays NOT_SERVING until set_serving().

    `register` adds the service's servicers; `service_names` are their full names
    (e.g. "catalytic.auth.v1.AuthService"), reported by health and reflection. The process's
    catalytic_build_info is set for the service here.

    A server with an `auth_interceptor` must have a `permission_interceptor` too: who may call
    what is checked by every service (services/common/permissions.py).
    """
    if auth_interceptor is not None and permission_interceptor is None:
        raise ValueError("an authenticating server needs a permission interceptor")
    stack = resources if resources is not None else contextlib.AsyncExitStack()
    # Off the loop: the first call may ask git (once per process).
    await asyncio.to_thread(record_build_info, config.service_name, config.git_sha)
    server = grpc.aio.server(
        interceptors=default_interceptors(
            config.service_name,
            auth=auth_interceptor,
            permissions=permission_interceptor,
            rate_limit=rate_limit_interceptor,
        ),
        options=_server_options(max_message_bytes),
    )
    register(server)

    health_servicer = health.aio.HealthServicer()
    names = tuple(service_names)
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )

    address = _address(config.bind_host, config.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot bind gRPC server to {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC server to {address}")
    await server.start()
    logger.info(
        "%s gRPC server listening on %s", config.service_name, _address(config.bind_host, port)
    )
    return RunningService(
        server=server, port=port, health=health_servicer, service_names=names, resources=stack
    )


async def serve_until_signal(running: RunningService, grace: float) -> None:
    """Serves until SIGTERM/SIGINT (or until something else calls stop), then stops gracefully."""
    # What start-up built (modules, protobuf descriptors, numpy, the servers) lives until exit:
    # out of the collector's sight, a full collection no longer walks it all while every RPC in
    # flight waits (it was in the GET's p99).
    gc.freeze()
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop_requested.set)
    # Waiting on events, not on server.wait_for_termination(): cancelling a task that awaits
    # grpc's termination future would cancel that future and break the later stop().
    signal_wait = asyncio.create_task(stop_requested.wait())
    stop_wait = asyncio.create_task(running.stopping.wait())
    try:
        await asyncio.wait({signal_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for task in (signal_wait, stop_wait):
            task.cancel()
        await asyncio.gather(signal_wait, stop_wait, return_exceptions=True)
    if stop_requested.is_set():
        logger.info("shutdown signal received; stopping with %.1f s grace", grace)
    await running.stop(grace)
    logger.info("server stopped")


def event_loop_factory(env: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop, unless EVENT_LOOP=asyncio asks for the standard one (e.g. to debug)."""
    choice = env.get("EVENT_LOOP", "uvloop").strip().lower() or "uvloop"
    if choice == "asyncio":
        return asyncio.new_event_loop
    if choice != "uvloop":
        raise ConfigError(f"EVENT_LOOP={choice!r}: expected uvloop or asyncio")
    return uvloop.new_event_loop


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs an entry point's async main to completion; the `__main__` modules call this."""
    # A second Ctrl-C while the graceful stop runs ends the process without a traceback.
    try:
        with (
            contextlib.suppress(KeyboardInterrupt),
            asyncio.Runner(loop_factory=event_loop_factory(os.environ)) as runner,
        ):
            runner.run(main())
    except (ConfigError, DependencyUnavailableError) as exc:
        # An operator's mistake or a missing dependency: one clear line, no traceback.
        print(f"cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
