"""LatticeService gRPC servicer: proto in, domain call, proto out."""

from __future__ import annotations

import grpc
from catalytic.lattice.v1 import lattice_service_pb2 as pb
from catalytic.lattice.v1 import lattice_service_pb2_grpc as pb_grpc

from services.common.context import current_principal
from services.lattice.catalog import Catalog
from services.lattice.messages import (
    analysis_message,
    lattice_message,
    path_algorithm,
    path_cost,
    path_message,
    requested_fill,
    requested_op,
    transform_op_message,
)
from services.lattice.operations import LatticeOperations

Context = grpc.aio.ServicerContext[object, object]


class LatticeServicer(pb_grpc.LatticeServiceServicer):
    """Thin adapter over the Catalog (life cycle) and LatticeOperations (the field's uses).

    Every computing RPC hands the domain `context.time_remaining()`, so the caller's gRPC
    deadline bounds the work it starts.
    """

    def __init__(self, catalog: Catalog, operations: LatticeOperations) -> None:
        self._catalog = catalog
        self._operations = operations

    async def CreateLattice(self, request: pb.CreateLatticeRequest, context: Context) -> pb.Lattice:
        record = await self._catalog.create(
            current_principal(),
            name=request.name,
            dimensions=request.dimensions,
            size=request.size,
            fill=requested_fill(request),
            deadline_s=context.time_remaining(),
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
        part = await self._operations.read_field(
            current_principal(), request.id, offset=request.offset, limit=request.limit
        )
        return pb.GetFieldResponse(
            values=part.values, offset=part.offset, count=part.count, version=part.version
        )

    async def TransformLattice(
        self, request: pb.TransformLatticeRequest, context: Context
    ) -> pb.TransformLatticeResponse:
        done = await self._operations.transform(
            current_principal(),
            request.id,
            requested_op(request),
            if_version=request.if_version if request.HasField("if_version") else None,
            deadline_s=context.time_remaining(),
        )
        return pb.TransformLatticeResponse(
            lattice=lattice_message(done.lattice),
            inverse=transform_op_message(done.inverse),
            device=done.device,
            elapsed_ms=done.elapsed_ms,
        )

    async def FindPath(self, request: pb.FindPathRequest, context: Context) -> pb.FindPathResponse:
        found = await self._operations.find_path(
            current_principal(),
            request.id,
            start=list(request.start),
            end=list(request.end),
            algorithm=path_algorithm(request.algorithm),
            cost=path_cost(request.cost),
            deadline_s=context.time_remaining(),
        )
        return path_message(found)

    async def AnalyzeLattice(
        self, request: pb.AnalyzeLatticeRequest, context: Context
    ) -> pb.AnalyzeLatticeResponse:
        analysed = await self._operations.analyze(
            current_principal(), request.id, deadline_s=context.time_remaining()
        )
        return analysis_message(analysed.analysis)
