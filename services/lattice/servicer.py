"""LatticeService gRPC servicer: proto in, domain call, proto out."""

from __future__ import annotations

import grpc
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common.context import current_principal
from services.common.errors import Unimplemented
from services.common.timestamps import to_timestamp
from services.lattice.catalog import Catalog, LatticeRecord
from services.lattice.fields import ConstantFill, Fill, RandomFill, ValuesFill

Context = grpc.aio.ServicerContext[object, object]
NOT_YET = "not available in this release"


def lattice_message(record: LatticeRecord) -> pb.Lattice:
    return pb.Lattice(
        id=record.id,
        name=record.name,
        dimensions=record.dimensions,
        size=record.size,
        vertex_count=record.vertex_count,
        edge_count=record.edge_count,
        version=record.version,
        checksum=record.checksum,
        created_at=to_timestamp(record.created_at),
        updated_at=to_timestamp(record.updated_at),
    )


def requested_fill(request: pb.CreateLatticeRequest) -> Fill | None:
    """The oneof `fill` as a domain value; None when the caller set none."""
    kind = request.WhichOneof("fill")
    if kind == "constant":
        return ConstantFill(value=request.constant.value)
    if kind == "values":
        return ValuesFill(data=request.values)
    if kind == "random":
        r = request.random
        return RandomFill(seed=r.seed, low=r.low, high=r.high, blocked_fraction=r.blocked_fraction)
    return None


class LatticeServicer(pb_grpc.LatticeServiceServicer):
    """Thin adapter over the Catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def CreateLattice(self, request: pb.CreateLatticeRequest, context: Context) -> pb.Lattice:
        record = await self._catalog.create(
            current_principal(),
            name=request.name,
            dimensions=request.dimensions,
            size=request.size,
            fill=requested_fill(request),
        )
        return lattice_message(record)

    async def GetLattice(self, request: pb.GetLatticeRequest, context: Context) -> pb.Lattice:
        return lattice_message(await self._catalog.get(current_principal(), request.id))

    async def ListLattices(
        self, request: pb.ListLatticesRequest, context: Context
    ) -> pb.ListLatticesResponse:
        page = await self._catalog.list_page(
            current_principal(), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListLatticesResponse(
            lattices=[lattice_message(record) for record in page.lattices],
            next_page_token=page.next_page_token,
        )

    async def DeleteLattice(
        self, request: pb.DeleteLatticeRequest, context: Context
    ) -> pb.DeleteLatticeResponse:
        await self._catalog.delete(current_principal(), request.id)
        return pb.DeleteLatticeResponse()

    async def GetField(self, request: pb.GetFieldRequest, context: Context) -> pb.GetFieldResponse:
        raise Unimplemented(f"GetField is {NOT_YET}")

    async def TransformLattice(
        self, request: pb.TransformLatticeRequest, context: Context
    ) -> pb.TransformLatticeResponse:
        raise Unimplemented(f"TransformLattice is {NOT_YET}")

    async def FindPath(self, request: pb.FindPathRequest, context: Context) -> pb.FindPathResponse:
        raise Unimplemented(f"FindPath is {NOT_YET}")

    async def AnalyzeLattice(
        self, request: pb.AnalyzeLatticeRequest, context: Context
    ) -> pb.AnalyzeLatticeResponse:
        raise Unimplemented(f"AnalyzeLattice is {NOT_YET}")
