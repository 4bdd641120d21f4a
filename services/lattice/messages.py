"""Conversions between the lattice protos and the domain's plain values."""

from __future__ import annotations

from catalytic.lattice.v1 import lattice_service_pb2 as pb

from services.common.errors import InvalidArgument
from services.common.timestamps import to_timestamp
from services.lattice.engine.analysis import Analysis
from services.lattice.engine.fills import ConstantFill, Fill, RandomFill, ValuesFill
from services.lattice.engine.paths import Algorithm, Cost
from services.lattice.engine.transforms import (
    Denormalize,
    Flip,
    Normalize,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
)
from services.lattice.operations import FoundPath
from services.lattice.records import LatticeRecord

_ALGORITHMS = {
    pb.FindPathRequest.ALGORITHM_UNSPECIFIED: Algorithm.AUTO,
    pb.FindPathRequest.AUTO: Algorithm.AUTO,
    pb.FindPathRequest.BFS: Algorithm.BFS,
    pb.FindPathRequest.DIJKSTRA: Algorithm.DIJKSTRA,
    pb.FindPathRequest.ASTAR: Algorithm.ASTAR,
    pb.FindPathRequest.CATALYTIC: Algorithm.CATALYTIC,
}
_ALGORITHM_NUMBERS = {
    algorithm: number
    for number, algorithm in _ALGORITHMS.items()
    if number != pb.FindPathRequest.ALGORITHM_UNSPECIFIED
}
_COSTS = {
    pb.FindPathRequest.COST_UNSPECIFIED: Cost.UNIT,
    pb.FindPathRequest.UNIT: Cost.UNIT,
    pb.FindPathRequest.FIELD: Cost.FIELD,
}


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
    """The oneof `fill` as the engine's fill; None when the caller set none."""
    kind = request.WhichOneof("fill")
    if kind == "constant":
        return ConstantFill(value=request.constant.value)
    if kind == "values":
        return ValuesFill(data=request.values)
    if kind == "random":
        r = request.random
        return RandomFill(seed=r.seed, low=r.low, high=r.high, blocked_fraction=r.blocked_fraction)
    return None


def requested_op(request: pb.TransformLatticeRequest) -> TransformOp | None:
    """The oneof `op` as the engine's op; None when the caller set none."""
    kind = request.WhichOneof("op")
    if kind == "xor":
        return Xor(key=request.xor.key)
    if kind == "rotate":
        r = request.rotate
        return Rotate(axis_a=r.axis_a, axis_b=r.axis_b, quarter_turns=r.quarter_turns)
    if kind == "flip":
        return Flip(axis=request.flip.axis)
    if kind == "scale":
        return Scale(factor=request.scale.factor)
    if kind == "offset":
        return Offset(value=request.offset.value)
    if kind == "normalize":
        return Normalize()
    if kind == "denormalize":
        return Denormalize(mean=request.denormalize.mean, std=request.denormalize.std)
    return None


def transform_op_message(op: TransformOp) -> pb.TransformOp:
    match op:
        case Xor(key=key):
            return pb.TransformOp(xor=pb.XorOp(key=key))
        case Rotate(axis_a=a, axis_b=b, quarter_turns=turns):
            return pb.TransformOp(rotate=pb.RotateOp(axis_a=a, axis_b=b, quarter_turns=turns))
        case Flip(axis=axis):
            return pb.TransformOp(flip=pb.FlipOp(axis=axis))
        case Scale(factor=factor):
            return pb.TransformOp(scale=pb.ScaleOp(factor=factor))
        case Offset(value=value):
            return pb.TransformOp(offset=pb.OffsetOp(value=value))
        case Normalize():
            return pb.TransformOp(normalize=pb.NormalizeOp())
        case Denormalize(mean=mean, std=std):
            return pb.TransformOp(denormalize=pb.DenormalizeOp(mean=mean, std=std))


def path_algorithm(number: int) -> Algorithm:
    """The enum value as the engine's Algorithm (unset: AUTO); InvalidArgument(algorithm)."""
    try:
        return _ALGORITHMS[number]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(
            "algorithm", f"unknown value {number}; use AUTO, BFS, DIJKSTRA, ASTAR or CATALYTIC"
        ) from None


def path_cost(number: int) -> Cost:
    """The enum value as the engine's Cost (unset: UNIT); InvalidArgument(cost)."""
    try:
        return _COSTS[number]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument("cost", f"unknown value {number}; use UNIT or FIELD") from None


def path_message(found: FoundPath) -> pb.FindPathResponse:
    result = found.result
    return pb.FindPathResponse(
        vertices=result.vertices.tolist(),
        hops=result.hops,
        cost=result.cost,
        algorithm=_ALGORITHM_NUMBERS[result.algorithm],
        device=found.device,
        elapsed_ms=found.elapsed_ms,
        field_checksum_before=result.checksum_before,
        field_checksum_after=result.checksum_after,
        extra_bytes=result.extra_bytes,
    )


def analysis_message(analysis: Analysis) -> pb.AnalyzeLatticeResponse:
    return pb.AnalyzeLatticeResponse(
        vertex_count=analysis.vertex_count,
        edge_count=analysis.edge_count,
        blocked_count=analysis.blocked_count,
        component_count=analysis.component_count,
        is_connected=analysis.is_connected,
        diameter=analysis.diameter,
        diameter_exact=analysis.diameter_exact,
        average_degree=analysis.average_degree,
        density=analysis.density,
        memory_bytes=analysis.memory_bytes,
        adjacency_list_bytes=analysis.adjacency_list_bytes,
    )
