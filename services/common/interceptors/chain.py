"""Several RpcInterceptors run as one gRPC interceptor, each method's handler wrapped once.

grpc.aio calls every interceptor's intercept_service() on every RPC, and a wrapping
interceptor builds a new handler each time. With six interceptors that is six coroutines and
six handler objects per call before the handler runs, a large share of a light RPC's cost.
The chain does the same work once: it looks the handler up on the first call of a method,
wraps it in all the `around()` hooks (outermost first, nested exactly like `async with a, b`),
and reuses the wrapped handler for every later call of that method.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import grpc

from services.common.interceptors.base import (
    Context,
    Handler,
    RequestCheck,
    RpcInterceptor,
    wrap_handler,
)


class InterceptorChain(grpc.aio.ServerInterceptor):
    """Runs `interceptors`' around() hooks, the first outermost, as one interceptor.

    `check_request` sees each request message inside the innermost hook, just before the
    handler: the hooks see only the method and the context, never the message.
    """

    def __init__(
        self, interceptors: Sequence[RpcInterceptor], check_request: RequestCheck | None = None
    ) -> None:
        self._arounds = tuple(interceptor.around for interceptor in interceptors)
        self._check_request = check_request
        # Only methods the server has a handler for: bounded by the services it registers.
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                # Unknown method: gRPC answers UNIMPLEMENTED itself, and nothing is cached.
                return None
            wrapped = wrap_handler(handler, method, self._around, self._check_request)
            self._wrapped[method] = wrapped
        return wrapped

    @asynccontextmanager
    async def _around(self, method: str, context: Context) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for around in self._arounds:
                await stack.enter_async_context(around(method, context))
            yield
