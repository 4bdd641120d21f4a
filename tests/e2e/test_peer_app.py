"""The FastAPI yardstick of `python -m loadtest rest` (loadtest/peer.py) does the same
work as the mesh's GET /v1/lattices/{id}: the same answer, the same refusals."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest

from devstack import Stack
from loadtest.rest import running_peer, serial_floor
from tests.e2e.helpers import Tenant, register_and_login

pytestmark = pytest.mark.e2e

LATTICE = {"name": "peer", "dimensions": 2, "size": 4, "constant": {"value": 1}}


@pytest.fixture
def lattice_id(gateway: httpx.Client, tenant: Tenant) -> str:
    made = gateway.post("/v1/lattices", json=LATTICE, headers=tenant.headers)
    assert made.status_code == 200, made.text
    return str(made.json()["id"])


@pytest.fixture
def peer(stack: Stack, tenant: Tenant, lattice_id: str) -> Iterator[httpx.Client]:
    with (
        running_peer(stack, tenant.access_token, lattice_id) as url,
        httpx.Client(base_url=url, timeout=10, trust_env=False) as client,
    ):
        yield client


def test_the_peer_answers_what_the_gateway_answers(
    gateway: httpx.Client, peer: httpx.Client, tenant: Tenant, lattice_id: str
) -> None:
    ours = gateway.get(f"/v1/lattices/{lattice_id}", headers=tenant.headers)
    theirs = peer.get(f"/v1/lattices/{lattice_id}", headers=tenant.headers)
    assert ours.status_code == theirs.status_code == 200
    mine, yardstick = ours.json(), theirs.json()
    for field in ("id", "name", "dimensions", "size", "vertex_count", "edge_count", "version"):
        assert str(yardstick[field]) == str(mine[field]), field


def test_the_peer_refuses_what_the_gateway_refuses(
    gateway: httpx.Client, peer: httpx.Client, tenant: Tenant, lattice_id: str
) -> None:
    other = register_and_login(gateway)
    assert peer.get(f"/v1/lattices/{lattice_id}", headers=other.headers).status_code == 404
    assert peer.get(f"/v1/lattices/{lattice_id}").status_code == 401
    assert peer.get("/v1/lattices/not-a-uuid", headers=tenant.headers).status_code == 400
    missing = "00000000-0000-4000-8000-000000000000"
    assert peer.get(f"/v1/lattices/{missing}", headers=tenant.headers).status_code == 404
    # A revoked token: the denylist is read on every request, by both.
    assert gateway.post("/v1/auth/logout", json={}, headers=tenant.headers).status_code == 200
    assert gateway.get(f"/v1/lattices/{lattice_id}", headers=tenant.headers).status_code == 401
    assert peer.get(f"/v1/lattices/{lattice_id}", headers=tenant.headers).status_code == 401


def test_the_serial_floor_times_each_step_and_says_when_one_fails(
    stack: Stack, gateway: httpx.Client, tenant: Tenant
) -> None:
    made = gateway.post(
        "/v1/lattices",
        json={"name": "floor", "dimensions": 3, "size": 4, "constant": {"value": 1}},
        headers=tenant.headers,
    )
    assert made.status_code == 200, made.text
    lattice_id = made.json()["id"]
    steps = asyncio.run(
        serial_floor(stack.gateway_url, tenant.access_token, lattice_id, 4, requests=5)
    )
    labels = (
        "Envoy alone (/healthz)",
        "a no-op RPC through Envoy (JWKS)",
        "the authenticated GET",
        "a path on 4^3",
    )
    assert len(steps) == len(labels)
    for label, step in zip(labels, steps, strict=True):
        assert re.match(re.escape(label) + r" \d+\.\d\d ms", step), step
    assert re.search(r"\(engine \d+\.\d\d ms, overhead -?\d+\.\d\d ms\)$", steps[3]), steps[3]
    assert not any("failed" in step for step in steps), steps
    # A lattice the token cannot read: the GET and the path say they failed, with the status.
    missing = "00000000-0000-4000-8000-000000000000"
    steps = asyncio.run(
        serial_floor(stack.gateway_url, tenant.access_token, missing, 4, requests=3)
    )
    assert "[3 of 3 failed: 404" in steps[2], steps[2]
    assert "[3 of 3 failed: 404" in steps[3], steps[3]
