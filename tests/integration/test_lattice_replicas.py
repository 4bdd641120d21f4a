"""Lattice replicas are stateless: a second lattice process on the same PostgreSQL and Redis
agrees with the stack's own on everything, and concurrent transforms through both serialise.

The second replica is the production factory (`create_server`) run in this process on port 0,
with the stack's environment: its own compute pool, field cache and outbox relay.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import numpy as np
import pytest
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common.server import RunningService
from services.lattice.config import LatticeConfig
from services.lattice.engine.field import blocked_mask, checksum
from services.lattice.engine.fills import RandomFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.transforms import Flip, TransformOp, Xor, apply_transform
from services.lattice.server import create_server
from tests.e2e.helpers import register_and_login

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]
if TYPE_CHECKING:
    Stub = pb_grpc.LatticeServiceAsyncStub


@pytest.fixture
async def replica(stack: Any) -> AsyncIterator[RunningService]:
    config = LatticeConfig.from_env(
        {**stack.env, "LATTICE_PORT": "0", "COMPUTE_WORKERS": "2", "COMPUTE_MAX_QUEUE": "32"}
    )
    running = await create_server(config)
    await running.set_serving()
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def stubs(stack: Any, replica: RunningService) -> AsyncIterator[tuple[Stub, Stub]]:
    """(the stack's lattice process, the second replica)."""
    async with (
        grpc.aio.insecure_channel(stack.addr("lattice")) as first,
        grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as second,
    ):
        yield pb_grpc.LatticeServiceStub(first), pb_grpc.LatticeServiceStub(second)


@pytest.fixture
def auth(stack: Any) -> Metadata:
    with httpx.Client(base_url=stack.gateway_url, timeout=10, trust_env=False) as gateway:
        tenant = register_and_login(gateway)
    return (("authorization", f"Bearer {tenant.access_token}"),)


async def whole_field(stub: Stub, lattice_id: str, auth: Metadata) -> tuple[bytes, int]:
    reply = await stub.GetField(
        pb.GetFieldRequest(id=lattice_id, offset=0, limit=1_048_576), metadata=auth
    )
    return reply.values, reply.version


async def test_create_on_one_replica_use_on_the_other(
    stubs: tuple[Stub, Stub], auth: Metadata
) -> None:
    a, b = stubs
    fill = pb.RandomFill(seed=3, low=0.5, high=2.0, blocked_fraction=0.2)
    lattice = await a.CreateLattice(
        pb.CreateLatticeRequest(name="shared", dimensions=3, size=12, random=fill), metadata=auth
    )
    assert await b.GetLattice(pb.GetLatticeRequest(id=lattice.id), metadata=auth) == lattice
    assert await whole_field(a, lattice.id, auth) == await whole_field(b, lattice.id, auth)

    done = await b.TransformLattice(
        pb.TransformLatticeRequest(id=lattice.id, xor=pb.XorOp(key=0xDEADBEEF)), metadata=auth
    )
    seen_by_a = await a.GetLattice(pb.GetLatticeRequest(id=lattice.id), metadata=auth)
    assert (seen_by_a.version, seen_by_a.checksum) == (2, done.lattice.checksum)
    # A cached version 1 when it created the lattice; it must serve version 2 now.
    values, version = await whole_field(a, lattice.id, auth)
    assert (version, checksum(values)) == (2, done.lattice.checksum)
    await a.TransformLattice(
        pb.TransformLatticeRequest(id=lattice.id, xor=done.inverse.xor, if_version=2),
        metadata=auth,
    )

    field = np.frombuffer((await whole_field(b, lattice.id, auth))[0], "<f4")
    open_vertices = np.flatnonzero(~blocked_mask(field))
    grid = Grid(3, 12)
    start, end = grid.coordinates_of(open_vertices[0]), grid.coordinates_of(open_vertices[-1])

    async def path(stub: Stub, algorithm: int) -> tuple[object, ...]:
        request = pb.FindPathRequest(id=lattice.id, start=start, end=end, algorithm=algorithm)
        found = await stub.FindPath(request, metadata=auth)
        return (found.hops, found.cost, found.field_checksum_before, found.field_checksum_after)

    # Seed 3 leaves the first and last open vertices connected (33 hops), so every assertion
    # below runs: both replicas answer the same path over the same, untouched field.
    for algorithm in (pb.FindPathRequest.BFS, pb.FindPathRequest.CATALYTIC):
        on_a = await path(a, algorithm)
        assert on_a == await path(b, algorithm)
        assert on_a[0] == 33
        assert on_a[2:] == (lattice.checksum,) * 2
    analysis_a = await a.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice.id), metadata=auth)
    analysis_b = await b.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice.id), metadata=auth)
    assert analysis_a == analysis_b

    await b.DeleteLattice(pb.DeleteLatticeRequest(id=lattice.id), metadata=auth)
    for stub in (a, b):
        for call in (
            stub.GetLattice(pb.GetLatticeRequest(id=lattice.id), metadata=auth),
            stub.GetField(pb.GetFieldRequest(id=lattice.id), metadata=auth),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def op_request(lattice_id: str, op: TransformOp) -> pb.TransformLatticeRequest:
    if isinstance(op, Xor):
        return pb.TransformLatticeRequest(id=lattice_id, xor=pb.XorOp(key=op.key))
    assert isinstance(op, Flip)
    return pb.TransformLatticeRequest(id=lattice_id, flip=pb.FlipOp(axis=op.axis))


async def test_concurrent_transforms_through_two_replicas_serialise(
    stubs: tuple[Stub, Stub], auth: Metadata
) -> None:
    """XOR and FLIP commute (with each other and among themselves), so whatever order the
    replicas serialise them in, the result must be exactly the sequential application."""
    a, b = stubs
    grid = Grid(3, 10)
    fill = RandomFill(seed=9, low=0.0, high=10.0, blocked_fraction=0.1)
    lattice = await a.CreateLattice(
        pb.CreateLatticeRequest(
            name="contended",
            dimensions=3,
            size=10,
            random=pb.RandomFill(seed=9, low=0.0, high=10.0, blocked_fraction=0.1),
        ),
        metadata=auth,
    )
    ops: list[TransformOp] = []
    for index in range(16):
        ops.append(Xor(key=(index + 1) * 0x01010101) if index % 2 else Flip(axis=index % 3))
    replies = await asyncio.gather(
        *(
            (a if index % 2 else b).TransformLattice(op_request(lattice.id, op), metadata=auth)
            for index, op in enumerate(ops)
        )
    )
    # Every transform got its own version: 2 .. 1 + N, none lost, none repeated.
    assert sorted(reply.lattice.version for reply in replies) == list(range(2, 2 + len(ops)))

    expected = make_field(grid, fill)
    for op in ops:
        apply_transform(grid, expected, op)
    for stub in (a, b):
        now = await stub.GetLattice(pb.GetLatticeRequest(id=lattice.id), metadata=auth)
        assert now.version == 1 + len(ops)
        assert now.checksum == checksum(expected)
        values, version = await whole_field(stub, lattice.id, auth)
        assert version == 1 + len(ops)
        assert values == expected.tobytes()


async def test_rest_and_the_second_replica_agree(
    stack: Any, stubs: tuple[Stub, Stub], auth: Metadata
) -> None:
    _, b = stubs
    raw = np.arange(16, dtype="<f4")
    lattice = await b.CreateLattice(
        pb.CreateLatticeRequest(name="grpc", dimensions=2, size=4, values=raw.tobytes()),
        metadata=auth,
    )
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=10, trust_env=False
    ) as gateway:
        reply = await gateway.get(f"/v1/lattices/{lattice.id}/field", headers=dict(auth))
    assert reply.status_code == 200, reply.text
    assert base64.b64decode(reply.json()["values"]) == raw.tobytes()


async def test_each_replica_serves_the_new_version_right_after_the_other_wrote_it(
    stubs: tuple[Stub, Stub], auth: Metadata
) -> None:
    """Both replicas keep lattices' metadata in their local caches (ADR 68): after a transform
    acknowledged by one, the other's very next GetLattice has the new version; after a delete,
    NOT_FOUND. No waiting in between, many times over, in both directions."""
    a, b = stubs
    lattice = await a.CreateLattice(
        pb.CreateLatticeRequest(
            name="cached", dimensions=2, size=8, constant=pb.ConstantFill(value=1.0)
        ),
        metadata=auth,
    )
    get = pb.GetLatticeRequest(id=lattice.id)
    writing = True

    async def keep_reading(stub: Stub) -> None:
        # Reads all along, so that some fall between a write's commit and its notice.
        while writing:
            await stub.GetLattice(get, metadata=auth)

    readers = [asyncio.create_task(keep_reading(stub)) for stub in (a, b) for _ in range(2)]
    try:
        for index in range(40):
            writer, reader = (a, b) if index % 2 else (b, a)
            before = await reader.GetLattice(get, metadata=auth)
            done = await writer.TransformLattice(
                pb.TransformLatticeRequest(id=lattice.id, flip=pb.FlipOp(axis=index % 2)),
                metadata=auth,
            )
            seen = await reader.GetLattice(get, metadata=auth)
            assert seen.version == before.version + 1 == done.lattice.version
            assert seen == done.lattice
    finally:
        writing = False
        await asyncio.gather(*readers)
    await a.GetLattice(get, metadata=auth)
    await b.DeleteLattice(pb.DeleteLatticeRequest(id=lattice.id), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await a.GetLattice(get, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
