"""Start-up clients fail fast and clearly, never printing passwords; /metrics serves."""

from __future__ import annotations

import contextvars
import urllib.request

import pytest

from services.common import context as rpc_context
from services.common.cache import RedisUnavailableError, open_redis
from services.common.db import DatabaseUnavailableError, open_pool
from services.common.grpc_client import outgoing_metadata
from services.common.metrics_http import start_metrics_server

# Port 1 on loopback refuses connections at once, so these fail without waiting on a network.
DEAD_POSTGRES = "postgresql://app:s3cret@127.0.0.1:1/app"
DEAD_REDIS = "redis://:s3cret@127.0.0.1:1/0"


async def test_open_pool_names_the_redacted_url() -> None:
    with pytest.raises(DatabaseUnavailableError) as caught:
        await open_pool(DEAD_POSTGRES, min_size=1, max_size=1, name="t", connect_timeout_s=0.5)
    assert "app:***@127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_open_redis_names_the_redacted_url() -> None:
    with pytest.raises(RedisUnavailableError) as caught:
        await open_redis(DEAD_REDIS, connect_timeout_s=0.5)
    assert ":***@127.0.0.1:1" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_metrics_server_serves_process_and_rpc_metrics() -> None:
    port = start_metrics_server("127.0.0.1", 0)
    assert port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert "process_cpu_seconds_total" in body
    assert "catalytic_grpc_server_in_flight" in body


def test_outgoing_metadata_forwards_request_context() -> None:
    assert outgoing_metadata() == ()

    def inside() -> tuple[tuple[str, str], ...]:
        rpc_context.request_id.set("req-9")
        rpc_context.authorization.set("Bearer abc")
        return outgoing_metadata(("x-extra", "1"))

    assert contextvars.copy_context().run(inside) == (
        ("x-request-id", "req-9"),
        ("authorization", "Bearer abc"),
        ("x-extra", "1"),
    )
