"""The access log: one structured line per RPC with its method, status, duration and peer."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.common.interceptors.base import Context, RpcInterceptor, status_code_name

logger = logging.getLogger("catalytic.rpc.access")

_SERVER_FAULTS = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS"})
# Probes and tooling call these every few seconds; at INFO they would drown the real traffic.
_QUIET_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def access_log_level(method: str, code: str) -> int:
    """INFO for success, WARNING for the caller's or a dependency's trouble, ERROR for bugs."""
    if code in _SERVER_FAULTS:
        return logging.ERROR
    if code != "OK":
        return logging.WARNING
    return logging.DEBUG if method.startswith(_QUIET_PREFIXES) else logging.INFO


class AccessLogInterceptor(RpcInterceptor):
    """Writes the access log line when the RPC ends, however it ends."""

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = status_code_name(context, error)
            duration_ms = round((time.perf_counter() - start) * 1000, 3)
            logger.log(
                access_log_level(method, code),
                "%s %s %.1f ms",
                method,
                code,
                duration_ms,
                extra={
                    "rpc_method": method,
                    "code": code,
                    "duration_ms": duration_ms,
                    "peer": context.peer(),
                },
            )
