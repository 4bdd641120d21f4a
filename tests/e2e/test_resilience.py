"""A crashed service fails only its own routes at the gateway (503), and they come back."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest

from devstack import Stack
from tests.e2e.helpers import Tenant

pytestmark = pytest.mark.e2e

RECOVERY_S = 20.0


def wait_for_status(
    gateway: httpx.Client, path: str, status: int, headers: dict[str, str], within: float
) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        reply = gateway.get(path, headers=headers)
        if reply.status_code == status or time.monotonic() > deadline:
            return reply
        time.sleep(0.2)


def test_killed_lattice_is_503_for_its_routes_only_and_recovers(
    stack: Stack, gateway: httpx.Client, tenant: Tenant
) -> None:
    assert gateway.get("/v1/lattices", headers=tenant.headers).status_code == 200

    stack.kill_service("lattice")
    try:
        reply = wait_for_status(gateway, "/v1/lattices", 503, tenant.headers, within=10)
        assert reply.status_code == 503, reply.text
        assert reply.json()["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
        # The other services are untouched.
        assert gateway.get("/v1/users/me", headers=tenant.headers).status_code == 200
        assert gateway.get("/v1/webhooks", headers=tenant.headers).status_code == 200
    finally:
        stack.start_service("lattice")

    started = time.monotonic()
    reply = wait_for_status(gateway, "/v1/lattices", 200, tenant.headers, within=RECOVERY_S)
    assert reply.status_code == 200, f"not recovered after {RECOVERY_S} s: {reply.text}"
    assert time.monotonic() - started <= RECOVERY_S
    # Leave the shared stack as we found it: the gateway sees every backend healthy again.
    assert wait_for_status(gateway, "/healthz", 200, {}, within=RECOVERY_S).status_code == 200
