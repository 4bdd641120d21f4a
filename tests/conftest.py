"""Session-wide fixtures: the real local stack (started through devstack) and clients for it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from devstack import Stack, StackError, StackPorts
from devstack.binaries import MissingBinaryError
from devstack.services import SERVICES
from gateway.render import DEFAULT_DESCRIPTOR

# Plain asserts in the shared e2e helpers get pytest's detailed failure messages too.
pytest.register_assert_rewrite("tests.e2e.helpers")

# The browser origin the session stack's gateway allows (GATEWAY_CORS_ORIGINS).
TEST_CORS_ORIGIN = "https://app.example.test"


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The same stack as `make up`, on free ports, in a throw-away run directory, once per run.

    It always runs its own PostgreSQL (fsync off) and Redis: DATABASE_URL / REDIS_URL in the
    environment are ignored, so tests never touch a developer's data.
    """
    # Not pytest's tmp_path: that lives under a 0700 directory the unprivileged PostgreSQL user
    # could not enter when the tests run as root.
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-test-stack-"))
    run_dir.chmod(0o755)

    def progress(line: str) -> None:
        print(f"[stack] {line}", file=sys.stderr, flush=True)

    test_stack = Stack(
        run_dir=run_dir,
        ports=StackPorts.free(),
        fast_postgres=True,
        database_url=None,
        redis_url=None,
        # The descriptor set Envoy transcodes with: `make protos` output unless overridden.
        descriptor=Path(os.environ.get("GATEWAY_DESCRIPTOR") or DEFAULT_DESCRIPTOR),
        # One browser origin allowed, so CORS is exercised as a deployment configures it
        # (tests/e2e/test_gateway_hardening.py); `make up` allows none unless told to.
        cors_origins=(TEST_CORS_ORIGIN,),
        extra_env={
            "DEFAULT_PLAN": "free",
            "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
            "WEBHOOK_RETRY_SCHEDULE_S": "0,1,2,3",  # retries in seconds (tests/e2e/test_webhook*)
            # Every test reaches the gateway from this host, so all of them share one client
            # address (Envoy reports loopback callers as the host's own address) and the shared
            # stack must not run out of per-address budget. The limits themselves are tested
            # against servers of their own (tests/e2e/test_rate_limits.py).
            "RATE_LIMIT_MULTIPLIER": "100",
            # Two compute workers (one reserved for light jobs) whatever the machine, so that
            # the fair-compute test (tests/e2e/test_fair_compute.py) sees the pool it reasons
            # about: one worker a flooding tenant may hold, one left for the others.
            "COMPUTE_WORKERS": "2",
        },
        log=progress,
    )
    try:
        test_stack.start()
    except MissingBinaryError as exc:
        pytest.fail(f"{exc} (tests never skip this: run `make system-deps`)", pytrace=False)
    except StackError as exc:
        pytest.fail(f"the test stack did not start (logs in {run_dir}/logs):\n{exc}", pytrace=False)
    try:
        yield test_stack
    finally:
        test_stack.stop()
        if request.session.testsfailed or os.environ.get("KEEP_TEST_STACK"):
            print(f"[stack] logs kept in {run_dir}/logs", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client for the REST API through Envoy (never through an environment proxy)."""
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def grpc_channel(stack: Stack) -> Iterator[Callable[[str], grpc.Channel]]:
    """A factory of insecure channels: `grpc_channel("lattice")` straight to the service, or
    `grpc_channel("gateway")` through Envoy. All are closed after the test."""
    channels: list[grpc.Channel] = []

    def open_channel(target: str) -> grpc.Channel:
        if target == "gateway":
            address = stack.gateway_url.removeprefix("http://")
        elif target in SERVICES:
            address = stack.addr(target)
        else:
            raise ValueError(f"unknown target {target!r}: gateway or one of {', '.join(SERVICES)}")
        channel = grpc.insecure_channel(address)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()
