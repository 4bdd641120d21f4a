"""Compute limits of a lattice replica: a full queue refuses at once (RESOURCE_EXHAUSTED with
retry-after) instead of queueing without bound, and the caller's deadline stops a search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import psycopg
import pytest
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common.server import RunningService
from services.lattice.config import LatticeConfig
from services.lattice.server import create_server
from tests.e2e.helpers import register_and_login

if TYPE_CHECKING:
    Stub = pb_grpc.LatticeServiceAsyncStub

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def stub(stack: Any) -> AsyncIterator[Stub]:
    """A replica with one worker and room for one waiting job."""
    config = LatticeConfig.from_env(
        {
            **stack.env,
            "LATTICE_PORT": "0",
            "COMPUTE_WORKERS": "1",
            "COMPUTE_LIGHT_WORKERS": "0",
            "COMPUTE_MAX_QUEUE": "1",
        }
    )
    running: RunningService = await create_server(config)
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.LatticeServiceStub(channel)
    finally:
        await running.stop(0)


@pytest.fixture
def auth(stack: Any) -> Metadata:
    """An enterprise tenant (a million-vertex lattice is over the other plans' limits)."""
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as gateway:
        tenant = register_and_login(gateway)
    with (
        psycopg.connect(stack.env["DATABASE_ADMIN_URL"], autocommit=True) as admin,
        admin.transaction(),
    ):
        admin.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant.tenant_id,))
        admin.execute("UPDATE tenants SET plan = 'enterprise' WHERE id = %s", (tenant.tenant_id,))
    return (("authorization", f"Bearer {tenant.access_token}"),)


async def big_lattice(stub: Stub, auth: Metadata) -> str:
    lattice = await stub.CreateLattice(
        pb.CreateLatticeRequest(
            name="big",
            dimensions=3,
            size=100,
            random=pb.RandomFill(seed=1, low=1.0, high=2.0, blocked_fraction=0.0),
        ),
        metadata=auth,
        timeout=60,
    )
    return lattice.id


def corner_to_corner(lattice_id: str) -> pb.FindPathRequest:
    return pb.FindPathRequest(
        id=lattice_id,
        start=[0, 0, 0],
        end=[99, 99, 99],
        algorithm=pb.FindPathRequest.DIJKSTRA,
        cost=pb.FindPathRequest.FIELD,
    )


async def test_a_full_queue_refuses_at_once(stub: Stub, auth: Metadata) -> None:
    lattice_id = await big_lattice(stub, auth)

    async def attempt() -> tuple[grpc.StatusCode, float, str | None]:
        started = time.monotonic()
        call = stub.FindPath(corner_to_corner(lattice_id), metadata=auth, timeout=60)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            trailers = dict(error.trailing_metadata() or ())
            retry = trailers.get("retry-after")
            return error.code(), time.monotonic() - started, str(retry) if retry else None
        return grpc.StatusCode.OK, time.monotonic() - started, None

    outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
    codes = [code for code, _, _ in outcomes]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, outcomes
    assert codes.count(grpc.StatusCode.OK) >= 2  # the running job and the one that waited
    refused = [outcome for outcome in outcomes if outcome[0] != grpc.StatusCode.OK]
    assert refused, "eight searches on one worker with a queue of one must be refused"
    fastest_ok = min(elapsed for code, elapsed, _ in outcomes if code == grpc.StatusCode.OK)
    for _, elapsed, retry_after in refused:
        assert retry_after == "1"
        assert elapsed < fastest_ok  # refused without waiting for any search


async def test_the_callers_deadline_stops_the_search(stub: Stub, auth: Metadata) -> None:
    lattice_id = await big_lattice(stub, auth)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.FindPath(corner_to_corner(lattice_id), metadata=auth, timeout=0.02)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    # The worker that was killed for it has been replaced: the replica still computes.
    found = await stub.FindPath(corner_to_corner(lattice_id), metadata=auth, timeout=60)
    assert found.hops == 297
