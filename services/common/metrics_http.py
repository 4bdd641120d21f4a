"""The /metrics HTTP endpoint every service exposes for Prometheus."""

from __future__ import annotations

from prometheus_client import start_http_server


def start_metrics_server(host: str, port: int) -> int:
    """Serves the default registry (process and GC metrics included) on a daemon thread.

    Returns the bound port, which is a free one chosen by the OS when `port` is 0.
    """
    server, _thread = start_http_server(port, addr=host)
    bound: int = server.server_port
    return bound
