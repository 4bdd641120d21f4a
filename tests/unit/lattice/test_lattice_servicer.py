"""LatticeService over a real in-process server (the service's own factory, port 0)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common.config import ServiceConfig
from services.common.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from services.common.server import RunningService
from services.lattice.catalog import Catalog
from services.lattice.server import start_server
from tests.support.grpc_calls import isolated_config, violations
from tests.support.identity import Tokens

from .support import OTHER_TENANT, TENANT, FakeStore, InlineCompute, domain

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def compute() -> InlineCompute:
    return InlineCompute()


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "keys")


@pytest.fixture
async def stub(
    store: FakeStore, compute: InlineCompute, tokens: Tokens
) -> AsyncIterator[pb_grpc.LatticeServiceAsyncStub]:
    config = isolated_config("lattice")
    running: RunningService = await start_server(config, domain(store, compute), tokens.verifier())
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


async def test_random_fill(stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata) -> None:
    request = pb.CreateLatticeRequest(
        name="r", dimensions=2, size=3, random=pb.RandomFill(seed=1, low=0, high=1)
    )
    created = await stub.CreateLattice(request, metadata=auth)
    again = await stub.CreateLattice(request, metadata=auth)
    assert created.checksum == again.checksum
    bad = pb.CreateLatticeRequest(
        name="r", dimensions=2, size=3, random=pb.RandomFill(seed=1, low=-1, high=1)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateLattice(bad, metadata=auth)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(caught.value) == ["random.low"]


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


async def small_lattice(stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata) -> pb.Lattice:
    values = struct.pack("<9f", *range(1, 10))
    return await stub.CreateLattice(
        pb.CreateLatticeRequest(name="g", dimensions=2, size=3, values=values), metadata=auth
    )


async def test_field_transform_path_analysis(
    stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata
) -> None:
    lattice = await small_lattice(stub, auth)
    field = await stub.GetField(pb.GetFieldRequest(id=lattice.id, offset=2, limit=3), metadata=auth)
    assert struct.unpack("<3f", field.values) == (3.0, 4.0, 5.0)
    assert (field.offset, field.count, field.version) == (2, 3, 1)

    done = await stub.TransformLattice(
        pb.TransformLatticeRequest(
            id=lattice.id, rotate=pb.RotateOp(axis_a=0, axis_b=1, quarter_turns=1)
        ),
        metadata=auth,
    )
    assert done.lattice.version == 2
    assert done.inverse == pb.TransformOp(rotate=pb.RotateOp(axis_a=0, axis_b=1, quarter_turns=3))
    assert done.device == "cpu"
    assert done.elapsed_ms >= 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.TransformLattice(
            pb.TransformLatticeRequest(id=lattice.id, flip=pb.FlipOp(axis=0), if_version=1),
            metadata=auth,
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED
    undone = await stub.TransformLattice(
        pb.TransformLatticeRequest(id=lattice.id, rotate=done.inverse.rotate, if_version=2),
        metadata=auth,
    )
    assert undone.lattice.checksum == lattice.checksum

    path = await stub.FindPath(
        pb.FindPathRequest(
            id=lattice.id,
            start=[0, 0],
            end=[2, 2],
            algorithm=pb.FindPathRequest.DIJKSTRA,
            cost=pb.FindPathRequest.FIELD,
        ),
        metadata=auth,
    )
    assert (path.hops, path.cost) == (4, 2 + 3 + 6 + 9)
    assert list(path.vertices) == [0, 1, 2, 5, 8]
    assert path.algorithm == pb.FindPathRequest.DIJKSTRA
    assert path.field_checksum_before == path.field_checksum_after == lattice.checksum
    auto = await stub.FindPath(
        pb.FindPathRequest(id=lattice.id, start=[0, 0], end=[2, 2]), metadata=auth
    )
    assert auto.algorithm == pb.FindPathRequest.BFS
    assert auto.hops == 4

    analysis = await stub.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice.id), metadata=auth)
    assert (analysis.vertex_count, analysis.edge_count, analysis.blocked_count) == (9, 12, 0)
    assert (analysis.diameter, analysis.diameter_exact, analysis.is_connected) == (4, True, True)
    assert analysis.memory_bytes == 36


async def test_unknown_enum_values_are_invalid(
    stub: pb_grpc.LatticeServiceAsyncStub, auth: Metadata
) -> None:
    lattice = await small_lattice(stub, auth)
    for request, field in (
        (pb.FindPathRequest(id=lattice.id, start=[0, 0], end=[1, 1], algorithm=99), "algorithm"),
        (pb.FindPathRequest(id=lattice.id, start=[0, 0], end=[1, 1], cost=7), "cost"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FindPath(request, metadata=auth)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == [field]


async def test_the_callers_deadline_reaches_the_compute_backend(
    stub: pb_grpc.LatticeServiceAsyncStub, compute: InlineCompute, auth: Metadata
) -> None:
    lattice = await small_lattice(stub, auth)
    compute.deadlines.clear()
    await stub.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice.id), metadata=auth, timeout=5)
    await stub.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice.id), metadata=auth)
    with_timeout, without = compute.deadlines
    assert with_timeout is not None
    assert 0 < with_timeout < 5.1  # grpc-timeout travels rounded up
    # No caller deadline: the service's own cap (30 s in these tests) still bounds the work.
    assert without is not None
    assert 5.1 < without <= 30


async def test_compute_failures_map_to_their_codes(
    stub: pb_grpc.LatticeServiceAsyncStub, compute: InlineCompute, auth: Metadata
) -> None:
    lattice = await small_lattice(stub, auth)
    cases = [
        (
            ResourceExhausted("compute queue is full", retry_after_s=1),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        (Unavailable("a worker died"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("too slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (RuntimeError("a bug"), grpc.StatusCode.INTERNAL),
    ]
    for failure, code in cases:
        compute.failure = failure
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice.id), metadata=auth)
        assert caught.value.code() == code


async def test_field_rpcs_check_ids_and_tenants(
    stub: pb_grpc.LatticeServiceAsyncStub, tokens: Tokens, auth: Metadata
) -> None:
    lattice = await small_lattice(stub, auth)
    other = tokens.metadata(OTHER_TENANT)
    for metadata, lattice_id, code in (
        (auth, "x", grpc.StatusCode.INVALID_ARGUMENT),
        (other, lattice.id, grpc.StatusCode.NOT_FOUND),
    ):
        calls = (
            stub.GetField(pb.GetFieldRequest(id=lattice_id), metadata=metadata),
            stub.TransformLattice(
                pb.TransformLatticeRequest(id=lattice_id, flip=pb.FlipOp(axis=0)),
                metadata=metadata,
            ),
            stub.FindPath(
                pb.FindPathRequest(id=lattice_id, start=[0, 0], end=[1, 1]), metadata=metadata
            ),
            stub.AnalyzeLattice(pb.AnalyzeLatticeRequest(id=lattice_id), metadata=metadata),
        )
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == code


async def test_a_server_without_compute_serves_metadata_only(
    store: FakeStore, tokens: Tokens, auth: Metadata
) -> None:
    config = ServiceConfig(
        service_name="lattice",
        grpc_port=0,
        metrics_port=0,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        redis_url="redis://127.0.0.1:1/0",
    )
    running = await start_server(config, Catalog(store), tokens.verifier())
    await running.set_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.LatticeServiceStub(channel)
            listed = await stub.ListLattices(pb.ListLatticesRequest(), metadata=auth)
            assert list(listed.lattices) == []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateLattice(
                    pb.CreateLatticeRequest(
                        name="a", dimensions=1, size=2, constant=pb.ConstantFill()
                    ),
                    metadata=auth,
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)
