"""Prometheus RED metrics for every RPC: requests by final status code, latency, in flight."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Gauge, Histogram

from services.common.interceptors.base import Context, RpcInterceptor, status_code_name

REQUESTS = Counter(
    "catalytic_grpc_server_requests_total",
    "RPCs completed, by service, method and final gRPC status code.",
    ["service", "method", "code"],
)
DURATION = Histogram(
    "catalytic_grpc_server_request_duration_seconds",
    "Time from the handler's start to its last response, by service and method.",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "catalytic_grpc_server_in_flight",
    "RPCs being handled right now.",
    ["service"],
)


def short_method(method: str) -> str:
    """`/pkg.Service/Method` -> `Method`: the label stays small and readable."""
    return method.rsplit("/", 1)[-1]


class MetricsInterceptor(RpcInterceptor):
    """Counts, times and gauges every RPC under the service's short name."""

    def __init__(self, service_name: str) -> None:
        self._service = service_name

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        name = short_method(method)
        in_flight = IN_FLIGHT.labels(self._service)
        in_flight.inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            in_flight.dec()
            DURATION.labels(self._service, name).observe(time.perf_counter() - start)
            REQUESTS.labels(self._service, name, status_code_name(context, error)).inc()
