"""Outbound gRPC channels to other services, forwarding the caller's request id and credentials."""

from __future__ import annotations

from typing import Any

import grpc

from services.common import context as rpc_context
from services.common.interceptors.request_context import REQUEST_ID_KEY

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """Options matching what our servers accept (see server._server_options)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Pings keep idle connections through NATs and notice dead peers within ~40 s.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def insecure_channel(
    addr: str, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> grpc.aio.Channel:
    """A plaintext channel to `addr` ("host:port"); inside the cluster, TLS is the mesh's job."""
    return grpc.aio.insecure_channel(addr, options=channel_options(max_message_bytes))


def outgoing_metadata(
    *extra: tuple[str, str], forward_authorization: bool = True
) -> tuple[tuple[str, str], ...]:
    """Metadata for a call made while serving an RPC: its request id and, by default, its
    caller's authorization, so the next service logs the same id and checks the same caller."""
    metadata: list[tuple[str, str]] = []
    request_id = rpc_context.request_id.get()
    if request_id is not None:
        metadata.append((REQUEST_ID_KEY, request_id))
    authorization = rpc_context.authorization.get()
    if forward_authorization and authorization is not None:
        metadata.append(("authorization", authorization))
    metadata.extend(extra)
    return tuple(metadata)
