"""Turns exceptions into gRPC statuses: domain errors by the one table, anything else INTERNAL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from services.common import context as rpc_context
from services.common.errors import DomainError
from services.common.interceptors.base import Context, RpcInterceptor
from services.common.status import to_rpc_status

logger = logging.getLogger("catalytic.rpc.errors")


class ErrorInterceptor(RpcInterceptor):
    """Aborts with the mapped status for DomainError; hides every other exception's text."""

    @asynccontextmanager
    async def around(self, method: str, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except DomainError as err:
            status = to_rpc_status(err)
            # abort() replaces the trailing metadata: keep what is already there (x-request-id).
            trailing = (*(context.trailing_metadata() or ()), *status.trailing_metadata)
            await context.abort(status.code, status.details, trailing)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            # Already a status (the handler called abort) or the client went away.
            raise
        except Exception:
            request_id = rpc_context.request_id.get() or "unknown"
            logger.exception("unhandled exception in %s", method)
            # The exception text may hold secrets or internals: it stays in the log, and the
            # request id lets an operator find it there.
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
            )
