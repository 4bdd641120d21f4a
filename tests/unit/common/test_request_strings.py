"""NUL characters in request strings: found in every kind of field, refused naming each one."""

from __future__ import annotations

import grpc
import pytest
from catalytic.auth.v1 import auth_service_pb2 as auth_pb
from catalytic.lattice.v1 import lattice_service_pb2 as lattice_pb
from catalytic.webhook.v1 import webhook_service_pb2 as webhook_pb
from google.protobuf import struct_pb2

from services.common import errors
from services.common.request_strings import nul_fields, refuse_nul_characters
from services.common.status import to_rpc_status


def test_clean_requests_pass() -> None:
    refuse_nul_characters(auth_pb.RegisterRequest(email="a@b.c", password="p", tenant_name="t"))
    refuse_nul_characters(lattice_pb.CreateLatticeRequest(name="a", values=b"\x00\x00\x80\x3f"))
    refuse_nul_characters(object())  # not a message: nothing to check


def test_top_level_and_repeated_strings_are_named() -> None:
    request = webhook_pb.CreateWebhookRequest(
        url="https://example.com/hook",
        event_types=["lattice.created", "path\x00.computed"],
        description="a\x00b",
    )
    assert nul_fields(request) == ["description", "event_types[1]"]


def test_bytes_fields_may_hold_zero_bytes() -> None:
    assert nul_fields(lattice_pb.CreateLatticeRequest(name="ok", values=b"\x00" * 8)) == []


def test_nested_struct_values_and_keys_are_found() -> None:
    data = struct_pb2.Struct()
    data.update({"ok": "fine", "inner": {"deep": ["x", "y\x00"]}, "k\x00": 1})
    request = webhook_pb.PublishEventRequest(event_id="e", tenant_id="t", data=data)
    found = nul_fields(request)
    assert "data.fields" in found  # the key
    assert "data.fields[inner].struct_value.fields[deep].list_value.values[1].string_value" in (
        found
    )
    assert len(found) == 2


def test_the_refusal_is_invalid_argument_with_a_violation_per_field() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        refuse_nul_characters(auth_pb.RegisterRequest(email="a\x00@b.c", tenant_name="\x00"))
    assert [field for field, _ in caught.value.violations] == ["email", "tenant_name"]
    assert to_rpc_status(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
