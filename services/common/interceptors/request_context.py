"""Gives every RPC a request id (the caller's x-request-id or a new one) and echoes it back.

The id goes back in the trailing metadata, which gRPC sends with the status of every call,
successful or not, at no extra cost. (Sending it as initial metadata would need a separate
send before the handler runs: a measurable share of a light RPC.) Through the gateway, Envoy
puts the same id in the `x-request-id` response header itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from services.common import context as rpc_context
from services.common.interceptors.base import Context, RpcInterceptor

REQUEST_ID_KEY = "x-request-id"
# Caller-supplied ids end up in log lines, so only short, plain tokens are trusted.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def incoming_request_id(metadata: grpc.aio.Metadata | None) -> str | None:
    """The caller's x-request-id when present and well-formed."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _VALID_REQUEST_ID.fullmatch(value):
            return value
    return None


class RequestContextInterceptor(RpcInterceptor):
    """Sets the request id and method contextvars, and returns x-request-id in the trailers.

    Handlers behind it that set trailing metadata must add to context.trailing_metadata(),
    not replace it (the error interceptor does so when it aborts).
    """

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        request_id = incoming_request_id(context.invocation_metadata()) or uuid.uuid4().hex
        # No reset afterwards: each RPC runs in its own task, whose context dies with it.
        rpc_context.request_id.set(request_id)
        rpc_context.rpc_method.set(method)
        rpc_context.call.set(context)
        # Set before the handler runs so that failed RPCs carry the id as well.
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        yield
