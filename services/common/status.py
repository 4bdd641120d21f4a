"""The one table mapping domain errors to gRPC status codes, and rich google.rpc.Status building."""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors

STATUS_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    # A bare DomainError was never classified; UNKNOWN makes that visible instead of guessing.
    errors.DomainError: grpc.StatusCode.UNKNOWN,
}

RETRY_AFTER_KEY = "retry-after"


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def status_code_for(err: errors.DomainError) -> grpc.StatusCode:
    """The code for `err`, found through its class hierarchy so service subclasses inherit it."""
    for cls in type(err).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def to_rpc_status(err: errors.DomainError) -> grpc.Status:
    """A grpc.Status carrying a google.rpc.Status with the details clients need to react."""
    code = status_code_for(err)
    details: list[any_pb2.Any] = []
    extra_metadata: list[tuple[str, str | bytes]] = []
    if isinstance(err, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=name, description=text)
                for name, text in err.violations
            ]
        )
        details.append(_pack(bad_request))
    retry_after_s = (
        err.retry_after_s
        if isinstance(err, errors.ResourceExhausted | errors.Unavailable)
        else None
    )
    if retry_after_s is not None:
        delay = max(retry_after_s, 0.0)
        retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration())
        retry.retry_delay.FromNanoseconds(round(delay * 1e9))
        details.append(_pack(retry))
        # Whole seconds, rounded up, as HTTP's Retry-After wants; Envoy hands it to REST clients.
        extra_metadata.append((RETRY_AFTER_KEY, str(max(1, math.ceil(delay)))))
    proto = status_pb2.Status(code=_code_number(code), message=err.message, details=details)
    base = rpc_status.to_status(proto)
    return _Status(
        code=base.code,
        details=base.details,
        trailing_metadata=(*base.trailing_metadata, *extra_metadata),
    )


def _code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


def _pack(message: error_details_pb2.BadRequest | error_details_pb2.RetryInfo) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
