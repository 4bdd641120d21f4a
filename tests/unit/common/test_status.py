"""The one error table and the rich status it produces, without a server."""

from __future__ import annotations

import contextvars

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.common import errors
from services.common.context import Principal, current_principal, set_principal
from services.common.status import status_code_for, to_rpc_status


class PlanLimitExceeded(errors.ResourceExhausted):
    """A service-specific error inherits its parent's code."""


def _proto(status: grpc.Status) -> status_pb2.Status:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


def test_subclasses_inherit_their_parents_code() -> None:
    assert status_code_for(PlanLimitExceeded("too many")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code_for(errors.DomainError("unclassified")) == grpc.StatusCode.UNKNOWN


def test_invalid_argument_carries_every_violation() -> None:
    err = errors.InvalidArgument("size", "must be positive", more=[("name", "too long")])
    status = to_rpc_status(err)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == err.message
    bad_request = error_details_pb2.BadRequest()
    assert _proto(status).details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("size", "must be positive"),
        ("name", "too long"),
    ]


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    status = to_rpc_status(errors.ResourceExhausted("slow down", retry_after_s=0.2))
    assert dict(status.trailing_metadata)["retry-after"] == "1"
    without = to_rpc_status(errors.ResourceExhausted("quota"))
    assert "retry-after" not in dict(without.trailing_metadata)
    assert not _proto(without).details


def test_unavailable_with_a_retry_hint_sends_retry_after_and_retry_info() -> None:
    status = to_rpc_status(errors.Unavailable("database down", retry_after_s=1.0))
    assert status.code == grpc.StatusCode.UNAVAILABLE
    assert dict(status.trailing_metadata)["retry-after"] == "1"
    assert "retry-after" not in dict(to_rpc_status(errors.Unavailable("down")).trailing_metadata)


def test_current_principal_requires_authentication() -> None:
    def inside() -> Principal:
        set_principal(Principal("u1", "t1", "owner", "jwt"))
        return current_principal()

    assert contextvars.copy_context().run(inside).tenant_id == "t1"
    with pytest.raises(errors.Unauthenticated):
        current_principal()
