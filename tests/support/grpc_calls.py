"""Reading what a gRPC call answered, and the configuration of servers tested on their own."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.common.config import ServiceConfig


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields an INVALID_ARGUMENT names in its BadRequest details, in order."""
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without rich status details"
    fields: list[str] = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


def isolated_config(service_name: str) -> ServiceConfig:
    """A server on a free port whose database and Redis (port 1) are never reached: the
    servicer tests hand it fakes."""
    return ServiceConfig(
        service_name=service_name,
        grpc_port=0,
        metrics_port=0,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        redis_url="redis://127.0.0.1:1/0",
    )
