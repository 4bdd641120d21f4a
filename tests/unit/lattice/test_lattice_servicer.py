"""LatticeService over a real in-process server (the service's own factory, port 0)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.config import ServiceConfig
from services.common.server import RunningService
from services.lattice.catalog import Catalog
from services.lattice.server import start_server

from .support import OTHER_TENANT, TENANT, FakeStore, Tokens

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "keys")


@pytest.fixture
async def stub(store: FakeStore, tokens: Tokens) -> AsyncIterator[pb_grpc.LatticeServiceAsyncStub]:
    config = ServiceConfig(
        service_name="lattice",
        grpc_port=0,
        metrics_port=0,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        redis_url="redis://127.0.0.1:1/0",
    )
    running: RunningService = await start_server(config, Catalog(store), tokens.verifier())
    await running.set_serving()
    limit = 128 * 1024 * 1024
    options = [("grpc.max_send_message_length", limit), ("grpc.max_receive_message_length", limit)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) as chan:
            yield pb_grpc.LatticeServiceStub(chan)
    finally:
        await running.stop(0)


@pytest.fixture
def auth(tokens: Tokens) -> Metadata:
    return tokens.metadata(TENANT)


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


async def test_every_rpc_needs_a_token(stub: pb_grpc.LatticeServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListLattices(pb.ListLatticesRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_create_get_list_delete(
    stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata
) -> None:
    created = await stub.CreateLattice(
        pb.CreateLatticeRequest(
            name="grid", dimensions=2, size=3, constant=pb.ConstantFill(value=0.5)
        ),
        metadata=auth,
    )
    lattice = created
    assert (lattice.vertex_count, lattice.edge_count, lattice.version) == (9, 12, 1)
    assert len(lattice.checksum) == 32
    assert lattice.created_at.seconds > 0
    fetched = await stub.GetLattice(pb.GetLatticeRequest(id=lattice.id), metadata=auth)
    assert fetched == lattice
    listed = await stub.ListLattices(pb.ListLatticesRequest(), metadata=auth)
    assert [item.id for item in listed.lattices] == [lattice.id]
    assert listed.next_page_token == ""
    await stub.DeleteLattice(pb.DeleteLatticeRequest(id=lattice.id), metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetLattice(pb.GetLatticeRequest(id=lattice.id), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_values_fill(stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata) -> None:
    values = struct.pack("<4f", 1.0, -0.0, float("inf"), 2.5)
    created = await stub.CreateLattice(
        pb.CreateLatticeRequest(name="v", dimensions=2, size=2, values=values), metadata=auth
    )
    assert created.vertex_count == 4
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLattice(
            pb.CreateLatticeRequest(name="v", dimensions=2, size=2, values=values[:-1]),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["values"]


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (pb.CreateLatticeRequest(name="a", dimensions=2, size=3), ["fill"]),
        (
            pb.CreateLatticeRequest(name="", dimensions=11, size=3, constant=pb.ConstantFill()),
            ["name", "dimensions"],
        ),
        (
            pb.CreateLatticeRequest(name="a", dimensions=5, size=100, constant=pb.ConstantFill()),
            ["size", "dimensions"],
        ),
    ],
)
async def test_invalid_creates(
    stub: pb_grpc.LatticeServiceAsyncStub,
    auth: Metadata,
    request_: pb.CreateLatticeRequest,
    fields: list[str],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLattice(request_, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == fields


async def test_random_fill_is_unimplemented(
    stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata
) -> None:
    request = pb.CreateLatticeRequest(
        name="r", dimensions=2, size=3, random=pb.RandomFill(seed=1, low=0, high=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLattice(request, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_plan_limits(stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata) -> None:
    big = pb.CreateLatticeRequest(name="b", dimensions=3, size=100, constant=pb.ConstantFill())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLattice(big, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = pb.CreateLatticeRequest(name="s", dimensions=1, size=2, constant=pb.ConstantFill())
    for _ in range(5):
        await stub.CreateLattice(small, metadata=auth)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLattice(small, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_values_fill_above_32_mib_fits_the_message_limit(
    stub: pb_grpc.LatticeServiceAsyncStub, store: FakeStore, auth: Metadata
) -> None:
    store.plans[TENANT] = "enterprise"
    vertices = 55**4
    request = pb.CreateLatticeRequest(
        name="large", dimensions=4, size=55, values=bytes(4 * vertices)
    )
    assert request.ByteSize() > 32 * 1024 * 1024
    created = await stub.CreateLattice(request, metadata=auth)
    assert created.vertex_count == vertices


async def test_ids(stub: pb_grpc.LatticeServiceAsyncStub, tokens: Tokens, auth: Metadata) -> None:
    created = await stub.CreateLattice(
        pb.CreateLatticeRequest(name="a", dimensions=1, size=2, constant=pb.ConstantFill()),
        metadata=auth,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetLattice(pb.GetLatticeRequest(id="nope"), metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["id"]
    other = tokens.metadata(OTHER_TENANT)
    for call in (
        stub.GetLattice(pb.GetLatticeRequest(id=created.id), metadata=other),
        stub.DeleteLattice(pb.DeleteLatticeRequest(id=created.id), metadata=other),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_paging_errors(stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata) -> None:
    for request, field in (
        (pb.ListLatticesRequest(page_size=101), "page_size"),
        (pb.ListLatticesRequest(page_token="garbage!"), "page_token"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListLattices(request, metadata=auth)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == [field]


async def test_later_rpcs_are_unimplemented_not_internal(
    stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata
) -> None:
    calls = (
        stub.GetField(pb.GetFieldRequest(id="x"), metadata=auth),
        stub.TransformLattice(pb.TransformLatticeRequest(id="x"), metadata=auth),
        stub.FindPath(pb.FindPathRequest(id="x"), metadata=auth),
        stub.AnalyzeLattice(pb.AnalyzeLatticeRequest(id="x"), metadata=auth),
    )
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
